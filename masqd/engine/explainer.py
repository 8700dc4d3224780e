"""The supervisor's answer to Explain: the worker's read of the nat path, judged by
`masqd.core.explain` with the config in force, which only names the entries."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from masqd.core.config import MasqConfig
from masqd.core.errors import ApplyError, Kind
from masqd.core.explain import Explanation, Ours, entries_of, explain
from masqd.core.model import NFTABLES, Family
from masqd.core.names import Answer, expand
from masqd.core.natpath import Packet, PathOutcome
from masqd.core.settings import Settings
from masqd.core.status import ConfigState, FamilyStatus
from masqd.host import iptables

NO_CONFIG = "no valid config loaded yet: entries are named as the defaults would have them"
OUT_OF_SYNC = (
    "the live rules are not (yet) the config's: this is what the kernel does now; `masqctl "
    "rules` shows the difference"
)


def ours(settings: Settings, mode: str, family: Family) -> Ours:
    """Which of the path's rules are masqd's, on this backend."""
    render = settings.render
    if mode == NFTABLES:
        owner = f"table {'ip' if family == Family.IPV4 else 'ip6'} {render.table}"
        return Ours(NFTABLES, owner, "postrouting", render.jump_position, settings.config_source)
    owner = iptables.Backend(family, mode).binary("")
    return Ours("iptables", owner, render.chain, render.jump_position, settings.config_source)


def answer(
    outcome: PathOutcome,
    packet: Packet,
    *,
    settings: Settings,
    mode: str,
    config: ConfigState,
    family: FamilyStatus | None,
    answers: Mapping[str, Answer] | None = None,
) -> Explanation:
    """The explanation of packet's fate on the path the worker read; ApplyError (of the
    read's kind) when it could not read it at all."""
    if outcome.path is None:
        raise ApplyError(
            f"the nat rules could not be read: {outcome.error}", outcome.kind or Kind.INTERNAL
        )
    path = outcome.path
    loaded = config.loaded
    policy = expand(loaded.config, answers or {}) if loaded is not None else MasqConfig()
    origins = loaded.origins if loaded is not None else ()
    raw = loaded.config if loaded is not None else policy
    entries = entries_of(raw, answers, origins, settings.config_source)
    result = explain(path, ours(settings, mode, path.family), policy, packet, entries)
    warnings = list(result.warnings)
    if config.loaded is None:
        warnings.append(NO_CONFIG)
    if family is not None and not family.in_sync:
        warnings.append(OUT_OF_SYNC)
    return replace(result, warnings=tuple(warnings))
