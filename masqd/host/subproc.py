"""Talking to a child process by a deadline, without Popen.communicate's wait for the exit.

`Popen.communicate(timeout=...)` (and `subprocess.run(timeout=...)`) waits for the exit by
polling in sleeps of 1, 2, 4 ... ms. An iptables command closes its pipes a moment before it
can be reaped, so nearly every call slept a whole millisecond, a large share of a small
restore. Here the exit is awaited on a pidfd (Linux 5.3), which wakes at the exit itself.
"""

from __future__ import annotations

import os
import select
import selectors
import subprocess
import time

_CHUNK = 1 << 16


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
