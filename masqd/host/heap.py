"""The C heap's share of masqd's memory: fewer malloc arenas, and freed memory handed back.

glibc gives every thread that allocates an arena of its own (up to 8 per core); gRPC's threads
would each keep one, mostly empty. Memory freed after a burst of requests stays in the heap,
counted in the process's memory, until malloc_trim returns its pages to the kernel. Both
calls are glibc's; elsewhere (musl) they are skipped.
"""

from __future__ import annotations

import ctypes

M_ARENA_MAX = -8  # glibc's malloc.h

try:
    _libc: ctypes.CDLL | None = ctypes.CDLL(None)
except OSError:
    _libc = None


def limit_arenas(count: int) -> None:
    """Let at most count malloc arenas exist (before threads start, so they share them)."""
    mallopt = getattr(_libc, "mallopt", None)
    if mallopt is not None:
        mallopt(M_ARENA_MAX, count)


def trim() -> None:
    """Return the heap's free pages to the kernel."""
    malloc_trim = getattr(_libc, "malloc_trim", None)
    if malloc_trim is not None:
        malloc_trim(0)
