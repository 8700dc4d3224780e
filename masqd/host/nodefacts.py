"""What the node shows about the backend it wants (masqd.core.choice decides from it).

Everything here is read without loading a module, creating a table or exec-ing a tool that
might: kube-proxy's tables over netlink (an nftables dump creates nothing), the registered
xtables extensions from /proc, and the kernel's module lists from /lib/modules.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from masqd.core.choice import KUBE_PROXY_TABLE, Modules, NodeFacts, missing_modules
from masqd.core.model import Family
from masqd.host import nftables
from masqd.host.probe import nfttable

_REGISTERED = (
    "/proc/net/ip_tables_matches",
    "/proc/net/ip_tables_targets",
    "/proc/net/ip6_tables_matches",
    "/proc/net/ip6_tables_targets",
)
_MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")


def gather(needed: dict[str, str], modules_dir: str = "/lib/modules") -> NodeFacts:
    """The facts, for the iptables backend's `needed` modules (module -> extension)."""
    return NodeFacts(
        kube_proxy_tables=kube_proxy_tables(),
        missing=missing_modules(needed, modules(modules_dir)),
        nft_installed=nftables.installed(),
    )


def kube_proxy_tables() -> tuple[str, ...]:
    found = []
    for family in Family:
        try:
            if KUBE_PROXY_TABLE in nfttable.table_names(family):
                found.append(f"{'ip' if family == Family.IPV4 else 'ip6'} {KUBE_PROXY_TABLE}")
        except OSError:
            continue  # no nftables in this kernel: no kube-proxy in nftables mode either
    return tuple(found)


def modules(modules_dir: str = "/lib/modules") -> Modules:
    registered: set[str] = set()
    for path in _REGISTERED:
        try:
            registered.update(Path(path).read_text().split())
        except OSError:
            continue  # x_tables is not loaded (yet): nothing registered
    return Modules(
        registered=frozenset(registered),
        modular=os.path.exists("/proc/modules"),
        available=_available(Path(modules_dir) / platform.release()),
    )


def _available(release: Path) -> frozenset[str] | None:
    """The names of the modules built in or installed for the running kernel; None when the
    lists cannot be read."""
    names: set[str] = set()
    try:
        builtin = (release / "modules.builtin").read_text()
        dep = (release / "modules.dep").read_text()
    except OSError:
        return None
    for line in builtin.splitlines() + [d.partition(":")[0] for d in dep.splitlines()]:
        base = line.strip().rsplit("/", 1)[-1]
        for suffix in _MODULE_SUFFIXES:
            if base.endswith(suffix):
                # modules.dep spells xt_MASQUERADE as it is; '-' and '_' are one to modprobe.
                names.add(base[: -len(suffix)].replace("-", "_"))
                break
    return frozenset(names)
