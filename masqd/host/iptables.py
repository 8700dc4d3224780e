"""The one module that runs iptables: save, restore, and choosing the backend the node uses."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field

from masqd.core.errors import ApplyError, Kind
from masqd.core.model import Family
from masqd.host import subproc

MODES = ("legacy", "nft")
DEFAULT_TIMEOUT = 10.0
# What iptables prints when it gave up waiting for the xtables lock. The exit code alone (4)
# does not tell: iptables-nft-restore also exits 4 when the kernel refuses a rule.
_LOCK_MESSAGES = ("holding the xtables lock", "Can't lock")


@dataclass
class Backend:
    """The iptables binaries of one family in one mode (legacy or nft).

    A long-lived user (a worker) may start its next iptables-restore ahead of need with
    `prepare_restore`: the process waits on its stdin, so the write that uses it pays only for
    parsing and committing, not for exec, the dynamic loader and iptables' own start-up (what
    that saves: `python -m bench.restore_cost`).
    A waiting iptables-restore holds nothing: it takes the xtables lock (legacy) and reads the
    kernel only once it reads `*nat`, and it exits without touching anything when its stdin
    closes.
    """

    family: Family
    mode: str
    _ready: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def binary(self, action: str) -> str:
        """e.g. ip6tables-nft-restore for (IPv6, nft, "restore")."""
        base = "iptables" if self.family == Family.IPV4 else "ip6tables"
        return f"{base}-{self.mode}-{action}" if action else f"{base}-{self.mode}"

    def save_nat(self, *, counters: bool = False, timeout: float = DEFAULT_TIMEOUT) -> str:
        """The nat table as `iptables-save -t nat` prints it (with -c: rule counters)."""
        argv = [self.binary("save"), "-t", "nat"]
        if counters:
            argv.append("-c")
        return _run(argv, None, timeout).stdout

    def restore(self, text: str, *, wait: int = 5, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Apply text with `iptables-restore --noflush -w WAIT` in one atomic transaction."""
        argv = self._restore_argv(wait)
        ready, self._ready = self._ready, None
        _finish(subproc.ready_or_new(ready, argv), argv, text, timeout)

    def prepare_restore(self, wait: int = 5) -> None:
        """Start the next restore now, if none is waiting; it serves the next `restore`."""
        self._ready = subproc.kept_ready(self._ready, self._restore_argv(wait))

    def close(self) -> None:
        """End a waiting restore, if any (it exits on the closed stdin, having done nothing)."""
        ready, self._ready = self._ready, None
        if ready is not None:
            subproc.discard(ready)

    def _restore_argv(self, wait: int) -> list[str]:
        return [self.binary("restore"), "--noflush", "-w", str(wait)]

    def available(self) -> bool:
        return shutil.which(self.binary("restore")) is not None

    def has_nat_table(self) -> bool:
        """Whether this network namespace has a nat table of this backend, asking in a way
        that creates none: legacy reads /proc (iptables-legacy-save would instantiate the
        table, after which every iptables-nft-save on the node warns that legacy tables are
        present); nft reading creates nothing, so it is read."""
        return self.mode != "legacy" or legacy_table_loaded(self.family, "nat")


def detect_mode(timeout: float = 5.0) -> str:
    """The mode the node itself uses, by the kubernetes-sigs/iptables-wrappers heuristic.

    kubelet (>= 1.24: KUBE-IPTABLES-HINT, older: KUBE-KUBELET-CANARY) leaves marker chains in
    the mangle table of the mode it uses; failing that, the mode holding more rules wins; with
    no sign at all, nft (what current distributions default to).
    """
    dumps = {mode: _mangle_and_rules(mode, timeout) for mode in MODES}
    for marker in ("KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY"):
        for mode in ("nft", "legacy"):
            if f":{marker} " in dumps[mode][0]:
                return mode
    legacy_rules, nft_rules = dumps["legacy"][1], dumps["nft"][1]
    return "legacy" if legacy_rules > nft_rules else "nft"


def legacy_table_loaded(family: Family, table: str = "") -> bool:
    """Whether this network namespace has the legacy table (any, with ""), without creating it.

    Running iptables-legacy-save instantiates the tables it reads, which would leave a
    "legacy tables present" warning on a node that never used legacy; /proc tells for free.
    """
    names = "/proc/net/ip_tables_names" if family == Family.IPV4 else "/proc/net/ip6_tables_names"
    try:
        with open(names) as f:
            loaded = f.read().split()
    except OSError:
        return False
    return table in loaded if table else bool(loaded)


def _mangle_and_rules(mode: str, timeout: float) -> tuple[str, int]:
    mangle = ""
    rules = 0
    for family in Family:
        if mode == "legacy" and not legacy_table_loaded(family):
            continue
        backend = Backend(family, mode)
        if shutil.which(backend.binary("save")) is None:
            continue
        try:
            mangle += _run([backend.binary("save"), "-t", "mangle"], None, timeout).stdout
            every = _run([backend.binary("save")], None, timeout).stdout
        except ApplyError:
            continue
        rules += sum(1 for line in every.splitlines() if line.startswith("-"))
    return mangle, rules


def _run(argv: list[str], stdin: str | None, timeout: float) -> subprocess.CompletedProcess[str]:
    return _finish(subproc.start(argv), argv, stdin, timeout)


def _finish(
    proc: subprocess.Popen[bytes],
    argv: list[str],
    stdin: str | None,
    timeout: float,
) -> subprocess.CompletedProcess[str]:
    return subproc.finish(proc, argv, stdin, timeout, _refused)


def _refused(stderr: str) -> Kind:
    """LOCK when iptables gave up waiting for the xtables lock, else REJECTED."""
    return Kind.LOCK if any(m in stderr for m in _LOCK_MESSAGES) else Kind.REJECTED
