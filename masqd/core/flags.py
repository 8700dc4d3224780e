"""Command-line flags shared by masqd and `masqctl config render|validate`, upstream-compatible.

Booleans take Go's forms: `--random-fully`, `--random-fully=false`.
"""

from __future__ import annotations

import argparse

from masqd.core.config import ParseOptions
from masqd.core.nftrules import validate_table_name
from masqd.core.rules import (
    APPEND,
    DEFAULT_CHAIN,
    DEFAULT_MASQUERADE_BIT,
    DEFAULT_TABLE,
    JUMP_POSITIONS,
    RenderOptions,
    parse_to_ports,
    validate_chain_name,
)

# nat base chains must run after conntrack (-200): srcnat (100) + offset > -200.
PRIORITY_OFFSETS = range(-299, 300)

_TRUE = {"1", "t", "true", "yes", "on"}
_FALSE = {"0", "f", "false", "no", "off"}


def go_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (true or false)")


def _chain(text: str) -> str:
    try:
        return validate_chain_name(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _table(text: str) -> str:
    try:
        return validate_table_name(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _ports(text: str) -> str:
    try:
        parse_to_ports(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _priority(text: str) -> int:
    """--nft-priority: an offset from srcnat, never 0 (the kernel leaves the order of two
    chains of equal priority undefined), within what a nat chain may have."""
    try:
        offset = int(text.strip().removeprefix("srcnat").replace(" ", "") or "0")
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an offset from srcnat such as -10 or 10"
        ) from None
    if offset == 0:
        raise argparse.ArgumentTypeError(
            "0 would put our chain at exactly srcnat, where its order against the other "
            "chains there is undefined; use -10 (before them) or 10 (after them)"
        )
    if offset not in PRIORITY_OFFSETS:
        raise argparse.ArgumentTypeError(
            f"{offset} is out of range: a nat chain runs after conntrack (srcnat - 299 at "
            "the earliest); use -299 to 299"
        )
    return offset


def _bit(text: str) -> int:
    try:
        bit = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a bit number (0-31)") from None
    if not 0 <= bit <= 31:
        raise argparse.ArgumentTypeError(f"{bit} is not a bit of a 32-bit mark (0-31)")
    return bit


def add_bool(parser: argparse.ArgumentParser, name: str, default: bool, help: str) -> None:
    parser.add_argument(
        name, nargs="?", const=True, default=default, type=go_bool, metavar="BOOL", help=help
    )


def add_render_flags(parser: argparse.ArgumentParser) -> None:
    """The flags that decide which rules a config renders to."""
    parser.add_argument(
        "--masq-chain",
        default=DEFAULT_CHAIN,
        type=_chain,
        help=f"name of our nat chain, iptables backend (default {DEFAULT_CHAIN})",
    )
    parser.add_argument(
        "--nft-table",
        default=DEFAULT_TABLE,
        type=_table,
        metavar="NAME",
        help=f"name of our table in each family, nftables backend (default {DEFAULT_TABLE})",
    )
    add_bool(
        parser,
        "--nomasq-all-reserved-ranges",
        False,
        "default nonMasqueradeCIDRs include every reserved IPv4 range, not only RFC 1918",
    )
    add_bool(parser, "--enable-ipv6", True, "manage the IPv6 chain too (default true)")
    add_bool(parser, "--random-fully", False, "add --random-fully to MASQUERADE (default false)")
    parser.add_argument(
        "--to-ports",
        default="",
        type=_ports,
        metavar="RANGES",
        help="source port ranges for masqueraded tcp/udp/sctp, e.g. 1024-29999,32768-65535",
    )
    parser.add_argument(
        "--jump-position",
        default=APPEND,
        choices=JUMP_POSITIONS,
        help="append (default): our decision comes after the other owners' POSTROUTING rules "
        "(nftables: priority srcnat + 10), and a connection we do not masquerade goes on to "
        "theirs; first: before them (jump inserted first; nftables: srcnat - 10), and final: "
        "what we keep unmasqueraded, no later rule masquerades (but what kube-proxy marked "
        "for masquerade, which is left to it)",
    )
    parser.add_argument(
        "--nft-priority",
        default=None,
        type=_priority,
        metavar="OFFSET",
        help="nftables backend: our base chain's priority as srcnat + OFFSET, not 0 (default "
        "10, or -10 with --jump-position first)",
    )
    parser.add_argument(
        "--kube-proxy-masquerade-bit",
        default=DEFAULT_MASQUERADE_BIT,
        type=_bit,
        metavar="BIT",
        help="with --jump-position first: kube-proxy's --iptables-masquerade-bit, whose "
        f"marked connections are left to kube-proxy (default {DEFAULT_MASQUERADE_BIT}: 0x4000)",
    )


def render_options(args: argparse.Namespace) -> RenderOptions:
    return RenderOptions(
        chain=args.masq_chain,
        random_fully=args.random_fully,
        to_ports=parse_to_ports(args.to_ports),
        table=args.nft_table,
        jump_position=args.jump_position,
        nft_priority=args.nft_priority,
        masquerade_bit=args.kube_proxy_masquerade_bit,
    )


def parse_options(args: argparse.Namespace) -> ParseOptions:
    return ParseOptions(
        enable_ipv6=args.enable_ipv6, all_reserved_ranges=args.nomasq_all_reserved_ranges
    )


def parse_address(address: str) -> tuple[str, int]:
    """ "host:port", "[v6]:port" or ":port" (every IPv4 interface) into (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{address!r} is not host:port (e.g. 127.0.0.1:9153 or [::1]:9153)")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return host or "0.0.0.0", int(port)
