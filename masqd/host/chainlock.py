"""One masqd per chain (and, on the nftables backend, per table) per network namespace.

Two masqds on different control sockets in one network namespace would each rewrite the same
chain to their own config, for ever. The claim is a listening unix socket in the abstract
namespace, named for the network namespace (its inode) and the chain: abstract names belong
to the network namespace, so the claim is exactly as wide as the chain's table; the kernel
drops it the moment its holder dies, so no stale lock is ever left behind; and a second masqd
can ask the kernel who holds it (SO_PEERCRED on a connection) to name it in its refusal.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct


class ChainInUse(RuntimeError):
    """Another masqd manages this chain in this network namespace."""


def claim(chain: str) -> socket.socket:
    """Hold the claim on chain for as long as the returned socket is open; ChainInUse when
    another process holds it."""
    return _claim("chain", chain)


def claim_table(table: str) -> socket.socket:
    """The same for our nftables table (the nftables backend)."""
    return _claim("table", table)


def held(chain: str) -> bool:
    """Whether a masqd running now holds the claim on chain in this network namespace (a
    connection attempt: nothing is bound, nothing is left behind)."""
    return _held("chain", chain)


def held_table(table: str) -> bool:
    return _held("table", table)


def _claim(kind: str, what: str) -> socket.socket:
    netns, name = _name(kind, what)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.bind(name)
        sock.listen(16)
    except OSError as e:
        sock.close()
        if e.errno != errno.EADDRINUSE:
            raise
        raise ChainInUse(
            f"another masqd ({_holder(name)}) already manages {kind} {what} in this network "
            f"namespace (net:[{netns}]); refusing to start a second one"
        ) from None
    return sock


def _held(kind: str, what: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        probe.setblocking(False)
        probe.connect(_name(kind, what)[1])
    except BlockingIOError:
        return True  # a full backlog: someone listens
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _name(kind: str, what: str) -> tuple[int, str]:
    """The network namespace's inode and the claim's abstract name in it."""
    netns = os.stat("/proc/self/ns/net").st_ino
    return netns, f"\0masqd/netns:{netns}/{kind}:{what}"


def _holder(name: str) -> str:
    """Who listens on the abstract name: its pid and command line, as far as we can see."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        probe.setblocking(False)  # a full backlog must not stall the refusal
        probe.connect(name)
        creds = probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid = struct.unpack("3i", creds)[0]
    except OSError:
        return "pid unknown"
    finally:
        probe.close()
    if not pid:  # in a pid namespace we cannot see into
        return "pid unknown"
    with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as f:
        argv = f.read().rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
        return f"pid {pid}: {argv[:200]}"
    return f"pid {pid}"
