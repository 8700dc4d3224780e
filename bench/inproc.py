"""Figures 1-4 and 9: masqd in this process, timed through its API against bare iptables.

Run by the driver inside a fresh namespace: `python -m bench.inproc FIGURE --mode M` (nft or
legacy, the iptables backend's modes, or nftables; figures 3 and 9 run on all three).
The imports at the top stay light: the Supervisor spawns its workers, and a spawned worker
re-imports this module as its `__mp_main__`; they must carry what a daemon's worker carries.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from bench.common import CHAIN, Report

if TYPE_CHECKING:
    from bench.harness import InProcessMasqd

WARMUP = 2  # the rounds bench.common.interleaved drops


def figure1(m: InProcessMasqd, rounds: int, report: Report) -> None:
    """Resync with changed rules vs iptables-save + iptables-restore of the same rules."""
    from bench.common import (
        IDLE_PAUSE,
        flush_chain,
        info_row,
        interleaved,
        ratio_row,
        restore,
        save_nat,
    )
    from masqd.core.rules import render_restore

    text = render_restore(m.desired(), CHAIN, with_jump=False)

    def bare_sync() -> None:
        save_nat(m.mode)
        restore(m.mode, text)

    def flush_then_idle() -> None:
        flush_chain(m.mode)
        time.sleep(IDLE_PAUSE)

    ours, bare = interleaved(
        rounds, [lambda: m.resync(changed=True), bare_sync], prepare=lambda: flush_chain(m.mode)
    )
    report.rows.append(ratio_row("1 resync, changed (vs save+restore)", m.mode, ours, bare, 1.3))
    # The same baseline started, like masqd's worker, by a process that was just asleep.
    (idle_bare,) = interleaved(rounds, [bare_sync], prepare=flush_then_idle)
    report.rows.append(
        info_row(
            "1 ... vs save+restore after 50 ms idle (info)",
            m.mode,
            ours,
            idle_bare,
            "the baseline's process slept first, as masqd's worker has",
        )
    )


def figure2(m: InProcessMasqd, rounds: int, report: Report) -> None:
    """Resync with changed rules vs upstream ip-masq-agent's per-sync command sequence."""
    from bench.common import flush_chain, interleaved, ratio_row, upstream_sync
    from masqd.core.rules import render_restore

    text = render_restore(m.desired(), CHAIN, with_jump=False)
    ours, upstream = interleaved(
        rounds,
        [lambda: m.resync(changed=True), lambda: upstream_sync(m.mode, text)],
        prepare=lambda: flush_chain(m.mode),
    )
    report.rows.append(
        ratio_row("2 resync, changed (vs upstream -N/-C/restore)", m.mode, ours, upstream, 1.0)
    )


def figure3(m: InProcessMasqd, rounds: int, report: Report) -> None:
    """No-op Resync vs a bare iptables-save (nftables: nft list table); and no write at all."""
    from bench.common import Row, Stats, interleaved, nft_list, ratio_row, save_nat

    nftables = m.mode == "nftables"
    read, tool, writer = (
        (nft_list, "nft list table", "nft -f")
        if nftables
        else (lambda: save_nat(m.mode), "iptables-save", "iptables-restore")
    )
    before = m.restores()
    ours, bare = interleaved(rounds, [lambda: m.resync(changed=False), read])
    restores = sum(m.restores().values()) - sum(before.values())
    report.rows.append(ratio_row(f"3 resync, no-op (vs {tool})", m.mode, ours, bare, 1.5))
    report.rows.append(
        Row(
            f"3 {writer} calls in no-op syncs",
            m.mode,
            Stats(restores, restores, restores, 1, "calls"),
            "0",
            restores == 0,
            note=f"over {len(ours) + WARMUP} no-op resyncs",
        )
    )


