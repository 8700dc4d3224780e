"""Watching the policy: one file (--config) or every `ip-masq*` file of a directory
(--config-dir). A change is noticed by each file's identity (through the kubelet's `..data`
symlink swap too), read, and parsed only when its content is new.

The same bytes parse to the same config, so content already parsed (good or bad) is never
parsed again: a rejected file is reported once per distinct content, and re-reading an
unchanged file every interval costs a read and a digest. In a directory each file keeps its
own last good content (core/merge.py decides what each contributes). The file functions are
injected for tests.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from masqd.core.config import LoadedConfig, ParseOptions, default_config, parse_config
from masqd.core.config import parse_document as parse_file
from masqd.core.errors import ConfigError
from masqd.core.merge import FileInput, FileOutcome, merge
from masqd.host import configfile

_MISSING = b"\0missing"  # no file: its own content, distinct from an empty file's digest
PREFIX = "ip-masq"
"""The files of a config directory that are read (Azure ip-masq-agent-v2's rule)."""


@dataclass(frozen=True)
class Loaded:
    """The policy is valid (the same as before, or not: the caller compares)."""

    loaded: LoadedConfig
    missing: bool = False
    """No file (or no directory) at the path: the config is all defaults."""
    files: tuple[FileOutcome, ...] = ()
    """--config-dir: what became of each file."""
    refused: tuple[FileOutcome, ...] = ()
    """--config-dir: the files refused for a reason not reported before."""


@dataclass(frozen=True)
class Rejected:
    """The policy cannot be used."""

    error: str
    new: bool
    """False when this same content (or the same read error) was rejected last time."""
    files: tuple[FileOutcome, ...] = ()
    refused: tuple[FileOutcome, ...] = ()


class ConfigWatcher:
    """The file at one path, as the supervisor's config loop sees it."""

    def __init__(
        self,
        path: str,
        options: ParseOptions,
        *,
        read: Callable[[str], bytes | None] = configfile.read,
        identity: Callable[[str], object] = configfile.identity,
    ) -> None:
        self.path = path
        self._options = options
        self._read = read
        self._identity = identity
        self._seen: object = object()  # the identity at the last read: never equal at first
        self._digest: str | None = None  # the content last parsed or refused
        self._rejected: str | None = None  # why it was refused, when it was

    def changed(self) -> bool:
        """Whether the file may have changed since it was last read (a stat, no read)."""
        return self._identity(self.path) != self._seen

    def load(self) -> Loaded | Rejected | None:
        """Read the file; None when its content is the one last loaded."""
        self._seen = self._identity(self.path)
        try:
            data = self._read(self.path)
        except ConfigError as e:
            return self._refuse(f"unreadable: {e}", str(e))
        digest = hashlib.sha256(_MISSING if data is None else data).hexdigest()
        if digest == self._digest:
            if self._rejected is None:
                return None
            return Rejected(self._rejected, new=False)
        try:
            loaded = parse_config(data or b"", self._options)
        except ConfigError as e:
            return self._refuse(digest, str(e))
        self._digest, self._rejected = digest, None
        return Loaded(loaded, missing=data is None)

    def _refuse(self, digest: str, error: str) -> Rejected:
        new = digest != self._digest or self._rejected is None
        self._digest, self._rejected = digest, error
        return Rejected(error, new)


@dataclass
class _File:
    """A file of the directory as last read: its digest, what it parsed to, its good content."""

    digest: str = ""
    current: LoadedConfig | str = ""
    kept: LoadedConfig | None = None
    reported: str = ""
    """The refusal last reported (logged once per distinct reason)."""


@dataclass
class DirectoryWatcher:
    """Every `ip-masq*` regular file of one directory, merged in name order."""

    path: str
    options: ParseOptions
    list_files: Callable[[str, str], list[str] | None] = configfile.config_files
    read: Callable[[str], bytes | None] = configfile.read
    identity: Callable[[str], object] = configfile.identity
    _files: dict[str, _File] = field(default_factory=dict, init=False, repr=False)
    _seen: object = field(default_factory=object, init=False, repr=False)
    """The identities at the last read: never equal at first."""
    _last: Loaded | Rejected | None = field(default=None, init=False, repr=False)

    def changed(self) -> bool:
        """Whether a file may have changed, appeared or gone since the last read (stats only)."""
        return self._identities() != self._seen

    def load(self) -> Loaded | Rejected | None:
        """Read every file; None when no file's content and no file's fate changed."""
        self._seen = self._identities()
        try:
            names = self.list_files(self.path, PREFIX)
        except ConfigError as e:
            return self._settle(Rejected(str(e), new=True))
        fresh = False
        for gone in set(self._files) - set(names or ()):
            del self._files[gone]
            fresh = True
        for name in names or ():
            fresh |= self._read(name)
        if not fresh and isinstance(self._last, Loaded):
            return None
        defaults = default_config(self.options.all_reserved_ranges)
        merged = merge(
            [FileInput(n, f.current, f.kept) for n, f in sorted(self._files.items())], defaults
        )
        refused = []
        for outcome in merged.files:
            file = self._files[outcome.name]
            file.kept = outcome.used
            if outcome.error and outcome.error != file.reported:
                refused.append(outcome)
            file.reported = outcome.error
        if merged.loaded is None:
            error = "; ".join(f"{o.name}: {o.error}" for o in merged.files)
            return self._settle(Rejected(error, bool(refused), merged.files, tuple(refused)))
        missing = names is None or not names
        return self._settle(Loaded(merged.loaded, missing, merged.files, tuple(refused)))

    def _read(self, name: str) -> bool:
        """Read one file; True when its content is new."""
        file = self._files.setdefault(name, _File())
        try:
            data = self.read(os.path.join(self.path, name))
        except ConfigError as e:
            data, error = None, f"unreadable: {e}"
        else:
            error = "" if data is not None else "gone while being read"
        digest = error or hashlib.sha256(data or b"").hexdigest()
        if digest == file.digest:
            return False
        file.digest = digest
        if error:
            file.current = error
        else:
            try:
                file.current = parse_file(data or b"", self.options)
            except ConfigError as e:
                file.current = str(e)
        return True

    def _settle(self, outcome: Loaded | Rejected) -> Loaded | Rejected:
        self._last = outcome
        return outcome

    def _identities(self) -> object:
        try:
            names = self.list_files(self.path, PREFIX)
        except ConfigError as e:
            return str(e)
        return tuple((n, self.identity(os.path.join(self.path, n))) for n in names or ())
