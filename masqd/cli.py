"""masqd's command line: run the daemon (default) or clean up after it.

Kept light at import: a spawned worker re-imports the main module, and `masqd version` and a
usage error should cost no more than argparse.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable

from masqd.core.defaults import DEFAULT_CONFIG_PATH, DEFAULT_SOCKET


def _mode(text: str) -> int:
    """An octal permission mode, 0 to 0777: a socket is never setuid, sticky or wider."""
    digits = text.strip().removeprefix("0o")
    if not (digits.isascii() and digits.isdigit()) or any(c in "89" for c in digits):
        raise argparse.ArgumentTypeError(f"{text!r} is not an octal mode like 0600")
    mode = int(digits, 8)
    if mode > 0o777:
        raise argparse.ArgumentTypeError(f"{text!r} is out of bounds: a mode is 0 to 0777")
    return mode


def _group(text: str) -> str:
    """A group that exists (a name, or a number): found now, not when the socket is made."""
    import grp

    if not text:
        return text
    try:
        if text.isascii() and text.isdigit():
            grp.getgrgid(int(text))
        else:
            grp.getgrnam(text)
    except (KeyError, OverflowError):
        raise argparse.ArgumentTypeError(f"no group {text!r} on this node") from None
    return text


def _bounded(name: str) -> Callable[[str], float]:
    """A duration flag ("10s") within the bounds of the same name in masqd.core.bounds."""

    def parse(text: str) -> float:
        from masqd.core import bounds

        try:
            return getattr(bounds, name).parse(text)  # type: ignore[no-any-return]
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return parse


def _seconds(text: str) -> float:
    """--drift-check-interval: seconds as a number (5, 0.5), or a duration (5s)."""
    from masqd.core import bounds

    limits = bounds.DRIFT_CHECK_INTERVAL
    try:
        number: float | None = float(text)  # takes nan and inf too: check() refuses them
    except ValueError:
        number = None
    try:
        return limits.parse(text) if number is None else limits.check(number)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


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
    parser.add_argument(
        "--socket-group", default="", type=_group, help="group owning the socket (a name or gid)"
    )
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
        type=_seconds,
        metavar="SECONDS",
        help="how often our chain is checked for tampering, 0.1 to 3600 (default 5)",
    )
    parser.add_argument(
        "--iptables-timeout",
        default=10.0,
        type=_bounded("IPTABLES_TIMEOUT"),
        metavar="DURATION",
        help="the longest one iptables command may run, 1s to 5m (default 10s)",
    )
    parser.add_argument(
        "--retry-deadline",
        default=30.0,
        type=_bounded("RETRY_DEADLINE"),
        metavar="DURATION",
        help="how long a sync retries a held lock or a timeout, 0s to 1h (default 30s); a "
        "worker that does not answer within this plus --iptables-timeout is replaced",
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
        type=_bounded("HEALTH_TIMEOUT"),
        metavar="DURATION",
        help="health fails when a requested sync is not applied within this, 1s to 24h "
        "(default 60s)",
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
        iptables_timeout=args.iptables_timeout,
        retry_deadline=args.retry_deadline,
        health_timeout=args.health_timeout,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    daemon = Daemon(settings, metrics_address=args.metrics_address)
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

    A legacy nat table that does not exist is not read (reading creates it; there is nothing of
    ours in it either); nft and iptables-nft read without creating anything (`host.cleanup`).
    """
    from masqd.core import flags
    from masqd.core.rules import DEFAULT_CHAIN, DEFAULT_TABLE
    from masqd.host.cleanup import clean, clean_nftables
    from masqd.host.iptables import MODES

    parser = argparse.ArgumentParser(
        prog="masqd cleanup",
        description="Remove our chain and its POSTROUTING jump from both families and iptables "
        "modes (only a chain whose jump carries masqd's comment, and only from a mode whose nat "
        "table exists here), and our nftables table from both families.",
    )
    parser.add_argument("--masq-chain", default=DEFAULT_CHAIN, type=flags._chain)
    parser.add_argument("--nft-table", default=DEFAULT_TABLE, type=flags._table)
    parser.add_argument("--backend", default="all", choices=("all", "iptables", "nftables"))
    parser.add_argument("--iptables-mode", default="all", choices=("all", "legacy", "nft"))
    args = parser.parse_args(argv)
    errors: list[str] = []
    if args.backend in ("all", "iptables"):
        modes = MODES if args.iptables_mode == "all" else (args.iptables_mode,)
        errors += clean(args.masq_chain, modes, print)
    if args.backend in ("all", "nftables"):
        errors += clean_nftables(args.nft_table, print)
    for error in errors:
        print(f"masqd cleanup: {error}", file=sys.stderr)
    return 1 if errors else 0
