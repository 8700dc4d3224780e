"""Running the node's tools (iptables, nft) by a deadline, without Popen.communicate's wait.

`Popen.communicate(timeout=...)` (and `subprocess.run(timeout=...)`) waits for the exit by
polling in sleeps of 1, 2, 4 ... ms. An iptables command closes its pipes a moment before it
can be reaped, so nearly every call slept a whole millisecond, a large share of a small
restore. Here the exit is awaited on a pidfd (Linux 5.3), which wakes at the exit itself.

Only host/iptables.py and host/nftables.py use this module: they say which tool runs; this
one starts it, feeds it, and turns a failure into an ApplyError of the right kind.
"""

from __future__ import annotations

import os
import select
import selectors
import subprocess
import time
from collections.abc import Callable

from masqd.core.errors import ApplyError, Kind

_CHUNK = 1 << 16


def start(argv: list[str]) -> subprocess.Popen[bytes]:
    """Start argv with three pipes; ApplyError (MISSING) when the tool is not installed."""
    try:
        return subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except FileNotFoundError as e:
        raise ApplyError(f"{argv[0]} is not installed", Kind.MISSING) from e


def finish(
    proc: subprocess.Popen[bytes],
    argv: list[str],
    stdin: str | None,
    timeout: float,
    refused: Callable[[str], Kind] = lambda stderr: Kind.REJECTED,
) -> subprocess.CompletedProcess[str]:
    """Feed proc (started with argv) its stdin, wait for its exit, and classify a failure:
    TIMEOUT past the deadline (proc is killed), else a non-zero exit of the kind `refused`
    finds in its stderr."""
    try:
        out, err = exchange(proc, (stdin or "").encode(), timeout)
    except subprocess.TimeoutExpired as e:
        kill(proc)
        raise ApplyError(f"{argv[0]} did not finish within {timeout:g}s", Kind.TIMEOUT) from e
    stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
    if proc.returncode != 0:
        stderr = stderr.strip()
        raise ApplyError(
            f"{' '.join(argv)} exited {proc.returncode}: {stderr or '(no message)'}",
            refused(stderr),
            stderr=stderr,
        )
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


def run(argv: list[str], stdin: str | None, timeout: float) -> subprocess.CompletedProcess[str]:
    """start + finish, a refusal classified as REJECTED."""
    return finish(start(argv), argv, stdin, timeout)


def ready_or_new(ready: subprocess.Popen[bytes] | None, argv: list[str]) -> subprocess.Popen[bytes]:
    """The process started ahead with argv, if it still waits; else a new one (a waiting one
    started otherwise, or dead, is discarded)."""
    if ready is not None and (ready.args != argv or ready.poll() is not None):
        discard(ready)
        ready = None
    return ready or start(argv)


def kept_ready(
    ready: subprocess.Popen[bytes] | None, argv: list[str]
) -> subprocess.Popen[bytes] | None:
    """The process to keep waiting for the next write: `ready` while it still waits, else a
    new one of argv (None when the tool is not installed: the write will say so)."""
    if ready is not None:
        if ready.poll() is None:
            return ready
        discard(ready)  # died waiting (killed by someone): reap it, start another
    try:
        return start(argv)
    except ApplyError:
        return None


def discard(proc: subprocess.Popen[bytes]) -> None:
    """Close a waiting process's stdin and reap it; kill it if it does not go. A tool that
    reads all its input before it acts exits on the empty input having done nothing."""
    try:
        exchange(proc, b"", timeout=1.0)
    except subprocess.TimeoutExpired:
        kill(proc)


def exchange(proc: subprocess.Popen[bytes], data: bytes, timeout: float) -> tuple[bytes, bytes]:
    """Write data to proc's stdin and close it, read its stdout and stderr to the end, and
    reap it; all within timeout seconds, else subprocess.TimeoutExpired (proc left running).

    proc must have been started with stdin, stdout and stderr as pipes.
    """
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    deadline = time.monotonic() + timeout
    output: dict[int, list[bytes]] = {proc.stdout.fileno(): [], proc.stderr.fileno(): []}
    pending = memoryview(data)
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        selector.register(proc.stderr, selectors.EVENT_READ)
        if pending:
            # Non-blocking, so a full pipe never stalls the loop that drains its output.
            os.set_blocking(proc.stdin.fileno(), False)
            selector.register(proc.stdin, selectors.EVENT_WRITE)
        else:
            proc.stdin.close()
        while selector.get_map():
            ready = selector.select(_left(deadline))
            if not ready:
                raise subprocess.TimeoutExpired(proc.args, timeout)
            for key, _ in ready:
                if key.fileobj is proc.stdin:
                    try:
                        pending = pending[os.write(key.fd, pending[:_CHUNK]) :]
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:
                        pending = pending[:0]  # it exited early; stderr says why
                    if not pending:
                        selector.unregister(proc.stdin)
                        proc.stdin.close()
                    continue
                chunk = os.read(key.fd, _CHUNK)
                if chunk:
                    output[key.fd].append(chunk)
                else:
                    selector.unregister(key.fileobj)
    _wait_exit(proc, deadline, timeout)
    stdout, stderr = (b"".join(output[f.fileno()]) for f in (proc.stdout, proc.stderr))
    proc.stdout.close()
    proc.stderr.close()
    return stdout, stderr


def kill(proc: subprocess.Popen[bytes]) -> None:
    """End proc for good (after a timeout): kill, reap, and close our ends of its pipes."""
    proc.kill()
    proc.wait()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def _wait_exit(proc: subprocess.Popen[bytes], deadline: float, timeout: float) -> None:
    """Reap proc by the deadline; its pidfd becomes readable when it exits."""
    if proc.poll() is not None:  # reaped already: its pid may belong to another process now
        return
    try:
        pidfd = os.pidfd_open(proc.pid)
    except OSError:  # a kernel before 5.3: Popen's polling wait
        proc.wait(_left(deadline))
        return
    try:
        exited, _, _ = select.select([pidfd], [], [], _left(deadline))
    finally:
        os.close(pidfd)
    if not exited:
        raise subprocess.TimeoutExpired(proc.args, timeout)
    proc.wait()


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())
