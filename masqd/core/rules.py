"""Rendering: (config, family, flags) to the rules and the iptables-restore input. Pure.

Rules are rendered in the canonical form `iptables-save` prints, so the live chain can be
compared with the desired one line by line, without parsing iptables' option syntax.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from masqd.core.cidrs import collapse
from masqd.core.entries import Entry, HostName, IPNetwork
from masqd.core.model import Family

if TYPE_CHECKING:  # workers import this module; they need no YAML parser
    from masqd.core.config import IPAddress, MasqConfig

DEFAULT_CHAIN = "IP-MASQ-AGENT"
DEFAULT_TABLE = "masqd"
LINK_LOCAL = {4: ipaddress.ip_network("169.254.0.0/16"), 6: ipaddress.ip_network("fe80::/10")}

COMMENT_NON_MASQ = "ip-masq-agent: local traffic is not subject to MASQUERADE"
COMMENT_MASQ_SPECIFIC = "ip-masq-agent: specific outbound traffic is subject to MASQUERADE"
COMMENT_MASQ_ALL = (
    "ip-masq-agent: outbound traffic is subject to MASQUERADE (must be last in chain)"
)
COMMENT_MARKED = "ip-masq-agent: connections kube-proxy marked for masquerade are left to it"
PORT_PROTOCOLS = ("tcp", "udp", "sctp")
APPEND, FIRST = "append", "first"
JUMP_POSITIONS = (APPEND, FIRST)
DEFAULT_MASQUERADE_BIT = 14
"""kube-proxy's --iptables-masquerade-bit: the mark (1 << 14 = 0x4000) on connections it wants
masqueraded (service traffic from outside the cluster, hairpin)."""

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
    jump_position: str = APPEND
    """append: our decision after the other owners' POSTROUTING rules, a RETURN leaving the
    connection to those after ours; first: before them, and final (--jump-position)."""
    nft_priority: int | None = None
    """Our base chain's priority relative to srcnat (--nft-priority); None: +10 with append,
    -10 with first."""
    masquerade_bit: int = DEFAULT_MASQUERADE_BIT
    """kube-proxy's masquerade mark bit, whose connections `first` leaves to it."""

    @property
    def first(self) -> bool:
        return self.jump_position == FIRST

    @property
    def priority_offset(self) -> int:
        """Our nftables base chain's priority, as srcnat + this."""
        if self.nft_priority is not None:
            return self.nft_priority
        return -10 if self.first else 10

    @property
    def masquerade_mark(self) -> int:
        return 1 << self.masquerade_bit


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


def jump_comment(chain: str) -> str:
    """The comment on our POSTROUTING jump: how masqd (and upstream) knows the jump is ours."""
    return (
        "ip-masq-agent: ensure nat POSTROUTING directs all non-LOCAL destination traffic "
        f"to our custom {chain} chain"
    )


def jump_rule(chain: str) -> str:
    """The POSTROUTING rule that sends non-local traffic through our chain."""
    return (
        f'-A POSTROUTING -m comment --comment "{jump_comment(chain)}" '
        f"-m addrtype ! --dst-type LOCAL -j {chain}"
    )


def desired_rules(config: MasqConfig, family: Family, opts: RenderOptions) -> list[str]:
    """Our chain's rules for one family, in order, as `iptables-save` prints them.

    With sourceCIDRs, every rule matches on each of the family's sources in turn (collapsed,
    so no two overlap and a connection meets each decision once): a connection from any other
    source matches nothing and leaves the chain untouched. With --jump-position first, a
    connection kube-proxy marked for masquerade is left to it, and a kept source address is
    final (ACCEPT ends POSTROUTING's walk, so no rule after our jump masquerades it).

    A DNS name still in the config renders nothing: expand it first (core/names.py).
    """
    chain = opts.chain
    masquerade = _masquerade_target(config.snat_to(family), opts)
    rules = [
        rule
        for cidr in _of_family(config.masquerade_cidrs, family)
        for rule in masquerade_rules(cidr, config, family, opts)
    ]
    masq_link_local = config.masq_link_local if family == 4 else config.masq_link_local_ipv6
    returns = [] if masq_link_local else [LINK_LOCAL[family]]
    returns += _of_family(config.non_masquerade_cidrs, family)
    rules += [rule for cidr in returns for rule in return_rules(cidr, config, family, opts)]
    out_bound = config.masq_out_bound if family == 4 else config.masq_out_bound_ipv6
    if out_bound:
        for source in _sources(config, family):
            rules += _port_spreading_rules(opts, source, config.snat_to(family))
            rules.append(
                f'-A {chain}{source} -m comment --comment "{COMMENT_MASQ_ALL}" -j {masquerade}'
            )
    if opts.first and rules:
        rules.insert(0, marked_rule(opts))
    return rules


def marked_rule(opts: RenderOptions) -> str:
    """--jump-position first: what kube-proxy marked for masquerade goes back to its rules."""
    mark = f"{opts.masquerade_mark:#x}"
    return (
        f'-A {opts.chain} -m mark --mark {mark}/{mark} -m comment --comment "{COMMENT_MARKED}"'
        " -j RETURN"
    )


def source_elements(config: MasqConfig, family: Family) -> tuple[IPNetwork, ...] | None:
    """The family's sourceCIDRs collapsed (no two overlap); None when every source counts."""
    if not config.source_cidrs:
        return None
    return collapse(_of_family(config.source_cidrs, family)).elements


def _sources(config: MasqConfig, family: Family) -> list[str]:
    """The -s match of each of the family's sources; [""] (no match) when every source counts."""
    elements = source_elements(config, family)
    if elements is None:
        return [""]
    return [f" -s {cidr}" if cidr.prefixlen else "" for cidr in elements]


