"""Claiming the control socket's path: one masqd per socket, a stale file replaced.

No gRPC here: masqd claims the socket before it forks its workers and before it imports gRPC,
so a second masqd refuses at once, having started nothing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket

log = logging.getLogger("masqd.socketfile")


class SocketInUse(RuntimeError):
    """Another masqd serves on the socket; we must not take it over."""


def claim_socket(path: str) -> int:
    """Make way for our socket: refuse if another masqd serves there, remove a stale file.

    Returns the descriptor of `<path>.lock`, flock-ed for the life of the server: two masqds
    starting at once cannot both pass the check, and a killed masqd's lock goes with it.
    """
    os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    lock = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.path.exists(path):
            _remove_stale(path)
    except BlockingIOError:
        os.close(lock)
        raise SocketInUse(f"another masqd is serving on {path}; refusing to take it over") from None
    except BaseException:
        os.close(lock)
        raise
    return lock


def _remove_stale(path: str) -> None:
    """Remove a socket nobody answers on; refuse one that answers (a server without our lock)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except OSError as e:
        if e.errno not in (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK):
            raise
        log.info("removing stale socket %s", path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    finally:
        probe.close()
    raise SocketInUse(f"something is serving on {path}; refusing to take it over")
