"""Rendering: (config, family, flags) to the rules and the iptables-restore input. Pure.

Rules are rendered in the canonical form `iptables-save` prints, so the live chain can be
compared with the desired one line by line, without parsing iptables' option syntax.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from masqd.core.entries import Entry, HostName, IPNetwork
from masqd.core.model import Family

if TYPE_CHECKING:  # workers import this module; they need no YAML parser
    from masqd.core.config import MasqConfig

DEFAULT_CHAIN = "IP-MASQ-AGENT"
DEFAULT_TABLE = "masqd"
LINK_LOCAL = {4: ipaddress.ip_network("169.254.0.0/16"), 6: ipaddress.ip_network("fe80::/10")}

COMMENT_NON_MASQ = "ip-masq-agent: local traffic is not subject to MASQUERADE"
COMMENT_MASQ_SPECIFIC = "ip-masq-agent: specific outbound traffic is subject to MASQUERADE"
COMMENT_MASQ_ALL = (
    "ip-masq-agent: outbound traffic is subject to MASQUERADE (must be last in chain)"
)
PORT_PROTOCOLS = ("tcp", "udp", "sctp")

# iptables allows 28 characters; a leading '-' or a space would break the restore syntax.
_CHAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,27}")
_BUILTIN_CHAINS = {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"}
# iptables refuses a chain named like a standard target; one named MASQUERADE would turn our
# `-j MASQUERADE` rules into jumps to our own chain (a loop the kernel rejects).
_TARGET_NAMES = {"ACCEPT", "DROP", "QUEUE", "RETURN", "MASQUERADE"}
_PORT_RANGE = re.compile(r"([0-9]+)(?:-([0-9]+))?")


PortRange = tuple[int, int]


@dataclass(frozen=True)
class RenderOptions:
    """The process flags that shape the rules (upstream ip-masq-agent's flags)."""

    chain: str = DEFAULT_CHAIN
    """Name of our chain in the nat table (--masq-chain)."""
    random_fully: bool = False
    """Add --random-fully to MASQUERADE targets (--random-fully)."""
    to_ports: tuple[PortRange, ...] = ()
    """Source port ranges for masqueraded tcp/udp/sctp (--to-ports)."""
    table: str = DEFAULT_TABLE
    """Name of our nftables table, one per family (--nft-table; the nftables backend)."""


def validate_chain_name(name: str) -> str:
    """Return name if iptables accepts it as our chain's name, else raise ValueError."""
    if not _CHAIN_NAME.fullmatch(name) or name in _BUILTIN_CHAINS | _TARGET_NAMES:
        raise ValueError(
            f"invalid chain name {name!r}: up to 28 letters, digits, '_', '.', '-', "
            "not starting with '-', and not a built-in chain or target"
        )
    return name


def parse_to_ports(text: str) -> tuple[PortRange, ...]:
    """Parse --to-ports ("1024-29999,32768-65535" or "40000"); raise ValueError when invalid."""
    if not text.strip():
        return ()
    ranges = []
    for part in text.split(","):
        # ASCII digits only: int() would also take "+5", "1_024" and other scripts' digits.
        m = _PORT_RANGE.fullmatch(part.strip())
        if m is None:
            raise ValueError(f"invalid port range {part!r}: expected PORT or PORT-PORT")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if not 1 <= lo <= hi <= 65535:
            raise ValueError(f"invalid port range {part!r}: ports are 1-65535, low before high")
        ranges.append((lo, hi))
    return tuple(ranges)


def jump_rule(chain: str) -> str:
    """The POSTROUTING rule that sends non-local traffic through our chain."""
    comment = (
        "ip-masq-agent: ensure nat POSTROUTING directs all non-LOCAL destination traffic "
        f"to our custom {chain} chain"
    )
    return (
        f'-A POSTROUTING -m comment --comment "{comment}" -m addrtype ! --dst-type LOCAL -j {chain}'
    )


def desired_rules(config: MasqConfig, family: Family, opts: RenderOptions) -> list[str]:
    """Our chain's rules for one family, in order, as `iptables-save` prints them.

    A DNS name still in the config renders nothing: expand it first (core/names.py)."""
    chain = opts.chain
    rules = [masquerade_rule(cidr, opts) for cidr in _of_family(config.masquerade_cidrs, family)]
    masq_link_local = config.masq_link_local if family == 4 else config.masq_link_local_ipv6
    returns = [] if masq_link_local else [LINK_LOCAL[family]]
    returns += _of_family(config.non_masquerade_cidrs, family)
    rules += [return_rule(cidr, chain) for cidr in returns]
    out_bound = config.masq_out_bound if family == 4 else config.masq_out_bound_ipv6
    if out_bound:
        rules += _port_spreading_rules(opts)
        rules.append(
            f'-A {chain} -m comment --comment "{COMMENT_MASQ_ALL}" -j MASQUERADE'
            + _random_fully(opts)
        )
    return rules


def render_restore(
    rules: list[str], chain: str, *, with_jump: bool = True, removals: list[str] | None = None
) -> str:
    """The iptables-restore --noflush input that replaces our chain (and adds the jump).

    Declaring `:CHAIN - [0:0]` creates the chain or flushes it, so the chain is rewritten
    atomically and nothing else in the table is touched but the `removals` lines (what an
    earlier masqd left behind, core/leftovers.py), in the same transaction.
    """
    lines = ["*nat", f":{chain} - [0:0]", *rules, *(removals or ())]
    if with_jump:
        lines.append(jump_rule(chain))
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def render(config: MasqConfig, family: Family, opts: RenderOptions) -> str:
    """The exact iptables-restore input masqd applies to a node with none of our rules."""
    return render_restore(desired_rules(config, family, opts), opts.chain)


def masquerade_rule(cidr: IPNetwork, opts: RenderOptions) -> str:
    """The rule a masqueradeCIDRs entry renders to."""
    return (
        f'-A {opts.chain}{_destination(cidr)} -m comment --comment "{COMMENT_MASQ_SPECIFIC}" '
        "-j MASQUERADE" + _random_fully(opts)
    )


def return_rule(cidr: IPNetwork, chain: str) -> str:
    """The rule a nonMasqueradeCIDRs entry (or the link-local range) renders to."""
    return f'-A {chain}{_destination(cidr)} -m comment --comment "{COMMENT_NON_MASQ}" -j RETURN'


def _of_family(cidrs: tuple[Entry, ...], family: Family) -> list[IPNetwork]:
    return [c for c in cidrs if not isinstance(c, HostName) and c.version == family]


def _destination(cidr: IPNetwork) -> str:
    """The -d match; none for /0, which iptables-save omits (it matches every address)."""
    return f" -d {cidr}" if cidr.prefixlen else ""


def _random_fully(opts: RenderOptions) -> str:
    return " --random-fully" if opts.random_fully else ""


def _port_spreading_rules(opts: RenderOptions) -> list[str]:
    """Per-protocol MASQUERADE --to-ports rules, spreading connections over the ranges.

    Range i is taken with probability size_i / (size_i + ... + size_n) among those not yet
    taken, so source ports are used uniformly across all ranges; the last is unconditional.
    """
    ranges = opts.to_ports
    sizes = [hi - lo + 1 for lo, hi in ranges]
    rules = []
    for i, (lo, hi) in enumerate(ranges):
        ports = f"{lo}-{hi}" if hi != lo else str(lo)
        statistic = ""
        if i < len(ranges) - 1:
            probability = _kernel_probability(sizes[i] / sum(sizes[i:]))
            statistic = f" -m statistic --mode random --probability {probability}"
        for proto in PORT_PROTOCOLS:
            rules.append(
                f'-A {opts.chain} -p {proto} -m comment --comment "{COMMENT_MASQ_ALL}"'
                f"{statistic} -j MASQUERADE --to-ports {ports}{_random_fully(opts)}"
            )
    return rules


def _kernel_probability(p: float) -> str:
    """The probability as iptables-save prints it back: the kernel keeps it in 1/2^31 steps."""
    steps = round(p * 0x80000000)
    return f"{steps / 0x80000000:.11f}"


def render_cleanup(chain: str, jump_rules: list[str], chain_exists: bool) -> str | None:
    """The restore input that removes our jumps and our chain; None when nothing is there."""
    lines = ["-D" + rule[2:] for rule in jump_rules]
    if chain_exists:
        lines += [f"-F {chain}", f"-X {chain}"]
    if not lines:
        return None
    return "\n".join(["*nat", *lines, "COMMIT"]) + "\n"
