"""masqctl: talk to masqd over its control socket, or check a config file offline.

Kept light at import, because Kubernetes runs `masqctl health` as a probe every few seconds:
gRPC is imported only by commands that talk to masqd, YAML and masqd's parser only by `config`
and `-o yaml`.

Exit codes: 0 ok, 1 the operation failed, 2 usage error, 3 masqd unreachable.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from masqctl.errors import CommandError, Exit, exit_code
from masqd.api.families import LABELS
from masqd.client.errors import ClientError
from masqd.core import bounds
from masqd.core.defaults import DEFAULT_SOCKET

if TYPE_CHECKING:
    from masqd.client import Client


Handler = Callable[[argparse.Namespace], int]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Only `config` needs masqd's rendering flags, and they import the YAML parser.
    parser = build_parser(render_flags="config" in argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2)
        return int(e.code or 0) if isinstance(e.code, int) else Exit.USAGE
    handler: Handler = args.handler
    try:
        return handler(args)
    except CommandError as e:
        print(f"masqctl: {e}", file=sys.stderr)
        return int(e.code)
    except ClientError as e:  # the API client's: unreachable, refused, failed
        print(f"masqctl: {e}", file=sys.stderr)
        return int(exit_code(e))
    except BrokenPipeError:  # `masqctl watch | head`
        sys.stderr.close()
        return Exit.OK


# -- the command line ----------------------------------------------------------------------


def build_parser(render_flags: bool = True) -> argparse.ArgumentParser:
    # --socket and -o are accepted before or after the command; a value given after it wins.
    common = argparse.ArgumentParser(add_help=False)
    _add_common(common, argparse.SUPPRESS, argparse.SUPPRESS)
    parser = argparse.ArgumentParser(
        prog="masqctl",
        description="Control masqd, the IP masquerade agent, through its unix socket "
        "(--socket, or MASQD_SOCKET), or check a config file offline.",
        epilog="exit codes: 0 ok, 1 the operation failed, 2 usage error, 3 masqd unreachable",
    )
    _add_common(parser, os.environ.get("MASQD_SOCKET") or DEFAULT_SOCKET, "table")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, handler: Handler, help: str, **kw: Any) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help, parents=[common], **kw)
        sub.set_defaults(handler=handler)
        return sub

    command("status", _status, "config, interval and each family's worker at a glance")
    resync = command("resync", _resync, "sync now and wait for each family's result")
    _add_family(resync, "sync only this family (default: all)")
    resync.add_argument("--no-wait", action="store_true", help="return once the request is queued")
    resync.add_argument(
        "--timeout",
        type=_duration(bounds.CLIENT_TIMEOUT),
        default=10.0,
        metavar="DURATION",
        help="how long to wait for the sync, up to 1h, e.g. 10s (default)",
    )
    rules = command("rules", _rules, "the live chain with counters, and whether it matches")
    _add_family(rules, "show only this family (default: all)")

    interval = command("interval", _usage_of("interval"), "override the resync interval")
    interval_commands = interval.add_subparsers(dest="action", metavar="ACTION", required=True)
    set_ = interval_commands.add_parser(
        "set",
        parents=[common],
        help="use DURATION as the resync interval for --ttl, then the configured one again",
    )
    set_.add_argument(
        "interval",
        type=_duration(bounds.RESYNC_INTERVAL),
        metavar="DURATION",
        help="1s to 24h, e.g. 5s",
    )
    set_.add_argument(
        "--ttl",
        type=_duration(bounds.OVERRIDE_TTL),
        required=True,
        metavar="DURATION",
        help="up to 24h, e.g. 10m",
    )
    set_.set_defaults(handler=_interval_set)
    clear = interval_commands.add_parser(
        "clear", parents=[common], help="go back to the configured interval now"
    )
    clear.set_defaults(handler=_interval_clear)

    watch = command("watch", _watch, "print masqd's events as they happen (Ctrl-C stops)")
    watch.add_argument(
        "--count", type=_count, default=0, metavar="N", help="stop after N events (default: never)"
    )
    health = command(
        "health", _health, "exit 0 when masqd serves and every family is in sync, else 1"
    )
    _add_family(health, "check only this family")
    explain = command(
        "explain",
        _explain,
        "what a pod's new connection to DEST gets (masqueraded, SNATed, or its own address), "
        "which rule and config entry decide, from the rules as the kernel has them (every "
        "owner's, in the kernel's order), and what would NAT it first",
    )
    _add_explain_arguments(explain)

    config = command("config", _usage_of("config"), "check a config file offline")
    config_commands = config.add_subparsers(dest="action", metavar="ACTION", required=True)
    validate = config_commands.add_parser(
        "validate",
        parents=[common],
        help="exit 0 if masqd would accept FILE (warnings printed), 1 saying why not; where "
        "nft is installed (and as root), the kernel also checks the nftables rules "
        "(nft --check, in a network namespace of its own)",
    )
    render = config_commands.add_parser(
        "render",
        parents=[common],
        help="print the exact iptables-restore (or, --backend nftables, nft -f) input masqd "
        "applies for FILE (both families, each under a '# ipv4:'/'# ipv6:' comment, unless "
        "--family)",
    )
    offline_explain = config_commands.add_parser(
        "explain",
        parents=[common],
        help="what masqd's rules for FILE alone give a new connection to DEST, and which entry "
        "decides (no daemon: other owners' rules and the node's addresses are not seen)",
    )
    subs = ((validate, _config_validate), (render, _config_render))
    for sub, handler in (*subs, (offline_explain, _config_explain)):
        sub.add_argument("file", metavar="FILE", help="the config file (YAML or JSON), - for stdin")
        sub.set_defaults(handler=handler)
        if render_flags:
            from masqd.core import flags

            flags.add_render_flags(sub)
    _add_family(render, "render only this family")
    _add_explain_arguments(offline_explain)
    for sub in (render, offline_explain):
        sub.add_argument(
            "--backend",
            default="iptables",
            choices=("iptables", "nftables"),
            help="whose rules (default iptables)",
        )
    validate.add_argument(
        "--compat",
        choices=("cce", "upstream"),
        help="also warn about the keys and values cce-ip-masq-agent or upstream ip-masq-agent "
        "would not understand (they ignore unknown keys silently)",
    )
    return parser


def _add_explain_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "destination", metavar="DEST", help="an IP address (or a name, resolved here)"
    )
    parser.add_argument(
        "--source",
        default="",
        metavar="SRC",
        help="the pod's address (default: any; with sourceCIDRs, one of them)",
    )
    _add_family(parser, "the family to resolve a name in (default: the address's)")


def _add_common(parser: argparse.ArgumentParser, socket: str, output: str) -> None:
    parser.add_argument(
        "--socket",
        default=socket,
        metavar="PATH",
        help=f"masqd's control socket (default: $MASQD_SOCKET or {DEFAULT_SOCKET})",
    )
    parser.add_argument(
        "-o",
        "--output",
        default=output,
        choices=("table", "json", "yaml"),
        help="table for people (default); json is the API message as canonical protobuf JSON",
    )


def _add_family(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--family", choices=LABELS, default="", help=help)


def _duration(limits: bounds.Bounds) -> Callable[[str], float]:
    """A duration argument ("10s"), finite and within limits, refused at parse time (exit 2)."""

    def parse(text: str) -> float:
        try:
            return limits.parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return parse


def _count(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 12:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count (0 or more)")
    return int(text)


def _usage_of(name: str) -> Handler:
    def handler(args: argparse.Namespace) -> int:  # argparse requires the action already
        raise CommandError(f"{name}: an action is required", Exit.USAGE)

    return handler


# -- the commands --------------------------------------------------------------------------


def _status(args: argparse.Namespace) -> int:
    from masqctl import views

    with _client(args) as masqd:
        status = masqd.status()
    _emit(args, status, views.status)
    return Exit.OK


def _resync(args: argparse.Namespace) -> int:
    from masqctl import views

    with _client(args) as masqd:
        response = masqd.resync(_family(args), wait=not args.no_wait, timeout=args.timeout)
    _emit(args, response, views.sync_results)
    return Exit.OK if all(r.ok for r in response.results) else Exit.FAILED


def _rules(args: argparse.Namespace) -> int:
    from masqctl import views

    with _client(args) as masqd:
        response = masqd.rules(_family(args))
    _emit(args, response, views.rules)
    return Exit.FAILED if any(f.error for f in response.families) else Exit.OK


def _interval_set(args: argparse.Namespace) -> int:
    from masqctl import views

    with _client(args) as masqd:
        status = masqd.set_interval_override(args.interval, args.ttl)
    _emit(args, status, views.interval)
    return Exit.OK


def _interval_clear(args: argparse.Namespace) -> int:
    from masqctl import views

    with _client(args) as masqd:
        status = masqd.clear_interval_override()
    _emit(args, status, views.interval)
    return Exit.OK


def _watch(args: argparse.Namespace) -> int:
    from masqctl import output, views

    seen = 0
    with _client(args) as masqd:
        stream = masqd.watch()
        try:
            stream.subscribed()
            for event in stream:
                if args.output == "table":
                    text = views.event(event)
                else:
                    text = output.render(event, args.output, stream=True)
                print(text, flush=True)
                seen += 1
                if args.count and seen >= args.count:
                    return Exit.OK
        except KeyboardInterrupt:
            return Exit.OK
        finally:
            stream.cancel()
    raise CommandError("masqd ended the event stream (it is shutting down)", Exit.UNREACHABLE)


def _health(args: argparse.Namespace) -> int:
    from masqctl import output

    with _client(args) as masqd:
        serving = masqd.health(args.family)
        reasons = ""
        if not serving:
            from masqctl import views

            reasons = views.unhealthy(masqd.status(), args.family)
    if args.output != "table":
        data = {"serving": serving, "reasons": reasons.splitlines()}
        print(output.render_data(data, args.output))
    elif serving:
        print(f"ok: masqd serves and {args.family or 'every family'} is in sync")
    else:
        print(f"not healthy:\n{reasons}")
    return Exit.OK if serving else Exit.FAILED


def _explain(args: argparse.Namespace) -> int:
    from masqctl import offline, views

    destination = offline.resolve_destination(args.destination, args.family)
    with _client(args) as masqd:
        explanation = masqd.explain(destination, args.source, args.family)
    _emit(args, explanation, views.explanation)
    return Exit.OK


def _config_explain(args: argparse.Namespace) -> int:
    from masqctl import offline, views

    _emit(args, offline.explain(args), views.explanation)
    return Exit.OK


def _config_validate(args: argparse.Namespace) -> int:
    from masqctl import offline, output

    text, data = offline.validate(args)
    print(text if args.output == "table" else output.render_data(data, args.output))
    return Exit.OK


def _config_render(args: argparse.Namespace) -> int:
    from masqctl import offline, output

    rendered = offline.render_families(args)
    if args.output == "table":
        print(offline.render_text(rendered, args.backend))
    else:
        print(output.render_data(rendered, args.output))
    return Exit.OK


# -- helpers -------------------------------------------------------------------------------


def _client(args: argparse.Namespace) -> Client:
    from masqd.client import Client

    return Client(args.socket)


def _family(args: argparse.Namespace) -> str:
    return str(args.family)


def _emit(args: argparse.Namespace, message: Any, view: Callable[[Any], str]) -> None:
    from masqctl import output

    if args.output == "table":
        print(view(message))
    else:
        print(output.render(message, args.output))


if __name__ == "__main__":
    sys.exit(main())
