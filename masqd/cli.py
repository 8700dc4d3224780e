"""masqd's command line: run the daemon (default) or clean up after it.

Kept light at import: a spawned worker re-imports the main module, and `masqd version` and a
usage error should cost no more than argparse.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from masqd.core.defaults import DEFAULT_CONFIG_PATH, DEFAULT_SOCKET


def _mode(text: str) -> int:
    try:
        return int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an octal mode like 0600") from None


def _duration(text: str) -> float:
    from masqd.core.durations import parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive duration like 60s")
    return seconds


def _address(text: str) -> str:
    from masqd.core.flags import parse_address

    if text:
        try:
            parse_address(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    from masqd.core import flags

    parser = argparse.ArgumentParser(
        prog="masqd",
        description="IP masquerade agent: keeps the IP-MASQ-AGENT chain of the nat table "
        "(or, with --backend nftables, a table of its own) in line with the config, for IPv4 "
        "and IPv6.",
        epilog="`masqd cleanup` removes our chains, jump rules and tables from both families.",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--config",
        default=DEFAULT_CONFIG_PATH,
        help=f"the policy file, YAML or JSON (default {DEFAULT_CONFIG_PATH})",
    )
    source.add_argument(
        "--config-dir",
        default="",
        metavar="DIR",
        help="merge every regular file in DIR whose name starts with ip-masq, in name order, "
        "instead of --config",
    )
    parser.add_argument("--socket", default=DEFAULT_SOCKET, help="control API unix socket")
    parser.add_argument(
        "--socket-mode", default=0o600, type=_mode, help="socket permissions (0600)"
    )
    parser.add_argument("--socket-group", default="", help="group owning the socket")
    parser.add_argument(
        "--backend",
        default="auto",
        choices=("auto", "iptables", "nftables"),
        help="the data plane: iptables (a chain in the nat table), nftables (a table of our "
        "own), or auto: nftables where kube-proxy runs in nftables mode or the kernel lacks "
        "the xtables modules the iptables backend needs, else iptables (default auto)",
    )
    parser.add_argument(
        "--iptables-mode",
        default="auto",
        choices=("auto", "legacy", "nft"),
        help="the iptables backend's mode; auto: the one the node uses (default auto)",
    )
    flags.add_render_flags(parser)
    parser.add_argument("--log-format", default="text", choices=("text", "json"))
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error")
    )
    parser.add_argument(
        "--drift-check-interval",
        default=5.0,
        type=float,
        metavar="SECONDS",
        help="how often our chain is checked for tampering (default 5)",
    )
    parser.add_argument(
        "--metrics-address",
        default="127.0.0.1:9153",
        type=_address,
        metavar="HOST:PORT",
        help="serve Prometheus /metrics, /healthz and /readyz here; empty turns it off "
        "(default 127.0.0.1:9153)",
    )
    parser.add_argument(
        "--health-timeout",
        default=60.0,
        type=_duration,
        metavar="DURATION",
        help="/healthz fails when a requested sync is not applied within this (default 60s)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["cleanup"]:
        return cleanup_main(argv[1:])
    if argv[:1] == ["version"]:
        from masqd import __version__

        print(__version__)
        return 0
    args = build_parser().parse_args(argv)
    return run(args)


def run(args: argparse.Namespace) -> int:
    import logging

    from masqd import logs
    from masqd.core import flags
    from masqd.core.settings import Settings
    from masqd.daemon import Daemon, StartError
    from masqd.host import heap

    heap.limit_arenas(2)  # before any thread: gRPC's threads share one arena, not one each
    logs.setup(args.log_format, args.log_level)
    log = logging.getLogger("masqd")
    settings = Settings(
        config_path=args.config,
        config_dir=args.config_dir,
        socket=args.socket,
        socket_mode=args.socket_mode,
        socket_group=args.socket_group,
        backend=args.backend,
        iptables_mode=args.iptables_mode,
        render=flags.render_options(args),
        enable_ipv6=args.enable_ipv6,
        all_reserved_ranges=args.nomasq_all_reserved_ranges,
        drift_check_interval=args.drift_check_interval,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    daemon = Daemon(
        settings, metrics_address=args.metrics_address, health_timeout=args.health_timeout
    )
    try:
        daemon.start()
    except StartError as e:
        log.error("%s", e)
        return 1
    stop.wait()
    log.info("stopping; the rules stay in place")
    daemon.stop()
    return 0


def cleanup_main(argv: list[str]) -> int:
    """Remove what masqd wrote, from both families and every backend; create nothing.

    Reading legacy tables with iptables-legacy-save instantiates them, so a family whose kernel
    has no legacy table is not read at all (there is nothing of ours in it either); nft and
    iptables-nft read without creating anything (`iptables.remove_chain`).
    """
    from masqd.core import flags
    from masqd.core.rules import DEFAULT_CHAIN, DEFAULT_TABLE

    parser = argparse.ArgumentParser(
        prog="masqd cleanup",
        description="Remove our chain and its POSTROUTING jump, and our nftables table, from "
        "both families and every backend.",
    )
    parser.add_argument("--masq-chain", default=DEFAULT_CHAIN, type=flags._chain)
    parser.add_argument("--nft-table", default=DEFAULT_TABLE, type=flags._table)
    parser.add_argument("--backend", default="all", choices=("all", "iptables", "nftables"))
    parser.add_argument("--iptables-mode", default="all", choices=("all", "legacy", "nft"))
    args = parser.parse_args(argv)
    failed = False
    if args.backend in ("all", "iptables"):
        failed = _cleanup_iptables(args.masq_chain, args.iptables_mode)
    if args.backend in ("all", "nftables"):
        failed = _cleanup_nftables(args.nft_table) or failed
    return 1 if failed else 0


def _cleanup_iptables(chain: str, which: str) -> bool:
    """Our chain and jumps out of each mode's nat table; True when something failed."""
    from masqd.core.errors import ApplyError
    from masqd.core.model import Family
    from masqd.host.iptables import MODES, Backend, remove_chain

    failed = False
    for mode in MODES if which == "all" else (which,):
        for family in Family:
            try:
                if remove_chain(family, mode, chain):
                    print(f"removed {chain} from {Backend(family, mode).binary('')}")
            except ApplyError as e:
                print(f"masqd cleanup: {e}", file=sys.stderr)
                failed = True
    return failed


def _cleanup_nftables(table: str) -> bool:
    """Our table out of each family; True when something failed."""
    from masqd.core.errors import ApplyError
    from masqd.core.model import Family
    from masqd.host import nftables

    if not nftables.installed():
        return False
    failed = False
    for family in Family:
        nft = nftables.Nft(family, table)
        try:
            if nft.delete_table():
                print(f"removed table {nft.spec}")
        except ApplyError as e:
            print(f"masqd cleanup: {e}", file=sys.stderr)
            failed = True
    return failed
