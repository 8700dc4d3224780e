"""The config on disk: reading a file safely, listing a config directory, and noticing when they
change (incl. the kubelet's ..data swaps)."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from masqd.core.errors import ConfigError

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
    except OSError as e:
        # Unreadable: the reason is part of the identity, so one broken state replacing
        # another is noticed too, and read() explains it.
        return FileIdentity(f"{os.path.realpath(path)}: {e.strerror}", -1, -1, -1, e.errno or -1)
    return FileIdentity(real, st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)


def config_files(directory: str, prefix: str) -> list[str] | None:
    """The names of the regular files (through symlinks) in directory that start with prefix,
    sorted; None when the directory does not exist. A projected volume's `..data` and its
    timestamped directories start with '..', so only the file links themselves are seen."""
    try:
        entries = os.listdir(directory)
    except FileNotFoundError:
        return None
    except NotADirectoryError as e:
        raise ConfigError(f"{directory} is not a directory") from e
    except OSError as e:
        raise ConfigError(f"cannot list {directory}: {e.strerror}") from e
    names = []
    for name in sorted(e for e in entries if e.startswith(prefix)):
        try:
            if stat.S_ISREG(os.stat(os.path.join(directory, name)).st_mode):
                names.append(name)
        except OSError:
            continue  # gone, or a dangling link in the middle of a swap
    return names


def read(path: str, max_bytes: int = MAX_CONFIG_BYTES) -> bytes | None:
    """The file's bytes, None when it does not exist; ConfigError when it cannot be used."""
    try:
        # O_NONBLOCK: a FIFO at the path must not stall the config loop forever.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from e
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise ConfigError(f"{path} is {kind}, not a config file")
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read(max_bytes + 1)
        except OSError as e:
            raise ConfigError(f"cannot read {path}: {e.strerror}") from e
    if len(data) > max_bytes:
        raise ConfigError(f"{path} is larger than {max_bytes} bytes; refusing to parse it")
    return data
