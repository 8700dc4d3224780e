"""Which data plane masqd writes: `--backend iptables|nftables|auto` against what the node
shows. Pure: the facts are gathered by `masqd.host.nodefacts`, without loading or creating
anything in the kernel.

`auto` picks nftables where the node itself has gone that way: kube-proxy runs in nftables
mode (its `kube-proxy` tables are there), or the kernel lacks the xtables extensions every rule
of the iptables backend goes through (`-m comment`, `-m addrtype`, `-j MASQUERADE` are xt
matches and targets even under iptables-nft; RHEL 10's kernels dropped some). Otherwise the
iptables backend, as before the nftables backend existed. The iptables backend asked for on a
node without those extensions is refused at start, plainly and once, instead of failing every
restore for ever.
"""

from __future__ import annotations

from dataclasses import dataclass

from masqd.core.model import NFTABLES

IPTABLES = "iptables"
BACKENDS = (IPTABLES, NFTABLES, "auto")
KUBE_PROXY_TABLE = "kube-proxy"

# The xtables extensions the iptables backend's rules use, by the module that provides each.
EXTENSIONS = {"xt_comment": "comment", "xt_addrtype": "addrtype", "xt_MASQUERADE": "MASQUERADE"}
PORT_EXTENSIONS = {"xt_statistic": "statistic"}
"""Only --to-ports uses `-m statistic`."""


@dataclass(frozen=True)
class Modules:
    """What the kernel says about its modules."""

    registered: frozenset[str] = frozenset()
    """xtables matches and targets registered now (/proc/net/ip{,6}_tables_{matches,targets})."""
    modular: bool = True
    """The kernel loads modules at all (/proc/modules exists); if not, all it has is built in,
    so whatever is not registered is not there."""
    available: frozenset[str] | None = None
    """Modules built in or installed (/lib/modules/RELEASE/modules.{builtin,dep}); None when
    those files cannot be read (a container without /lib/modules): then only what is
    registered is known, and nothing is taken as missing."""


@dataclass(frozen=True)
class NodeFacts:
    """What the node shows about the backend it wants."""

    kube_proxy_tables: tuple[str, ...] = ()
    """kube-proxy's nftables tables (`ip kube-proxy`, `ip6 kube-proxy`)."""
    missing: tuple[str, ...] = ()
    """Modules the iptables backend needs that this kernel cannot provide."""
    nft_installed: bool = True


@dataclass(frozen=True)
class Choice:
    backend: str
    """iptables or nftables."""
    why: str
    """In a few words, for the log and `masqctl status`."""
    refused: str = ""
    """Set when the iptables backend cannot work on this node: what is missing, and the
    backend that would work."""


def missing_modules(needed: dict[str, str], modules: Modules) -> tuple[str, ...]:
    """The modules of `needed` (module -> the extension it registers) the kernel lacks."""
    missing = []
    for module, extension in needed.items():
        if extension in modules.registered:
            continue
        if not modules.modular or (
            modules.available is not None and module not in modules.available
        ):
            missing.append(module)
    return tuple(missing)


def choose_backend(requested: str, facts: NodeFacts) -> Choice:
    """The backend masqd runs for `--backend requested` on a node with these facts."""
    if requested == NFTABLES:
        return Choice(NFTABLES, "--backend nftables")
    if requested == IPTABLES:
        if facts.missing:
            return Choice(IPTABLES, "--backend iptables", refused=refusal(facts.missing))
        return Choice(IPTABLES, "--backend iptables")
    if not facts.nft_installed:
        why = "auto: nft is not installed"
        refused = refusal(facts.missing) if facts.missing else ""
        return Choice(IPTABLES, why, refused)
    if facts.kube_proxy_tables:
        tables = ", ".join(f"table {t}" for t in facts.kube_proxy_tables)
        return Choice(NFTABLES, f"auto: kube-proxy runs in nftables mode ({tables})")
    if facts.missing:
        return Choice(NFTABLES, f"auto: the kernel lacks {', '.join(facts.missing)}")
    return Choice(IPTABLES, "auto: no kube-proxy nftables table, the xtables modules present")


def refusal(missing: tuple[str, ...]) -> str:
    return (
        f"the kernel lacks {', '.join(missing)}, which every rule of the iptables backend "
        "needs (iptables-nft too goes through them); run masqd with --backend nftables "
        "(--backend auto picks it on this node)"
    )
