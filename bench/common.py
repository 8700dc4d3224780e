"""What every figure shares: timing statistics, result rows, iptables and nft in the namespace.

A figure runs in a process of its own inside a namespace (see bench.netns); it reports its rows
as one JSON document on stdout, which the driver (bench.__main__) collects into the table.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from masqd.core.rules import jump_rule

CHAIN = "IP-MASQ-AGENT"
RESULT_MARKER = "BENCH-RESULT "
NAMESPACE_PREFIX = "mqbench"


@dataclass(frozen=True)
class Stats:
    """Median, min and max of several rounds, in one unit."""

    median: float
    min: float
    max: float
    n: int
    unit: str = "s"

    @classmethod
    def of(cls, samples: Sequence[float], unit: str = "s") -> Stats:
        if not samples:
            raise ValueError("no samples")
        return cls(statistics.median(samples), min(samples), max(samples), len(samples), unit)


@dataclass
class Row:
    """One line of the table: a figure on one backend, its baseline, the goal and the verdict."""

    figure: str
    backend: str
    value: Stats
    goal: str
    met: bool | None
    """None: shown for information, no goal."""
    baseline: Stats | None = None
    ratio: float | None = None
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Row:
        data = dict(data)
        data["value"] = Stats(**data["value"])
        if data.get("baseline") is not None:
            data["baseline"] = Stats(**data["baseline"])
        return cls(**data)


@dataclass
class Report:
    """The rows a figure process hands back, plus details worth printing below the table."""

    rows: list[Row] = field(default_factory=list)
    details: list[str] = field(default_factory=list)

    def emit(self) -> None:
        doc = {"rows": [r.to_json() for r in self.rows], "details": self.details}
        print(RESULT_MARKER + json.dumps(doc), flush=True)

    @classmethod
    def parse(cls, stdout: str) -> Report:
        for line in reversed(stdout.splitlines()):
            if line.startswith(RESULT_MARKER):
                doc = json.loads(line[len(RESULT_MARKER) :])
                return cls([Row.from_json(r) for r in doc["rows"]], doc["details"])
        raise ValueError("the figure printed no result")


def ratio_row(
    figure: str, backend: str, value: Sequence[float], baseline: Sequence[float], limit: float
) -> Row:
    """A row whose goal is median(value) <= limit x median(baseline)."""
    v, b = Stats.of(value), Stats.of(baseline)
    ratio = v.median / b.median
    return Row(figure, backend, v, f"<= {limit:g}x", ratio <= limit, b, ratio)


def info_row(
    figure: str, backend: str, value: Sequence[float], baseline: Sequence[float], note: str = ""
) -> Row:
    """A row shown for information: the ratio of the medians, no goal."""
    v, b = Stats.of(value), Stats.of(baseline)
    return Row(figure, backend, v, "info", None, b, v.median / b.median, note)


IDLE_PAUSE = 0.05
"""How long the bench sleeps before an 'after idle' baseline (see bench/README.md)."""


def timed(action: Callable[[], object]) -> float:
    """Seconds action took (wall clock, perf_counter)."""
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


# -- iptables in the current namespace (figure processes run inside their namespace) ----------


def tool(mode: str, family: int = 4, action: str = "") -> str:
    base = "iptables" if family == 4 else "ip6tables"
    return f"{base}-{mode}-{action}" if action else f"{base}-{mode}"


def run(argv: Sequence[str], stdin: str | None = None, *, check: bool = True) -> str:
    # No timeout here: with one, subprocess polls for the exit in 1 ms sleeps, which would
    # inflate every baseline. The driver bounds each figure's process as a whole.
    proc = subprocess.run(list(argv), input=stdin, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def save_nat(mode: str, family: int = 4) -> str:
    return run([tool(mode, family, "save"), "-t", "nat"])


def restore(mode: str, text: str, family: int = 4) -> None:
    run([tool(mode, family, "restore"), "--noflush", "-w", "5"], text)


def nft_apply(text: str) -> None:
    """A bare `nft -f -` of text, started on the spot."""
    run(["nft", "-f", "-"], text)


def nft_list(table: str = "ip masqd") -> str:
    """A bare `nft list table`: the least an agent that reads with nft must do."""
    return run(["nft", "list", "table", *table.split()])


def flush_chain(mode: str, family: int = 4) -> None:
    """Someone else flushes our chain: the next sync has to rewrite it."""
    run([tool(mode, family), "-w", "5", "-t", "nat", "-F", CHAIN])


def tamper_first_rule(mode: str, family: int = 4) -> None:
    """Someone else replaces rule 1 of our chain: the chain keeps its size but differs."""
    run([tool(mode, family), "-w", "5", "-t", "nat", "-R", CHAIN, "1", "-d", "192.0.2.99/32"])


def chain_rules(save_text: str) -> list[str]:
    prefix = f"-A {CHAIN} "
    return [line for line in save_text.splitlines() if line.startswith(prefix)]


def upstream_sync(mode: str, text: str) -> None:
    """What upstream ip-masq-agent runs per sync: -N (fails, ignored), -C of the jump, restore."""
    ipt = tool(mode)
    run([ipt, "-w", "5", "-t", "nat", "-N", CHAIN], check=False)
    jump = shlex.split(jump_rule(CHAIN))[2:]  # without "-A POSTROUTING"
    present = subprocess.run(
        [ipt, "-w", "5", "-t", "nat", "-C", "POSTROUTING", *jump], capture_output=True
    )
    if present.returncode != 0:
        run([ipt, "-w", "5", "-t", "nat", "-A", "POSTROUTING", *jump])
    restore(mode, text)


def percentile(samples: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100), nearest rank."""
    ordered = sorted(samples)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def interleaved(
    rounds: int,
    actions: Sequence[Callable[[], object]],
    prepare: Callable[[], object] | None = None,
    warmup: int = 2,
) -> list[list[float]]:
    """Time each action once per round, in alternating order, each after prepare().

    Alternating the order spreads slow drifts of a shared machine over both sides; the first
    warmup rounds (cold caches, first connection) are dropped.
    """
    samples: list[list[float]] = [[] for _ in actions]
    for i in range(warmup + rounds):
        order = list(range(len(actions)))
        if i % 2:
            order.reverse()
        for k in order:
            if prepare is not None:
                prepare()
            t = timed(actions[k])
            if i >= warmup:
                samples[k].append(t)
    return samples


def require_own_namespace() -> None:
    """Refuse to run a figure outside a namespace the bench created: it writes iptables rules."""
    name = subprocess.run(
        ["ip", "netns", "identify", str(os.getpid())], capture_output=True, text=True, timeout=10
    ).stdout.strip()
    if not name.startswith(NAMESPACE_PREFIX):
        raise SystemExit("bench figures write iptables rules; run them through `python -m bench`")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """End a child the bench started: SIGTERM, and SIGKILL if it is not gone within 10 s."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
