"""Figures 5-8: a real masqd daemon (`python -m masqd`) as a child of this process.

Run by the driver inside a fresh namespace: `python -m bench.daemon FIGURE --mode nft|legacy`.
masqd reads a ConfigMap-style directory (kubelet's `..data` symlink layout), serves its API on
a socket in a temporary directory, and writes only this namespace's nat table.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from bench import procstat
from bench.common import (
    CHAIN,
    Report,
    Row,
    Stats,
    chain_rules,
    flush_chain,
    require_own_namespace,
    restore,
    save_nat,
    stop,
)

CONFIG_KEY = "ip-masq-agent"
BASE_CIDRS = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"]

T = TypeVar("T")


class ConfigMapVolume:
    """A directory laid out as kubelet mounts a ConfigMap, updated as kubelet updates it.

    dir/ip-masq-agent -> ..data/ip-masq-agent, ..data -> ..<timestamp>/; an update writes a new
    timestamped directory and renames a fresh `..data` symlink over the old one (atomic).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._n = 0
        root.mkdir()
        (root / CONFIG_KEY).symlink_to(f"..data/{CONFIG_KEY}")

    @property
    def path(self) -> str:
        return str(self.root / CONFIG_KEY)

    def write(self, text: str) -> None:
        self._n += 1
        version = f"..2026_01_01_00_00_{self._n:02d}.{os.getpid()}"
        (self.root / version).mkdir()
        (self.root / version / CONFIG_KEY).write_text(text)
        old = os.readlink(self.root / "..data") if (self.root / "..data").exists() else None
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(version)
        os.rename(tmp, self.root / "..data")
        if old is not None:
            shutil.rmtree(self.root / old)


def config_text(extra_cidrs: list[str], interval: str = "60s") -> str:
    cidrs = ", ".join(BASE_CIDRS + extra_cidrs)
    return f"nonMasqueradeCIDRs: [{cidrs}]\nmasqOutBound: true\nresyncInterval: {interval}\n"


@contextmanager
def masqd(mode: str, volume: ConfigMapVolume, *flags: str) -> Iterator[subprocess.Popen[bytes]]:
    """A masqd child process reading volume, with a socket of its own, in sync; stopped after."""
    with tempfile.TemporaryDirectory(prefix="masqd-bench-") as tmp:
        work = Path(tmp)
        argv = [sys.executable, "-m", "masqd", "--config", volume.path]
        argv += ["--socket", str(work / "masqd.sock"), "--iptables-mode", mode]
        argv += ["--metrics-address", "", *flags]
        with open(work / "masqd.log", "wb") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
            try:
                # The rules come first, the API a moment later (masqd.daemon's start order).
                _wait_for(lambda: _in_sync(mode) and (work / "masqd.sock").exists(), 20, proc, work)
                yield proc
            finally:
                stop(proc)


@contextmanager
def volume_with(text: str) -> Iterator[ConfigMapVolume]:
    with tempfile.TemporaryDirectory(prefix="masqd-bench-cm-") as tmp:
        volume = ConfigMapVolume(Path(tmp) / "cm")
        volume.write(text)
        yield volume


def _in_sync(mode: str) -> bool:
    return all(chain_rules(save_nat(mode, family)) for family in (4, 6))


def _wait_for(
    condition: Callable[[], T], timeout: float, proc: subprocess.Popen[bytes], work: Path
) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"masqd exited {proc.returncode}:\n{_log(work)}")
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise RuntimeError(f"masqd: condition not met within {timeout:g}s:\n{_log(work)}")


def _log(work: Path) -> str:
    return (work / "masqd.log").read_text(errors="replace")[-3000:]


