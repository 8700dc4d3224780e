"""`masqctl config validate|render`: masqd's own parser and renderer, with no daemon and no gRPC.

The file is read and judged exactly as masqd would (same size limit, same flags), so a file that
validates here is one masqd accepts. `-` reads standard input. `render` looks the file's DNS
names up through this machine's resolver, now, and says what each resolved to (or why not).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from masqctl.errors import CommandError, Exit
from masqd.core import flags
from masqd.core.config import LoadedConfig, config_to_dict, parse_config
from masqd.core.entries import HostName
from masqd.core.errors import ConfigError
from masqd.core.model import Family
from masqd.core.names import Answer, expand, settle
from masqd.core.rules import render
from masqd.host import configfile, dns

FAMILIES = {family.label: family for family in Family}


def load(path: str, args: argparse.Namespace) -> LoadedConfig:
    """Parse the file with masqd's rules; CommandError (exit 1) saying why when it is invalid."""
    try:
        data = sys.stdin.buffer.read() if path == "-" else configfile.read(path)
    except ConfigError as e:
        raise CommandError(str(e)) from e
    if data is None:
        raise CommandError(
            f"{path}: no such file (masqd would run with the defaults until one appears)"
        )
    try:
        return parse_config(data, flags.parse_options(args))
    except ConfigError as e:
        raise CommandError(f"{path}: invalid: {e}") from e


def validate(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The verdict for a person, and the same for a machine (valid, warnings, the config)."""
    loaded = load(args.file, args)
    text = f"{args.file}: valid" + (" (all defaults)" if loaded.using_defaults else "")
    text += "".join(f"\nwarning: {w}" for w in loaded.warnings)
    names = [n.name for n in loaded.config.names()]
    if names:
        text += f"\nDNS names (masqd resolves them as it runs): {', '.join(names)}"
    data = {
        "valid": True,
        "warnings": list(loaded.warnings),
        "config": config_to_dict(loaded.config),
    }
    return text, data


def render_families(args: argparse.Namespace) -> dict[str, str]:
    """Each asked family's iptables-restore input, by label."""
    if args.family == "ipv6" and not args.enable_ipv6:
        raise CommandError("--family ipv6 contradicts --enable-ipv6=false", Exit.USAGE)
    loaded = load(args.file, args)
    options = flags.render_options(args)
    if args.family:
        families = [FAMILIES[args.family]]
    else:
        families = [Family.IPV4, Family.IPV6] if args.enable_ipv6 else [Family.IPV4]
    answers = resolve(loaded.config.names())
    notes = "".join(_note(a) + "\n" for a in answers.values())
    config = expand(loaded.config, answers)
    return {f.label: notes + render(config, f, options) for f in families}


def resolve(names: tuple[HostName, ...]) -> dict[str, Answer]:
    """Each name looked up once, now, through this machine's resolver."""
    import time

    return {n.name: settle(Answer(n.name), dns.lookup(n.name), time.time()) for n in names}


def _note(answer: Answer) -> str:
    """A comment line (iptables-restore skips it) saying what a name renders to."""
    if not answer.resolved:
        return f"# {answer.name}: could not resolve ({answer.error}); it renders no rule"
    addresses = ", ".join(str(n.network_address) for n in answer.addresses)
    return f"# {answer.name} resolves to {addresses}"


def render_text(rendered: dict[str, str]) -> str:
    """One family: exactly its input. Both: each behind a comment saying which tool takes it.

    iptables-restore skips lines starting with '#', so each part can be cut out and fed to its
    tool as it is; the two must not be fed together (IPv6 rules are not IPv4 rules).
    """
    if len(rendered) == 1:
        return next(iter(rendered.values())).rstrip("\n")
    tools = {"ipv4": "iptables-restore", "ipv6": "ip6tables-restore"}
    parts = [
        f"# {label}: input for `{tools[label]} --noflush`\n{text.rstrip()}"
        for label, text in rendered.items()
    ]
    return "\n".join(parts)
