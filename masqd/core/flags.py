"""Command-line flags shared by masqd and `masqctl config render|validate`, upstream-compatible.

Booleans take Go's forms: `--random-fully`, `--random-fully=false`.
"""

from __future__ import annotations

import argparse

from masqd.core.config import ParseOptions
from masqd.core.nftrules import validate_table_name
from masqd.core.rules import (
    DEFAULT_CHAIN,
    DEFAULT_TABLE,
    RenderOptions,
    parse_to_ports,
    validate_chain_name,
)

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


def render_options(args: argparse.Namespace) -> RenderOptions:
    return RenderOptions(
        chain=args.masq_chain,
        random_fully=args.random_fully,
        to_ports=parse_to_ports(args.to_ports),
        table=args.nft_table,
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
