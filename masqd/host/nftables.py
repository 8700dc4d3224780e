"""The one module that runs nft: list our table (or any other, and every table's chains, for
`masqctl explain`), apply a transaction, check one, delete ours.

It runs the `nft` command (`nft -f -`) rather than calling libnftables in the worker: the same
exec path as iptables (a deadline, a kill when it passes, stderr in the error), no C library
state inside a long-lived worker, and no dependency on Debian's python3-nftables, which only
Debian's own interpreter can import. What the exec costs, a worker pays ahead: it keeps its next
`nft -f -` started and waiting on its stdin (`prepare`), as it keeps its next iptables-restore.
A waiting nft has opened a netlink socket and reads all its input before it asks the kernel
anything, so it holds nothing, and it exits having done nothing when its stdin closes.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field

from masqd.core.errors import ApplyError, Kind
from masqd.core.model import Family
from masqd.host import subproc

NFT = "nft"
_UNSHARE = "unshare"
DEFAULT_TIMEOUT = 10.0
_PROTOCOL = {Family.IPV4: "ip", Family.IPV6: "ip6"}
# How nft says that the table it was asked to list or delete does not exist (ENOENT).
_NO_SUCH_TABLE = "No such file or directory"


@dataclass
class Nft:
    """nft for one family's table."""

    family: Family
    table: str
    _ready: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def spec(self) -> str:
        return f"{_PROTOCOL[self.family]} {self.table}"

    def list_table(self, *, timeout: float = DEFAULT_TIMEOUT) -> str:
        """`nft list table FAMILY NAME` (with counters); empty when there is no such table.

        Reading creates nothing, unlike iptables-legacy-save."""
        return list_table(self.spec, timeout=timeout)

    def apply(self, text: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Apply text with `nft -f -`: one transaction, all of it or none of it."""
        argv = _apply_argv()
        ready, self._ready = self._ready, None
        subproc.finish(subproc.ready_or_new(ready, argv), argv, text, timeout)

    def prepare(self) -> None:
        """Start the next `nft -f -` now, if none is waiting; it serves the next `apply`."""
        self._ready = subproc.kept_ready(self._ready, _apply_argv())

    def close(self) -> None:
        """End a waiting nft, if any (it exits on the closed stdin, having done nothing)."""
        ready, self._ready = self._ready, None
        if ready is not None:
            subproc.discard(ready)

    def delete_table(self, *, timeout: float = DEFAULT_TIMEOUT) -> bool:
        """Delete our table; False when there was none."""
        try:
            subproc.run([NFT, "delete", "table", *self.spec.split()], None, timeout)
        except ApplyError as e:
            if e.kind == Kind.REJECTED and _NO_SUCH_TABLE in e.stderr:
                return False
            raise
        return True


@dataclass(frozen=True)
class Checked:
    accepted: bool | None
    """True: the kernel accepts the transaction; False: it refuses it; None: not checked."""
    detail: str = ""
    """Why it was refused or not checked (nft's own words)."""


def check(text: str, *, timeout: float = DEFAULT_TIMEOUT) -> Checked:
    """`nft --check -f -` in a network namespace of its own (`unshare --net`): the kernel
    validates the transaction, commits none of it, and neither reads nor touches this
    namespace's ruleset, so the verdict depends on the text alone. Needs root."""
    if not installed():
        return Checked(None, "nft is not installed")
    try:
        subproc.run([_UNSHARE, "--net", NFT, "--check", "-f", "-"], text, timeout)
    except ApplyError as e:
        if e.kind == Kind.REJECTED and not e.stderr.startswith(_UNSHARE):
            return Checked(False, e.stderr)
        return Checked(None, e.stderr or str(e))
    return Checked(True)


def list_table(spec: str, *, timeout: float = DEFAULT_TIMEOUT) -> str:
    """`nft list table` of any table ("ip kube-proxy"); empty when there is no such table."""
    argv = [NFT, "list", "table", *spec.split()]
    try:
        return subproc.run(argv, None, timeout).stdout
    except ApplyError as e:
        if e.kind == Kind.REJECTED and _NO_SUCH_TABLE in e.stderr:
            return ""
        raise


def list_chains(*, timeout: float = DEFAULT_TIMEOUT) -> str:
    """`nft list chains`: every table's chains with their hooks and priorities, no rules."""
    return subproc.run([NFT, "list", "chains"], None, timeout).stdout


def installed() -> bool:
    return shutil.which(NFT) is not None


def _apply_argv() -> list[str]:
    return [NFT, "-f", "-"]
