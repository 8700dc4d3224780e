"""Watching the policy file: a change is noticed by the file's identity (through the kubelet's
`..data` symlink swap too), read, and parsed only when its content is new.

The same bytes parse to the same config, so content already parsed (good or bad) is never
parsed again: a rejected file is reported once per distinct content, and re-reading an
unchanged file every interval costs a read and a digest. The file functions are injected for
tests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from masqd.core.config import LoadedConfig, ParseOptions, parse_config
from masqd.core.errors import ConfigError
from masqd.host import configfile

_MISSING = b"\0missing"  # no file: its own content, distinct from an empty file's digest


@dataclass(frozen=True)
class Loaded:
    """The file holds a valid config (the same as before, or not: the caller compares)."""

    loaded: LoadedConfig
    missing: bool = False
    """No file at the path: the config is all defaults."""


@dataclass(frozen=True)
class Rejected:
    """The file cannot be used."""

    error: str
    new: bool
    """False when this same content (or the same read error) was rejected last time."""


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
