"""The config file on disk: reading it safely and noticing when it changes (incl. ..data swaps)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from masqd.config import ConfigError

MAX_CONFIG_BYTES = 1 << 20


@dataclass(frozen=True)
class FileIdentity:
    """What changes when the file's content may have changed, without reading it."""

    real_path: str
    inode: int
    device: int
    size: int
    mtime_ns: int


def identity(path: str) -> FileIdentity | None:
    """The file's identity through any symlinks (kubelet swaps `..data`), None if it is absent."""
    try:
        st = os.stat(path)
        real = os.path.realpath(path)
    except FileNotFoundError:
        return None
    except OSError:
        # Unreadable in some other way: report a distinct identity so read() explains why.
        return FileIdentity(path, -1, -1, -1, -1)
    return FileIdentity(real, st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)


def read(path: str, max_bytes: int = MAX_CONFIG_BYTES) -> bytes | None:
    """The file's bytes, None when it does not exist; ConfigError when it cannot be used."""
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        return None
    except IsADirectoryError as e:
        raise ConfigError(f"{path} is a directory, not a config file") from e
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from e
    if len(data) > max_bytes:
        raise ConfigError(f"{path} is larger than {max_bytes} bytes; refusing to parse it")
    return data
