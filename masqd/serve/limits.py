"""What the control API lets its clients hold, and telling when they hold it all.

gRPC core enforces the caps (the channel arguments below): connections beyond
MAX_CONNECTIONS are closed on arrival, a connection that has not finished its HTTP/2 handshake
within HANDSHAKE_TIMEOUT is closed (garbage, or a client that connected and said nothing), one
with no call for IDLE_TIMEOUT gets a GOAWAY (a real client reconnects on its next call), and a
connection carries at most MAX_STREAMS calls at once (more are refused, UNAVAILABLE: gRPC
shares one connection among a process's channels to one socket, so this bounds one client
process's burst, which must let the 500 in flight of bench figure 4 through, and 2,000). gRPC
says nothing when a cap is reached, so `ConnectionWatch` counts the connections to our socket
now and then (the kernel lists each accepted one under the socket's path in /proc/net/unix)
and logs when the cap is reached.
"""

from __future__ import annotations

import logging

log = logging.getLogger("masqd.server")

MAX_CONNECTIONS = 256
"""Control connections open at once (masqctl, a masq-cni per pod being started)."""
MAX_STREAMS = 4096
"""Calls at once on one connection: twice the 2,000-call bursts of issue 17's abuse run, which
one process's channels all send on one connection."""
HANDSHAKE_TIMEOUT = 10.0
"""Seconds a connection may take to start speaking HTTP/2 (longer than two of the server's
looks, so a cap held by silent connections is seen and logged)."""
IDLE_TIMEOUT = 60.0
"""Seconds a connection may go without a call before it is asked to go away."""
SERVER_OPTIONS = [
    ("grpc.max_allowed_incoming_connections", MAX_CONNECTIONS),
    ("grpc.max_concurrent_streams", MAX_STREAMS),
    ("grpc.server_handshake_timeout_ms", int(HANDSHAKE_TIMEOUT * 1000)),
    ("grpc.max_connection_idle_ms", int(IDLE_TIMEOUT * 1000)),
]
_ACCEPTING = 0x10000  # __SO_ACCEPTCON in /proc/net/unix's Flags: the listening socket itself


def count_connections(path: str, table: str = "/proc/net/unix") -> int:
    """Connections accepted on the unix socket bound at path (the listener not counted)."""
    count = 0
    with open(table) as f:
        next(f, None)  # Num RefCount Protocol Flags Type St Inode Path
        for line in f:
            fields = line.split()
            if len(fields) >= 8 and fields[7] == path and not int(fields[3], 16) & _ACCEPTING:
                count += 1
    return count


class ConnectionWatch:
    """Logs once when the control connections reach the cap, and once when they fall back."""

    def __init__(self, path: str, cap: int = MAX_CONNECTIONS) -> None:
        self.path = path
        self.cap = cap
        self._full = False

    def look(self) -> int:
        try:
            count = count_connections(self.path)
        except OSError as e:  # out of descriptors itself, say: look again next time
            log.debug("cannot count control connections: %s", e)
            return -1
        # gRPC's own count runs a connection or two ahead of the kernel's list (one being
        # closed still counts), so the cap shows here as "nearly".
        if count >= self.cap - self.cap // 50 and not self._full:
            log.warning(
                "%d control connections are open, at the most served at once (%d): new ones "
                "are closed until some end",
                count,
                self.cap,
            )
            self._full = True
        elif self._full and count < self.cap // 2:
            log.info("control connections are below the cap again (%d open)", count)
            self._full = False
        return count
