"""Where each desired rule comes from: the config entry (a CIDR, or the DNS name it resolves
from) and, with --config-dir, the file. Pure; for `masqctl rules`."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from masqd.core.config import LoadedConfig
from masqd.core.entries import Entry, IPNetwork
from masqd.core.model import Family
from masqd.core.names import Answer, expansion
from masqd.core.rules import RenderOptions, masquerade_rules, return_rules


def rule_origins(
    loaded: LoadedConfig, answers: Mapping[str, Answer], family: Family, opts: RenderOptions
) -> dict[str, str]:
    """Rule spec -> "KEY ENTRY" (+ " in FILE"), for the rules the config's entries render to."""
    config = loaded.config
    sources = {(o.key, o.entry): o.source for o in loaded.origins}
    lists: tuple[tuple[str, tuple[Entry, ...], Callable[[IPNetwork], list[str]]], ...] = (
        (
            "masqueradeCIDRs",
            config.masquerade_cidrs,
            lambda n: masquerade_rules(n, config, family, opts),
        ),
        (
            "nonMasqueradeCIDRs",
            config.non_masquerade_cidrs,
            lambda n: return_rules(n, config, family, opts),
        ),
    )
    origins: dict[str, str] = {}
    for key, entries, render in lists:
        for network, entry in expansion(entries, answers):
            if network.version != family:
                continue
            source = sources.get((key, entry))
            for rule in render(network):
                origins.setdefault(rule, f"{key} {entry}" + (f" in {source}" if source else ""))
    return origins
