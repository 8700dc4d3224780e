"""`masqctl config validate|render`: masqd's own parser and renderer, with no daemon and no gRPC.

The file is read and judged exactly as masqd would (same size limit, same flags), so a file that
validates here is one masqd accepts. `-` reads standard input. `render` and `explain` look the
file's DNS names up through this machine's resolver, now, and say what each resolved to (or why
not). Where nft is installed, validate also has the kernel check the nftables backend's
transactions (`nft --check`, in a network namespace of its own, so nothing of the node's
ruleset is read or touched).
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from masqctl.errors import CommandError, Exit
from masqd.core import compat, flags, natparse
from masqd.core.config import LoadedConfig, MasqConfig, config_to_dict, parse_config
from masqd.core.entries import HostName
from masqd.core.errors import ConfigError, RequestError
from masqd.core.explain import Ours, entries_of, packet_of
from masqd.core.explain import explain as explain_path
from masqd.core.model import Family
from masqd.core.names import Answer, expand, settle
from masqd.core.natpath import NatPath
from masqd.core.nftrules import desired_table, table_block
from masqd.core.nftrules import render as render_nftables
from masqd.core.rules import desired_rules, jump_rule, render
from masqd.host import configfile, dns, nftables

if TYPE_CHECKING:
    from masqd.api.v1 import control_pb2 as pb

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
    """The verdict for a person, and the same for a machine (valid, warnings, the config,
    and what `nft --check` said of the nftables transactions). CommandError (exit 1) when
    the kernel refuses them. DNS names are not looked up here: they render nothing."""
    loaded = load(args.file, args)
    options = flags.render_options(args)
    families = _families(args)
    tables = [desired_table(loaded.config, f, options) for f in families]
    warnings = [*loaded.warnings, *(w for t in tables for w in t.warnings)]
    text = f"{args.file}: valid" + (" (all defaults)" if loaded.using_defaults else "")
    text += "".join(f"\nwarning: {w}" for w in warnings)
    names = [n.name for n in loaded.config.names()]
    if names:
        text += f"\nDNS names (masqd resolves them as it runs): {', '.join(names)}"
    checked = [nftables.check(render_nftables(loaded.config, f, options)) for f in families]
    refused = next((c for c in checked if c.accepted is False), None)
    if refused is not None:
        raise CommandError(f"{args.file}: nft --check refuses the nftables rules: {refused.detail}")
    labels = ", ".join(f.label for f in families)
    unchecked = next((c for c in checked if c.accepted is None), None)
    if unchecked is None:
        text += f"\nnftables: nft --check accepts the transactions ({labels})"
    else:
        text += f"\nnftables: not checked with nft --check ({unchecked.detail})"
    data = {
        "valid": True,
        "warnings": warnings,
        "config": config_to_dict(loaded.config),
        "nftCheck": "accepted" if unchecked is None else f"not checked: {unchecked.detail}",
    }
    target = getattr(args, "compat", None)
    if target:
        found = compat.warnings(target, loaded.present, loaded.config)
        agent = compat.AGENTS[target]
        text += "".join(f"\n{target}: {w}" for w in found)
        text += "" if found else f"\n{target}: {agent} reads this file as masqd does"
        data["compat"] = {"agent": agent, "warnings": found}
    return text, data


def explain(args: argparse.Namespace) -> pb.Explanation:
    """What masqd's rules for the file alone give the connection: the same walk as masqd's
    Explain, over the rules the config renders to instead of the kernel's."""
    loaded = load(args.file, args)
    options = flags.render_options(args)
    answers = resolve(loaded.config.names())
    config = expand(loaded.config, answers)
    try:
        packet = packet_of(resolve_destination(args.destination, args.family), args.source)
    except RequestError as e:
        raise CommandError(str(e), Exit.USAGE) from e
    family = Family(packet.destination.version)
    _families(argparse.Namespace(family=family.label, enable_ipv6=args.enable_ipv6))
    if args.backend == "nftables":
        table = desired_table(config, family, options)
        hooks = natparse.nft_hooks(table_block(table), family)
        ours = Ours("nftables", f"table {table.spec}", "postrouting", options.jump_position)
    else:
        chain = options.chain
        rules = desired_rules(config, family, options)
        save = ["*nat", ":POSTROUTING ACCEPT [0:0]", f":{chain} - [0:0]", jump_rule(chain), *rules]
        hook = natparse.iptables_hook("\n".join([*save, "COMMIT"]), "iptables")
        hooks = [hook] if hook is not None else []
        ours = Ours("iptables", "iptables", chain, options.jump_position)
    path = NatPath(family, tuple(hooks))
    entries = entries_of(loaded.config, answers, loaded.origins, args.file)
    result = explain_path(path, replace(ours, config_path=args.file), config, packet, entries)
    offline = (
        "offline: masqd's own rules only (no other owner's rules, and the node's addresses "
        "are not known: DEST is taken as not the node's own)"
    )
    from masqd.api.explanation import message

    return message(replace(result, notes=(offline, *result.notes)), args.backend, args.file)