def _poll_kernel(mode: str, seen: Callable[[str], bool], interval: float, timeout: float) -> float:
    """Seconds until `iptables-save -t nat` shows what seen() looks for (inf on timeout)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if seen(save_nat(mode)):
            return time.monotonic() - start
        time.sleep(interval)
    return float("inf")


def figure5(mode: str, rounds: int, report: Report) -> None:
    """Config file changed (kubelet `..data` swap) -> the new rule in the kernel."""
    samples = []
    with volume_with(config_text([])) as volume, masqd(mode, volume):
        for i in range(rounds):
            time.sleep(random.uniform(0.2, 0.8))  # no phase lock with masqd's look at the file
            cidr = f"198.18.{i}.0/24"
            volume.write(config_text([cidr]))
            samples.append(_poll_kernel(mode, lambda text, c=cidr: f"-d {c} " in text, 0.01, 10))
    value = Stats.of(samples)
    report.rows.append(
        Row("5 config change -> kernel: p50", mode, value, "<= 1 s", value.median <= 1.0)
    )
    report.rows.append(
        Row(
            "5 config change -> kernel: max",
            mode,
            Stats(value.max, value.min, value.max, value.n),
            "<= 2 s",
            value.max <= 2.0,
        )
    )


def figure6(mode: str, rounds: int, report: Report) -> None:
    """Our chain flushed by someone else -> repaired, without waiting for resyncInterval."""
    samples = []
    with volume_with(config_text([])) as volume, masqd(mode, volume):
        expected = len(chain_rules(save_nat(mode)))
        for _ in range(rounds):
            time.sleep(random.uniform(0.0, 2.0))  # no phase lock with the drift check
            flush_chain(mode)
            samples.append(
                _poll_kernel(mode, lambda text: len(chain_rules(text)) == expected, 0.05, 30)
            )
    value = Stats.of(samples)
    report.rows.append(Row("6 chain flushed -> repaired", mode, value, "<= 10 s", value.max <= 10))


def figure7(mode: str, rounds: int, report: Report) -> None:
    """Memory of masqd (supervisor, workers, their waiting restores) 5 s after start and idle
    after 100 syncs, vs a bare python."""
    from bench.client import resync_many

    with volume_with(config_text([])) as volume, masqd(mode, volume) as proc:
        time.sleep(5.0)
        started = procstat.tree_memory(proc.pid)
        socket = _socket_of(proc)
        resync_many(socket, 100, before_each=lambda: flush_chain(mode))
        time.sleep(3.0)
        synced = procstat.tree_memory(proc.pid)
    bare = procstat.bare_python_memory()
    for when, tree, limit in (("5 s after start", started, 24.4), ("after 100 syncs", synced, 33)):
        pss = tree.total("pss")
        rows = (  # kind, ours, the bare python's, goal, met, note
            ("PSS", pss, bare.pss, f"<= {limit:g} MiB", pss <= limit,
             f"{len(tree.processes)} processes; baseline: a bare python"),
            ("RSS", tree.total("rss"), bare.rss, "info", None, ""),
        )  # fmt: skip
        for kind, ours, baseline, goal, met, note in rows:
            report.rows.append(
                Row(
                    f"7 memory {when}: {kind}",
                    mode,
                    Stats(ours, ours, ours, 1, "MiB"),
                    goal,
                    met,
                    Stats(baseline, baseline, baseline, 1, "MiB"),
                    ours / baseline,
                    note=note,
                )
            )
        for p in tree.processes:
            report.details.append(
                f"fig 7 {mode} {when}: pid {p.pid} {p.role}: PSS {p.pss:.1f} MiB, "
                f"RSS {p.rss:.1f} MiB, USS {p.uss:.1f} MiB"
            )
    report.details.append(
        f"fig 7 {mode}: bare python: PSS {bare.pss:.1f} MiB, RSS {bare.rss:.1f} MiB, "
        f"USS {bare.uss:.1f} MiB"
    )


KUBE_RULES = 10000


def kube_proxy_table(count: int) -> str:
    """A nat table the size of kube-proxy's (iptables mode) on a busy node: count rules."""
    rules = [
        f"-A KUBE-SERVICES -d 10.96.{i >> 8}.{i & 255}/32 -p tcp -m tcp --dport 80 -j RETURN"
        for i in range(count)
    ]
    return "\n".join(["*nat", ":KUBE-SERVICES - [0:0]", *rules, "COMMIT", ""])


def figure8(mode: str, seconds: float, report: Report) -> None:
    """CPU of masqd and every process it runs, idle with the default 60 s interval.

    Measured twice: in an empty nat table, and beside a kube-proxy-sized one (every sync and
    every drift check reads the whole nat table).
    """
    for kube_rules in (0, KUBE_RULES):
        if kube_rules:
            restore(mode, kube_proxy_table(kube_rules))
        with volume_with(config_text([])) as volume, masqd(mode, volume) as proc:
            time.sleep(3.0)  # let start-up finish
            before = procstat.tree_cpu(proc.pid)
            start = time.monotonic()
            time.sleep(seconds)
            after = procstat.tree_cpu(proc.pid)
            wall = time.monotonic() - start
        percent = (after - before) / wall * 100
        label = f", nat +{kube_rules:,} kube rules" if kube_rules else " (incl. iptables children)"
        report.rows.append(
            Row(
                f"8 CPU idle{label}",
                mode,
                Stats(percent, percent, percent, 1, "%"),
                "<= 0.5 %",
                percent <= 0.5,
                note=f"over {wall:.0f} s, resyncInterval 60s, drift check 5s",
            )
        )


