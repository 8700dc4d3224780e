"""masqd.host.subproc.exchange: stdin in, stdout and stderr out, the exit reaped, by a deadline."""

from __future__ import annotations

import subprocess
import time

import pytest

from masqd.host import subproc


def start(*argv: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def test_input_larger_than_a_pipe_goes_through_while_output_is_drained() -> None:
    """4 MiB through `cat`: writing all of it before reading any would deadlock on the pipes."""
    data = bytes(range(256)) * (4 * 4096)
    proc = start("cat")
    out, err = subproc.exchange(proc, data, timeout=30)
    assert out == data and err == b""
    assert proc.returncode == 0


def test_child_that_exits_without_reading_its_input_is_reported() -> None:
    """A child that refuses its input (as iptables-restore does at a bad line) breaks the pipe;
    its message and exit code still come back."""
    proc = start("sh", "-c", "echo refused >&2; exit 3")
    out, err = subproc.exchange(proc, b"x" * (1 << 20), timeout=30)
    assert (out, err, proc.returncode) == (b"", b"refused\n", 3)


def test_no_input_closes_stdin_at_once() -> None:
    """Without data the child sees end of input right away (iptables-save never waits)."""
    proc = start("sh", "-c", "cat; echo done")
    assert subproc.exchange(proc, b"", timeout=30) == (b"done\n", b"")


@pytest.mark.parametrize(
    "script",
    [
        "sleep 5",  # hangs with its pipes open
        "exec >&- 2>&-; sleep 5",  # closed its pipes but has not exited: the wait keeps time
    ],
)
def test_deadline_holds_and_kill_reaps(script: str) -> None:
    """Past the timeout exchange raises TimeoutExpired, also while waiting for the exit; kill()
    then ends and reaps the child."""
    proc = start("sh", "-c", script)
    began = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        subproc.exchange(proc, b"", timeout=0.3)
    assert time.monotonic() - began < 4  # not the child's 5 s
    subproc.kill(proc)
    assert proc.returncode is not None