def resolve_destination(destination: str, family: str = "") -> str:
    """An address as given; a name looked up here, its first address of the family asked for
    (or either). CommandError when it is neither an address nor a name that resolves."""
    try:
        ipaddress.ip_address(destination)
        return destination
    except ValueError:
        pass
    kinds = {"ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}
    try:
        found = socket.getaddrinfo(destination, None, kinds.get(family, 0), socket.SOCK_DGRAM)
    except (socket.gaierror, UnicodeError) as e:
        raise CommandError(
            f"{destination}: not an IP address, and not a name that resolves ({e})"
        ) from e
    return str(found[0][4][0])


def render_families(args: argparse.Namespace) -> dict[str, str]:
    """Each asked family's input for the backend (iptables-restore or nft -f), by label; the
    file's DNS names resolved now, each said in a comment line (both tools skip those)."""
    families = _families(args)
    loaded = load(args.file, args)
    options = flags.render_options(args)
    renderer = render_nftables if args.backend == "nftables" else render
    answers = resolve(loaded.config.names())
    notes = "".join(_note(a) + "\n" for a in answers.values())
    config: MasqConfig = expand(loaded.config, answers)
    return {f.label: notes + renderer(config, f, options) for f in families}


def resolve(names: tuple[HostName, ...]) -> dict[str, Answer]:
    """Each name looked up once, now, through this machine's resolver."""
    import time

    return {n.name: settle(Answer(n.name), dns.lookup(n.name), time.time()) for n in names}


def _note(answer: Answer) -> str:
    """A comment line (iptables-restore and nft skip it) saying what a name renders to."""
    if not answer.resolved:
        return f"# {answer.name}: could not resolve ({answer.error}); it renders no rule"
    addresses = ", ".join(str(n.network_address) for n in answer.addresses)
    return f"# {answer.name} resolves to {addresses}"


def render_text(rendered: dict[str, str], backend: str = "iptables") -> str:
    """One family: exactly its input. Both: each behind a comment saying which tool takes it.

    iptables-restore and nft skip lines starting with '#', so each part can be cut out and fed
    to its tool as it is; the two must not be fed together (IPv6 rules are not IPv4 rules).
    """
    if len(rendered) == 1:
        return next(iter(rendered.values())).rstrip("\n")
    tools = {"ipv4": "iptables-restore --noflush", "ipv6": "ip6tables-restore --noflush"}
    if backend == "nftables":
        tools = {"ipv4": "nft -f -", "ipv6": "nft -f -"}
    parts = [
        f"# {label}: input for `{tools[label]}`\n{text.rstrip()}"
        for label, text in rendered.items()
    ]
    return "\n".join(parts)


def _families(args: argparse.Namespace) -> list[Family]:
    family = getattr(args, "family", "")  # render has --family, validate does not
    if family == "ipv6" and not args.enable_ipv6:
        raise CommandError("--family ipv6 contradicts --enable-ipv6=false", Exit.USAGE)
    if family:
        return [FAMILIES[family]]
    return [Family.IPV4, Family.IPV6] if args.enable_ipv6 else [Family.IPV4]