def _both_chains_written(mode: str) -> bool:
    """Our chain and its jump are in both families' nat tables (read in process, cheaply)."""
    from masqd.core.model import Family
    from masqd.host.probe import KernelProbe

    for family in Family:
        fingerprint = KernelProbe(family, mode, CHAIN).fingerprint()
        if fingerprint is None or fingerprint.chain is None or not fingerprint.jumps:
            return False
    return True


def _time_until_written(mode: str, start: float, timeout: float = 10.0) -> float:
    while time.perf_counter() - start < timeout:
        if _both_chains_written(mode):
            return time.perf_counter() - start
        time.sleep(0.002)
    return float("inf")


def figure12(mode: str, rounds: int, report: Report) -> None:
    """Start-up: from exec-ing `python -m masqd` to both chains (and jumps) in the kernel.

    masqd runs as installed in the image: its bytecode compiled, and none of this machine's
    own start-up hooks (its site-packages' .pth files: an editable install, a certificate
    hook, together some 40 ms of every Python start here) — `python -S` with the packages on
    PYTHONPATH. Baseline: the least a start must do, `iptables-restore` of the same rules for
    IPv4 then IPv6, timed the same way from its first exec.
    """
    import compileall
    import site

    root = Path(__file__).resolve().parents[1]
    compileall.compile_dir(str(root / "masqd"), quiet=1)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), *site.getsitepackages()])}
    from masqd.core.config import parse_config
    from masqd.core.model import Family
    from masqd.core.rules import RenderOptions, desired_rules, render_restore

    config = config_text([])
    texts = {
        family: render_restore(
            desired_rules(parse_config(config).config, family, RenderOptions()), CHAIN
        )
        for family in Family
    }
    ours: list[float] = []
    bare: list[float] = []
    with volume_with(config) as volume, tempfile.TemporaryDirectory(prefix="masqd-f12-") as tmp:
        for i in range(rounds + 1):  # the first round warms the page cache for both
            for side in ("masqd", "bare"):
                _remove_ours(mode)
                start = time.perf_counter()
                if side == "bare":
                    for family in Family:
                        restore(mode, texts[family], family.value)
                    took = _time_until_written(mode, start)
                    (bare if i else []).append(took)
                    continue
                argv = [sys.executable, "-S", "-m", "masqd", "--config", volume.path]
                argv += ["--socket", f"{tmp}/masqd{i}.sock", "--iptables-mode", mode]
                argv += ["--metrics-address", "", "--log-level", "warning"]
                proc = subprocess.Popen(
                    argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
                )
                try:
                    took = _time_until_written(mode, start)
                finally:
                    proc.terminate()
                    proc.wait(10)
                (ours if i else []).append(took)
    value, baseline = Stats.of(ours), Stats.of(bare)
    report.rows.append(
        Row(
            "12 start-up to both chains written",
            mode,
            value,
            "<= 110 ms",
            value.median <= 0.110,
            baseline,
            value.median / baseline.median,
            note="baseline: iptables-restore of both families",
        )
    )


def _remove_ours(mode: str) -> None:
    """Our chains and jumps gone from both families, as on a node masqd never ran on."""
    subprocess.run(
        [sys.executable, "-m", "masqd", "cleanup", "--iptables-mode", mode],
        capture_output=True,
        check=True,
    )


def _socket_of(proc: subprocess.Popen[bytes]) -> str:
    argv = proc.args
    assert isinstance(argv, list)
    return str(argv[argv.index("--socket") + 1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.daemon")
    parser.add_argument("figure", type=int, choices=(5, 6, 7, 8, 12))
    parser.add_argument("--mode", required=True, choices=("nft", "legacy"))
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    require_own_namespace()
    report = Report()
    if args.figure == 5:
        figure5(args.mode, args.rounds, report)
    elif args.figure == 6:
        figure6(args.mode, args.rounds, report)
    elif args.figure == 7:
        figure7(args.mode, args.rounds, report)
    elif args.figure == 12:
        figure12(args.mode, args.rounds, report)
    else:
        figure8(args.mode, args.idle_seconds, report)
    report.emit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