def figure4(m: InProcessMasqd, rounds: int, report: Report) -> None:
    """500 Resync requests from 50 clients, both families, after a flush, in both shapes,
    each against a Health.Check burst of the same shape on the same server (the floor)."""
    from bench.burst import SHAPES, burst
    from bench.common import Row, Stats, flush_chain, percentile
    from bench.procstat import masqd_cpu

    for shape in SHAPES:
        p99s: list[float] = []
        floor: list[float] = []
        cpu: list[float] = []
        floor_cpu: list[float] = []
        answered: list[float] = []
        syncs: list[float] = []
        for _ in range(max(2, rounds // 5)):
            before_cpu = masqd_cpu(m.worker_pids())
            health = burst(m.settings.socket, rpc="health", shape=shape)
            floor_cpu.append(masqd_cpu(m.worker_pids()) - before_cpu)
            floor.append(percentile(health.latencies, 99))
            flush_chain(m.mode, 4)
            flush_chain(m.mode, 6)
            before, before_cpu = m.syncs(), masqd_cpu(m.worker_pids())
            result = burst(m.settings.socket, rpc="resync", shape=shape)
            cpu.append(masqd_cpu(m.worker_pids()) - before_cpu)
            after = m.syncs()
            p99s.append(percentile(result.latencies, 99) if result.latencies else float("inf"))
            answered.append(result.answered)
            syncs.append(max(after[f] - before[f] for f in after))
            report.details.append(
                f"fig 4 {m.mode} {shape}: Resync burst {result.answered}/500 answered in "
                f"{result.span * 1000:.0f} ms, p50 {percentile(result.latencies, 50) * 1000:.0f} "
                f"ms, p99 {p99s[-1] * 1000:.0f} ms, CPU {cpu[-1] * 1000:.0f} ms, syncs per "
                f"family { {f.label: after[f] - before[f] for f in after} }; Health.Check burst "
                f"in {health.span * 1000:.0f} ms, p99 {floor[-1] * 1000:.0f} ms, CPU "
                f"{floor_cpu[-1] * 1000:.0f} ms"
                + (f"; errors: {result.errors[:3]}" if result.errors else "")
            )
        limit = 1.5 if shape == "concurrent" else 2.0
        report.rows.append(
            Row(
                f"4 burst {shape}: answered",
                m.mode,
                Stats.of(answered, "of 500"),
                "all 500",
                min(answered) == 500,
            )
        )
        p99, health_p99 = Stats.of(p99s), Stats.of(floor)
        ratio = p99.median / health_p99.median
        report.rows.append(
            Row(
                f"4 burst {shape}: p99 (vs Health.Check)",
                m.mode,
                p99,
                f"<= {limit:g}x",
                ratio <= limit,
                health_p99,
                ratio,
                note=f"{len(p99s)} bursts each",
            )
        )
        spent, floor_spent = Stats.of(cpu), Stats.of(floor_cpu)
        cpu_ratio = spent.median / floor_spent.median
        report.rows.append(
            Row(
                f"4 burst {shape}: masqd CPU (vs Health.Check)",
                m.mode,
                spent,
                "<= 2x",
                cpu_ratio <= 2.0,
                floor_spent,
                cpu_ratio,
            )
        )
        report.rows.append(
            Row(
                f"4 burst {shape}: syncs per family", m.mode, Stats.of(syncs, "syncs"), "info", None
            )
        )


SIZES = (64, 1000, 10000)


def figure9(mode: str, rounds: int, report: Report) -> None:
    """Apply time with 64 / 1,000 / 10,000 nonMasqueradeCIDRs vs a bare iptables-restore (the
    nftables backend: a bare nft -f).

    Each round is a real config change: two configs of the same size that differ in their last
    entry take turns in the file. The goal row times the apply — from the supervisor asking for
    the sync of the newly loaded config until the new rules are in the kernel — against a bare
    run of the same text by the same tool; reading and parsing the file is shown beside it.
    """
    for size in SIZES:
        _figure9_size(mode, size, rounds if size < 10000 else max(3, rounds // 3), report)


def _bare_writes(mode: str, variants: list[str]) -> tuple[list[str], Callable[[str], None]]:
    """The text a bare tool writes to go to each variant, and the tool.

    iptables: the restore masqd writes, which replaces the chain whatever it holds. nftables:
    the element diff masqd writes, from the other variant, applied to a copy of our table
    (`table ip bench`, created here) so that it always finds what it changes from.
    """
    from bench.common import nft_apply, restore
    from masqd.core import nftlive
    from masqd.core.config import parse_config
    from masqd.core.model import Family
    from masqd.core.nftrules import create, desired_table
    from masqd.core.rules import RenderOptions, desired_rules, render_restore

    configs = [parse_config(v).config for v in variants]
    if mode != "nftables":
        rules = [desired_rules(c, Family.IPV4, RenderOptions()) for c in configs]
        texts = [render_restore(r, CHAIN, with_jump=False) for r in rules]
        return texts, lambda text: restore(mode, text)
    tables = [desired_table(c, Family.IPV4, RenderOptions(table="bench")) for c in configs]
    nft_apply(create(tables[0]))  # the copy starts where masqd's table does
    texts = []
    for i, table in enumerate(tables):
        text = nftlive.change(nftlive.as_live(tables[1 - i]), table)
        assert text is not None and text.startswith("delete element"), text
        texts.append(text)
    return texts, nft_apply


def _figure9_size(mode: str, size: int, rounds: int, report: Report) -> None:
    from bench.common import IDLE_PAUSE, Row, Stats, info_row, interleaved, ratio_row
    from bench.harness import InProcessMasqd, config_with_cidrs
    from masqd.core.model import Family

    variants = [config_with_cidrs(size), config_with_cidrs(size, last="192.0.2.0/24")]
    applied: list[float] = []
    parsed: list[float] = []
    turns = {"ours": 0, "bare": 0}

    with InProcessMasqd(mode, variants[0], watch=False) as m:
        texts, write = _bare_writes(mode, variants)

        def ours() -> None:
            turns["ours"] ^= 1
            m.config_path.write_text(variants[turns["ours"]])
            start = time.perf_counter()
            syncs = m.supervisor.reload()
            loaded = time.perf_counter()
            result = syncs[Family.IPV4].result(60.0)
            assert result.ok and result.changed, result
            parsed.append(loaded - start)
            applied.append(time.perf_counter() - loaded)

        def bare() -> None:
            turns["bare"] ^= 1
            write(texts[turns["bare"]])

        _, bare_times = interleaved(rounds, [ours, bare])
        (idle_times,) = interleaved(rounds, [bare], prepare=lambda: time.sleep(IDLE_PAUSE))
    n = len(bare_times)
    tool = "nft -f" if mode == "nftables" else "iptables-restore"
    report.rows.append(
        ratio_row(f"9 apply {size:,} CIDRs (vs {tool})", mode, applied[-n:], bare_times, 1.3)
    )
    report.rows.append(
        info_row(f"9 ... vs {tool} after 50 ms idle (info)", mode, applied[-n:], idle_times)
    )
    report.rows.append(
        Row("9 ... reading + parsing the file (info)", mode, Stats.of(parsed[-n:]), "-", None)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inproc")
    parser.add_argument("figure", type=int, choices=(1, 2, 3, 4, 9))
    parser.add_argument("--mode", required=True, choices=("nft", "legacy", "nftables"))
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)

    from bench.common import require_own_namespace
    from bench.harness import InProcessMasqd

    require_own_namespace()
    report = Report()
    if args.figure == 9:
        figure9(args.mode, args.rounds, report)
    else:
        figure = {1: figure1, 2: figure2, 3: figure3, 4: figure4}[args.figure]
        with InProcessMasqd(args.mode) as m:
            figure(m, args.rounds, report)
    report.emit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
