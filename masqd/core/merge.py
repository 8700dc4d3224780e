"""Several policy files merged into one config (--config-dir). Pure: per-file results in, one
config and each file's fate out.

Azure's ip-masq-agent-v2 reads every `ip-masq*` file of its directory, but unions the lists in
random order, ORs the booleans and stops at the first bad file. Here the merge is
deterministic and each file answers for itself:

- files in name order; list entries concatenated in that order, a repeated entry dropped (the
  first file that lists it owns it);
- a scalar key set in two files to different values is a conflict, and the later file is
  refused; so is a file whose entries would take nonMasqueradeCIDRs past cidrLimit;
- a refused file (bad, conflicting, too many entries) contributes its own last good content
  instead, if that still fits, or else nothing, while the others apply;
- a key no file sets takes its default, as in a single file.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from masqd.core.config import LoadedConfig, MasqConfig, Origin
from masqd.core.durations import format_duration
from masqd.core.entries import Entry

LISTS = {
    "nonMasqueradeCIDRs": "non_masquerade_cidrs",
    "masqueradeCIDRs": "masquerade_cidrs",
    "sourceCIDRs": "source_cidrs",
}
SCALARS = {
    "masqOutBound": "masq_out_bound",
    "masqOutBoundIPv6": "masq_out_bound_ipv6",
    "masqLinkLocal": "masq_link_local",
    "masqLinkLocalIPv6": "masq_link_local_ipv6",
    "resyncInterval": "resync_interval",
    "cidrLimit": "cidr_limit",
    "snatToSource": "snat_to_source",
    "snatToSourceIPv6": "snat_to_source_ipv6",
}


@dataclass(frozen=True)
class FileInput:
    """One file as its watcher knows it."""

    name: str
    current: LoadedConfig | str
    """Its content now, parsed; or why it cannot be used (unreadable, invalid)."""
    kept: LoadedConfig | None = None
    """What it contributed to the last merge, if anything."""


class FileState(enum.Enum):
    APPLIED = "applied"
    """Its content now is part of the config in force."""
    KEPT = "kept"
    """Its content now is refused; its last good content stays in force."""
    IGNORED = "ignored"
    """Its content now is refused and it has no good content that fits: it contributes nothing."""


@dataclass(frozen=True)
class FileOutcome:
    name: str
    state: FileState
    error: str = ""
    """Why its content now is refused; empty when applied."""
    used: LoadedConfig | None = None
    """What it contributes (the watcher keeps it as the file's last good content)."""


@dataclass(frozen=True)
class Merged:
    loaded: LoadedConfig | None
    """The merged config; None when every file is refused and none has any good content."""
    files: tuple[FileOutcome, ...]


def merge(files: Sequence[FileInput], defaults: MasqConfig) -> Merged:
    """Merge the files in name order (see the module's docstring)."""
    acc = _Accumulator(defaults)
    outcomes = []
    for file in sorted(files, key=lambda f: f.name):
        outcomes.append(_place(file, acc))
    refused = [o for o in outcomes if o.state != FileState.APPLIED]
    if outcomes and len(refused) == len(outcomes) and all(o.used is None for o in refused):
        return Merged(None, tuple(outcomes))
    return Merged(acc.result(), tuple(outcomes))


def _place(file: FileInput, acc: _Accumulator) -> FileOutcome:
    """Add the file's content now, or else its last good content, to the merge if it fits."""
    errors = []
    if isinstance(file.current, LoadedConfig):
        problem = acc.misfit(file.current)
        if problem is None:
            acc.add(file.name, file.current)
            return FileOutcome(file.name, FileState.APPLIED, used=file.current)
        errors.append(problem)
    else:
        errors.append(file.current)
    if file.kept is not None and file.kept != file.current:
        problem = acc.misfit(file.kept)
        if problem is None:
            acc.add(file.name, file.kept)
            return FileOutcome(file.name, FileState.KEPT, errors[0], used=file.kept)
        errors.append(f"its last good content does not fit either: {problem}")
    return FileOutcome(file.name, FileState.IGNORED, "; ".join(errors))


class _Accumulator:
    """The merge so far: the scalars set and by whom, the lists and where each entry is from."""

    def __init__(self, defaults: MasqConfig) -> None:
        self.defaults = defaults
        self.scalars: dict[str, tuple[Any, str]] = {}
        self.lists: dict[str, dict[Entry, str]] = {key: {} for key in LISTS}
        self.set_lists: set[str] = set()
        self.warnings: list[str] = []

    def misfit(self, loaded: LoadedConfig) -> str | None:
        """Why this content cannot join the merge (a sentence), None when it can."""
        config = loaded.config
        for key in sorted(loaded.present & SCALARS.keys()):
            value = getattr(config, SCALARS[key])
            if key in self.scalars and self.scalars[key][0] != value:
                theirs, owner = self.scalars[key]
                return (
                    f"{key} is {_show(value)} here but {_show(theirs)} in {owner}, which comes "
                    "first; set it in one file only"
                )
        limit = (
            config.cidr_limit
            if "cidrLimit" in loaded.present
            else self.scalars.get("cidrLimit", (self.defaults.cidr_limit, ""))[0]
        )
        if "nonMasqueradeCIDRs" in loaded.present:
            merged = self.lists["nonMasqueradeCIDRs"].keys() | set(config.non_masquerade_cidrs)
            if len(merged) > limit:
                return (
                    f"nonMasqueradeCIDRs: {len(merged)} entries with those of the files before "
                    f"it, more than cidrLimit ({limit})"
                )
        return None

    def add(self, name: str, loaded: LoadedConfig) -> None:
        config = loaded.config
        for key in loaded.present & SCALARS.keys():
            self.scalars.setdefault(key, (getattr(config, SCALARS[key]), name))
        for key, field in LISTS.items():
            if key in loaded.present:
                self.set_lists.add(key)
                entries = self.lists[key]
                for entry in getattr(config, field):
                    entries.setdefault(entry, name)
        self.warnings += [f"{name}: {w}" for w in loaded.warnings]

    def result(self) -> LoadedConfig:
        values: dict[str, Any] = {SCALARS[key]: value for key, (value, _) in self.scalars.items()}
        for key, field in LISTS.items():
            if key in self.set_lists:
                values[field] = tuple(self.lists[key])
        origins = tuple(
            Origin(key, entry, source) for key in LISTS for entry, source in self.lists[key].items()
        )
        present = frozenset(self.scalars) | frozenset(self.set_lists)
        return LoadedConfig(
            config=dataclasses.replace(self.defaults, **values),
            warnings=tuple(self.warnings),
            using_defaults=not present,
            present=present,
            origins=origins,
        )


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return format_duration(value) if isinstance(value, float) else str(value)
