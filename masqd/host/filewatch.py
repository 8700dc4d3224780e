"""Being told when the config file may have changed (inotify), instead of looking twice a second.

The kubelet updates a ConfigMap volume by renaming a fresh `..data` symlink over the old one in
the volume's directory, and an editor saves by renaming a new file over the old: both are
events in the directory that holds the path. A file reached through symlinks can also change in
the directory of its real path, so that one is watched too, and the watches follow the
symlinks again after every event. What inotify cannot see (a directory that does not exist
yet, a bind mount replaced underneath) the caller still catches with a slow poll.
"""

from __future__ import annotations

import contextlib
import ctypes
import os

# <sys/inotify.h>
IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
_MASK = (
    IN_MODIFY
    | IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
)

try:
    _libc: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:
    _libc = None


class FileWatch:
    """Readable (`fileno`) when the file at `path` may have changed; `None`-like when inotify
    is not there (`active` is False: poll instead)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = -1
        init = getattr(_libc, "inotify_init1", None)
        if init is not None:
            fd = init(IN_NONBLOCK | IN_CLOEXEC)
            self._fd = fd if fd >= 0 else -1
        self.rearm()

    @property
    def active(self) -> bool:
        """Whether some directory of the path is watched."""
        return self._fd >= 0 and self._watched

    def fileno(self) -> int:
        return self._fd

    def rearm(self) -> None:
        """Watch the directories of the path and of its real path, as they are now."""
        self._watched = False
        if self._fd < 0 or _libc is None:
            return
        directories = {os.path.dirname(os.path.abspath(self.path))}
        directories.add(os.path.dirname(os.path.realpath(self.path)))
        for directory in directories:
            if _libc.inotify_add_watch(self._fd, os.fsencode(directory), _MASK) >= 0:
                self._watched = True

    def drain(self) -> None:
        """Forget the events read so far (which ones does not matter: the caller looks)."""
        if self._fd < 0:
            return
        with contextlib.suppress(BlockingIOError):
            while os.read(self._fd, 65536):
                pass

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
