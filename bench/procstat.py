"""What a process tree costs, read from /proc: memory (smaps_rollup) and CPU time (stat)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Literal

MiB = 1024 * 1024
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcessMemory:
    pid: int
    role: str
    pss: float
    """Proportional set size, MiB: shared pages divided among the processes sharing them."""
    rss: float
    uss: float
    """Private pages only, MiB: what ending this process would give back."""


@dataclass(frozen=True)
class TreeMemory:
    processes: list[ProcessMemory]

    def total(self, field: Literal["pss", "rss", "uss"]) -> float:
        return sum(getattr(p, field) for p in self.processes)


def descendants(pid: int) -> list[int]:
    """pid and every process below it, parents first."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = _stat_fields(int(entry))[1]
        except OSError:
            continue
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop(0)
        tree.append(current)
        todo += sorted(children.get(current, []))
    return tree


def memory(pid: int, role: str) -> ProcessMemory:
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                fields[parts[0].rstrip(":")] = int(parts[1]) * 1024
    uss = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return ProcessMemory(pid, role, fields["Pss"] / MiB, fields["Rss"] / MiB, uss / MiB)


def tree_memory(root: int) -> TreeMemory:
    return TreeMemory([memory(pid, _role(pid, root)) for pid in descendants(root)])


def bare_python_memory(settle: float = 1.0) -> ProcessMemory:
    """The baseline: `python3 -c 'import time; time.sleep(60)'`, measured now."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(settle)
        return memory(proc.pid, "bare python")
    finally:
        proc.kill()
        proc.wait()


def tree_cpu(root: int) -> float:
    """CPU seconds (user + system) used by the tree so far, with every child it reaped.

    cutime/cstime of a process hold the times of its children that it has waited for, so the
    iptables commands a worker ran (and reaped) are in the worker's figure, and a worker that
    exited and was reaped is in the supervisor's. The difference of two readings is the CPU
    the whole tree spent in between.
    """
    total = 0
    for pid in descendants(root):
        try:
            fields = _stat_fields(pid)
        except OSError:
            continue  # exited in between; its parent's cutime has it once it is reaped
        total += sum(fields[11:15])  # utime, stime, cutime, cstime
    return total / _TICK


def masqd_cpu(workers: list[int]) -> float:
    """CPU seconds used so far by an in-process masqd: this process's own threads (not the
    children it reaped, such as a burst's client process) and each worker's tree."""
    own = sum(_stat_fields(os.getpid())[11:13]) / _TICK
    return own + sum(tree_cpu(pid) for pid in workers if pid)


def _stat_fields(pid: int) -> list[int]:
    """/proc/PID/stat after the command name, as ints where numeric: [state, ppid, ...]."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    rest = text[text.rindex(")") + 2 :].split()
    return [int(x) if x.lstrip("-").isdigit() else 0 for x in rest]


def _role(pid: int, root: int) -> str:
    if pid == root:
        return "supervisor"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"
    if "resource_tracker" in cmdline:
        return "multiprocessing resource tracker"
    if "spawn_main" in cmdline:
        return "worker (spawned)"
    if "-m masqd" in cmdline:
        return "worker (forked)"
    return cmdline[:60]
