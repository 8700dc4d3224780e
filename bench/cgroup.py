"""CPU time of a process tree from a cgroup of its own: every thread and every child, the ones
that exited included, in nanoseconds (cgroup v1's cpuacct controller).

A process joins before it execs (`CpuAccount.wrap`), so its children are born in it. The
figures run under `ip netns exec`, which gives them a mount namespace of their own with a fresh
/sys and no cgroup hierarchy in it: there the cpuacct hierarchy is mounted again, on a
directory of this mount namespace only (nothing the host sees), and unmounted afterwards.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

_HOST_CPUACCT = Path("/sys/fs/cgroup/cpuacct")
_counter = itertools.count()


class CpuAccount:
    """A cgroup that counts the CPU of whatever joins it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def wrap(self, argv: list[str]) -> list[str]:
        """argv run so that the process joins this cgroup before it execs."""
        procs = self.path / "cgroup.procs"
        return ["sh", "-c", f'echo $$ > {procs} && exec "$@"', "sh", *argv]

    def seconds(self) -> float:
        return int((self.path / "cpuacct.usage").read_text()) / 1e9


@contextlib.contextmanager
def _hierarchy() -> Iterator[Path]:
    if (_HOST_CPUACCT / "cpuacct.usage").exists():
        yield _HOST_CPUACCT
        return
    mountpoint = Path(tempfile.mkdtemp(prefix="mqbench-cpuacct-"))
    try:
        subprocess.run(
            ["mount", "-t", "cgroup", "-o", "cpuacct", "cpuacct", str(mountpoint)],
            check=True,
            capture_output=True,
        )
        try:
            yield mountpoint
        finally:
            subprocess.run(["umount", str(mountpoint)], capture_output=True)
    finally:
        with contextlib.suppress(OSError):
            mountpoint.rmdir()


@contextlib.contextmanager
def account(label: str) -> Iterator[CpuAccount]:
    """A fresh cgroup, removed afterwards (its processes must have ended by then)."""
    with _hierarchy() as root:
        path = root / f"mqbench-{os.getpid()}-{next(_counter)}-{label}"
        path.mkdir()
        try:
            yield CpuAccount(path)
        finally:
            with contextlib.suppress(OSError):
                for pid in (path / "cgroup.procs").read_text().split():
                    (root / "cgroup.procs").write_text(pid)  # a straggler: out, so it can go
            with contextlib.suppress(OSError):
                path.rmdir()