def _masquerade_target(snat_to: IPAddress | None, opts: RenderOptions, ports: str = "") -> str:
    """MASQUERADE, or with snatToSource SNAT to that address; --to-ports and --random-fully
    apply to either."""
    if snat_to is None:
        target = "MASQUERADE" + (f" --to-ports {ports}" if ports else "")
    else:
        address = f"[{snat_to}]" if snat_to.version == 6 and ports else str(snat_to)
        target = f"SNAT --to-source {address}" + (f":{ports}" if ports else "")
    return target + _random_fully(opts)


def render_restore(
    rules: list[str],
    chain: str,
    *,
    with_jump: bool = True,
    first: bool = False,
    moved: int = 0,
    removals: list[str] | None = None,
) -> str:
    """The iptables-restore --noflush input that replaces our chain (and adds the jump).

    Declaring `:CHAIN - [0:0]` creates the chain or flushes it, so the chain is rewritten
    atomically and nothing else in the table is touched but the `removals` lines (what an
    earlier masqd left behind, core/leftovers.py), in the same transaction. The jump is
    appended, or with first inserted as POSTROUTING's first rule, after deleting the `moved`
    copies of it found elsewhere in POSTROUTING (all in the one transaction: no packet sees it
    missing).
    """
    lines = ["*nat", f":{chain} - [0:0]", *rules, *(removals or ())]
    if with_jump:
        jump = jump_rule(chain)
        lines += ["-D" + jump[2:]] * moved
        lines.append(f"-I POSTROUTING 1{jump[len('-A POSTROUTING') :]}" if first else jump)
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def render(config: MasqConfig, family: Family, opts: RenderOptions) -> str:
    """The exact iptables-restore input masqd applies to a node with none of our rules."""
    rules = desired_rules(config, family, opts)
    return render_restore(rules, opts.chain, first=opts.first)


def masquerade_rules(
    cidr: IPNetwork, config: MasqConfig, family: Family, opts: RenderOptions
) -> list[str]:
    """The rules a masqueradeCIDRs entry renders to (one per source of sourceCIDRs)."""
    target = _masquerade_target(config.snat_to(family), opts)
    return [
        f"-A {opts.chain}{source}{_destination(cidr)} -m comment --comment "
        f'"{COMMENT_MASQ_SPECIFIC}" -j {target}'
        for source in _sources(config, family)
    ]


def return_rules(
    cidr: IPNetwork, config: MasqConfig, family: Family, opts: RenderOptions
) -> list[str]:
    """The rules a nonMasqueradeCIDRs entry (or the link-local range) renders to: RETURN, or
    with --jump-position first a final ACCEPT."""
    keep = "ACCEPT" if opts.first else "RETURN"
    return [
        f'-A {opts.chain}{source}{_destination(cidr)} -m comment --comment "{COMMENT_NON_MASQ}"'
        f" -j {keep}"
        for source in _sources(config, family)
    ]


def _of_family(cidrs: tuple[Entry, ...], family: Family) -> list[IPNetwork]:
    return [c for c in cidrs if not isinstance(c, HostName) and c.version == family]


def _destination(cidr: IPNetwork) -> str:
    """The -d match; none for /0, which iptables-save omits (it matches every address)."""
    return f" -d {iptables_cidr(cidr)}/{cidr.prefixlen}" if cidr.prefixlen else ""


def iptables_cidr(cidr: IPNetwork) -> str:
    """The network address as iptables-save prints it back (without the prefix length).

    ip6tables prints addresses with glibc's inet_ntop, which differs from Python in one way:
    an address whose first 96 bits are zero, or 80 zero bits then ffff (IPv4-compatible and
    IPv4-mapped), ends in dotted IPv4 form (`::ffff:10.0.0.0`, where Python prints
    `::ffff:a00:0`). Both compress the first longest run of two or more zero groups, in lower
    case. A rule written in any other form reads back differently, so it would look changed
    at every check and be rewritten forever.
    """
    address = cidr.network_address
    if address.version == 4:
        return str(address)
    groups = [int.from_bytes(address.packed[i : i + 2], "big") for i in range(0, 16, 2)]
    run = _longest_zero_run(groups)
    if run is not None and run[0] == 0 and (run[1] == 6 or (run[1] == 5 and groups[5] == 0xFFFF)):
        prefix = "::ffff:" if run[1] == 5 else "::"
        return prefix + ".".join(str(b) for b in address.packed[12:])
    return address.compressed


def _longest_zero_run(groups: list[int]) -> tuple[int, int] | None:
    """(start, length) of the first longest run of zero groups, None if there is none."""
    best: tuple[int, int] | None = None
    start = None
    for i, g in enumerate([*groups, 1]):
        if g == 0 and start is None:
            start = i
        elif g != 0 and start is not None:
            if best is None or i - start > best[1]:
                best = (start, i - start)
            start = None
    return best


def _random_fully(opts: RenderOptions) -> str:
    return " --random-fully" if opts.random_fully else ""


def _port_spreading_rules(
    opts: RenderOptions, source: str = "", snat_to: IPAddress | None = None
) -> list[str]:
    """Per-protocol MASQUERADE (or SNAT) rules with ports, spreading connections over the
    --to-ports ranges.

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
                f'-A {opts.chain}{source} -p {proto} -m comment --comment "{COMMENT_MASQ_ALL}"'
                f"{statistic} -j {_masquerade_target(snat_to, opts, ports)}"
            )
    return rules


def _kernel_probability(p: float) -> str:
    """The probability as iptables-save prints it back: the kernel keeps it in 1/2^31 steps."""
    steps = round(p * 0x80000000)
    return f"{steps / 0x80000000:.11f}"
