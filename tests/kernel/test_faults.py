"""Faults on a real masqd in namespaces: bad config files never change the rules, a good one
after them applies within 2 s (also through kubelet's ..data swap), a killed worker comes back,
tampering is repaired within 10 s, and a held xtables lock only delays a sync.

Measured times are printed (run with -s or -rP to see them) and asserted against SPEC bounds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from masqd.api.v1 import control_pb2 as pb
from tests.support import netns
from tests.support.daemon import Masqd, wait_until
from tests.support.scenario import (
    CHAIN,
    CONFIG_CHANGE_BOUND,
    GOOD,
    GOOD_NEXT,
    JUMP,
    REPAIR_BOUND,
    desired,
    put,
    put_symlink,
    save_nat,
    send_traffic,
    snapshot,
    time_until,
)


def error_state(daemon: Masqd) -> tuple[str, int, int]:
    config = daemon.status().config
    return config.error, config.error_at.ToNanoseconds(), config.generation


# -- bad config files --------------------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    """A bad config file: how to put it in place, and what the reported error must contain."""

    id: str
    expect: str
    data: bytes | str = b""
    link: str = ""  # install a symlink to workdir/<link> instead of data


def _many_cidrs(n: int) -> str:
    return json.dumps({"nonMasqueradeCIDRs": [f"10.{i}.0.0/16" for i in range(n)]})


BAD_FILES = [
    Bad("yaml-unclosed-flow", "not valid YAML or JSON", "nonMasqueradeCIDRs: [10.0.0.0/8\n"),
    Bad("yaml-tab-indent", "not valid YAML or JSON", "masqOutBound: true\n\tmasqLinkLocal: x\n"),
    Bad("json-truncated", "not valid YAML or JSON", '{"nonMasqueradeCIDRs": ["10.0.0.0/8"'),
    Bad("python-tag", "not valid YAML or JSON", "!!python/object/apply:os.system ['true']\n"),
    Bad("top-level-list", "top level must be a mapping of keys, not a list", "- 10.0.0.0/8\n"),
    Bad("top-level-string", "top level must be a mapping of keys, not a string", "hello\n"),
    Bad("bool-as-string", "masqOutBound: must be true or false", 'masqOutBound: "true"\n'),
    Bad("list-as-string", "nonMasqueradeCIDRs: must be a list", "nonMasqueradeCIDRs: 10.0.0.0/8\n"),
    Bad("empty-mapping-for-list", "nonMasqueradeCIDRs: must be a list", "nonMasqueradeCIDRs: {}\n"),
    Bad("null-for-list", "masqueradeCIDRs: has no value", "masqueradeCIDRs:\n"),
    Bad(
        "number-in-list", "masqueradeCIDRs[0]: 42 must be a CIDR string", "masqueradeCIDRs: [42]\n"
    ),
    Bad(
        "invalid-cidr",
        "nonMasqueradeCIDRs[1] '10.0.0.300/8': not a valid CIDR",
        "nonMasqueradeCIDRs: [10.0.0.0/8, 10.0.0.300/8]\n",
    ),
    Bad(
        "misaligned-cidr",
        "nonMasqueradeCIDRs[0] '10.0.0.1/8': host bits are set",
        "nonMasqueradeCIDRs: [10.0.0.1/8]\n",
    ),
    Bad(
        "misaligned-ipv6-cidr",
        "nonMasqueradeCIDRs[0] 'fc00::1/7': host bits are set",
        "nonMasqueradeCIDRs: ['fc00::1/7']\n",
    ),
    Bad(
        "cidr-without-prefix",
        "masqueradeCIDRs[0] '10.10.10.10': not a CIDR",
        "masqueradeCIDRs: [10.10.10.10]\n",
    ),
    Bad("too-many-cidrs", "65 entries, more than cidrLimit (64)", _many_cidrs(65)),
    Bad(
        "cidr-limit-counts-both-families",
        "3 entries, more than cidrLimit (2)",
        "cidrLimit: 2\nnonMasqueradeCIDRs: [10.0.0.0/8, fc00::/7, 192.168.0.0/16]\n",
    ),
    Bad("interval-as-number", "resyncInterval: must be a duration string", "resyncInterval: 60\n"),
    Bad("interval-bad-syntax", "resyncInterval: invalid duration '1d'", "resyncInterval: 1d\n"),
    Bad(
        "interval-too-short", "resyncInterval: '500ms' is out of bounds", "resyncInterval: 500ms\n"
    ),
    Bad("interval-too-long", "resyncInterval: '25h' is out of bounds", "resyncInterval: 25h\n"),
    Bad("cidr-limit-as-string", "cidrLimit: must be a whole number", "cidrLimit: ten\n"),
    Bad("binary-junk", "not UTF-8", b"\x89PNG\r\n\x1a\n\xff\xfe\xfd masq"),
    Bad("nul-bytes", "NUL bytes", b"masqOutBound: true\n\x00\x00\x00"),
    Bad("huge-file", "larger than 1048576 bytes", "# " + "x" * (1 << 20) + "\n"),
    Bad("directory", "is a directory", link="a-directory"),
    Bad(
        "half-written",
        "nonMasqueradeCIDRs[1] '172.16.0.0/1': host bits are set",
        "nonMasqueradeCIDRs:\n  - 10.0.0.0/8\n  - 172.16.0.0/1",
    ),
    Bad("symlink-loop", "cannot read", link="loop-a"),
]


def install_bad(path: Path, bad: Bad) -> None:
    if bad.link:
        put_symlink(path, path.parent / bad.link)
    else:
        put(path, bad.data)


def prepare_links(workdir: Path) -> None:
    (workdir / "a-directory").mkdir()
    (workdir / "loop-a").symlink_to(workdir / "loop-b")
    (workdir / "loop-b").symlink_to(workdir / "loop-a")


def test_bad_config_table_never_changes_rules(
    topo: netns.Topology, start_masqd: Callable[..., Masqd]
) -> None:
    """Each of 28 bad files is reported in status and log; rules and counters stay as they were."""
    assert len(BAD_FILES) >= 20
    daemon = start_masqd(GOOD)
    path = daemon.config
    prepare_links(path.parent)
    assert topo.chain(4) == desired(GOOD, 4) and topo.chain(6) == desired(GOOD, 6)
    send_traffic(topo)
    before = snapshot(topo)
    assert any(not line.startswith("[0:0]") for line in before[4] if CHAIN in line)
    _, last_error_at, generation = error_state(daemon)

    for bad in BAD_FILES:
        install_bad(path, bad)

        def reported(bad: Bad = bad, since: int = last_error_at) -> bool:
            error, error_at, _ = error_state(daemon)
            return bad.expect in error and error_at > since

        try:
            wait_until(reported, 5)
        except AssertionError:
            raise AssertionError(f"{bad.id}: status error is {error_state(daemon)[0]!r}") from None
        error, last_error_at, gen = error_state(daemon)
        assert gen == generation, f"{bad.id} was accepted"
        assert daemon.proc is not None and daemon.proc.poll() is None, f"masqd exited on {bad.id}"
        assert error in daemon.log(), f"{bad.id}: the error is not in the log"
        assert snapshot(topo) == before, f"{bad.id} changed the nat table"

    # masqd may look again at the last bad file on a drift check: still nothing changes.
    time.sleep(1.2)
    assert snapshot(topo) == before
    assert all(f.in_sync for f in daemon.status().families)

    put(path, GOOD_NEXT)
    took = time_until(
        lambda: topo.chain(4) == desired(GOOD_NEXT, 4) and topo.chain(6) == desired(GOOD_NEXT, 6),
        CONFIG_CHANGE_BOUND + 3,
    )
    print(
        f"\n[{topo.backend}] good file after {len(BAD_FILES)} bad ones in the kernel in {took:.3f}s"
    )
    assert took <= CONFIG_CHANGE_BOUND
    status = daemon.status()
    assert status.config.error == ""
    assert status.config.generation == generation + 1


@pytest.mark.parametrize("backend", ["nft"])
def test_ipv6_entries_with_ipv6_disabled_are_rejected(
    topo: netns.Topology, start_masqd: Callable[..., Masqd]
) -> None:
    """With --enable-ipv6=false an IPv6 entry is reported and the IPv4 chain stays as it was."""
    good = "nonMasqueradeCIDRs: [10.0.0.0/8]\nmasqOutBound: true\n"
    daemon = start_masqd(good, "--enable-ipv6=false")
    assert [f.family for f in daemon.status().families] == [pb.FAMILY_IPV4]
    before = save_nat(topo, 4)
    for key in ("nonMasqueradeCIDRs", "masqueradeCIDRs"):
        put(daemon.config, f"{key}: [10.0.0.0/8, 'fc00::/7']\nmasqOutBound: true\n")
        wait_until(lambda key=key: f"{key}[1] 'fc00::/7'" in daemon.status().config.error, 5)
        assert "IPv6 is disabled" in daemon.status().config.error
        assert save_nat(topo, 4) == before
    assert topo.chain(6) == []


def test_bad_file_at_startup_writes_nothing_until_a_good_one(
    topo: netns.Topology, start_masqd: Callable[..., Masqd]
) -> None:
    """Started with a bad file, masqd runs, writes no rules, and applies a good file within 2 s."""
    daemon = start_masqd("nonMasqueradeCIDRs: [10.0.0.1/8]\n", wait_synced=False)
    wait_until(lambda: "host bits are set" in daemon.status().config.error, 5)
    time.sleep(1.0)
    assert topo.chain(4) == [] and topo.chain(6) == []
    assert not any(r.endswith(f"-j {CHAIN}") for r in topo.postrouting(4))
    put(daemon.config, GOOD)
    took = time_until(
        lambda: topo.chain(4) == desired(GOOD, 4) and topo.chain(6) == desired(GOOD, 6),
        CONFIG_CHANGE_BOUND + 3,
    )
    print(f"\n[{topo.backend}] first good file (after a bad start) in the kernel in {took:.3f}s")
    assert took <= CONFIG_CHANGE_BOUND


# -- kubelet's ConfigMap update ----------------------------------------------------------------


def kubelet_volume(volume: Path, content: str, stamp: str) -> None:
    """Write content as kubelet does: a timestamped dir, then swap ..data to it atomically."""
    data_dir = volume / f"..{stamp}"
    data_dir.mkdir()
    (data_dir / "ip-masq-agent").write_text(content)
    tmp = volume / "..data_tmp"
    tmp.symlink_to(data_dir.name)
    os.replace(tmp, volume / "..data")
    key = volume / "ip-masq-agent"
    if not key.is_symlink():
        put_symlink(key, Path("..data/ip-masq-agent"))


@pytest.mark.parametrize("backend", ["nft"])
def test_a_file_written_in_place_in_pieces_is_read_once_whole(
    topo: netns.Topology, start_masqd: Callable[..., Masqd]
) -> None:
    """inotify tells of every write; masqd reads the file once the writes have stopped, so a
    half-written file (here not even valid YAML) is never taken, nor rejected."""
    daemon = start_masqd(GOOD)
    before = daemon.status().config.generation
    with open(daemon.config, "r+") as f:
        f.truncate(0)
        f.write(GOOD_NEXT[:20])  # "nonMasqueradeCIDRs: ": a config without its value
        f.flush()
        time.sleep(0.02)
        f.write(GOOD_NEXT[20:])
    wait_until(lambda: topo.chain(4) == desired(GOOD_NEXT, 4), CONFIG_CHANGE_BOUND + 3)
    status = daemon.status()
    assert status.config.error == "" and status.config.generation == before + 1
    assert "rejected" not in daemon.log()


def test_kubelet_data_symlink_swap_is_applied_within_2s(
    topo: netns.Topology, start_masqd: Callable[..., Masqd]
) -> None:
    """Swapping the ConfigMap volume's ..data symlink (as kubelet does) applies within 2 s."""
    daemon = start_masqd(GOOD)
    volume = daemon.config.parent
    kubelet_volume(volume, GOOD, "2026_01_01_00_00_00.000000001")
    time.sleep(1.0)  # same content behind a new path: nothing to do
    assert daemon.status().config.generation == 1
    timings = []
    for n, content in enumerate([GOOD_NEXT, GOOD, GOOD_NEXT], start=2):
        kubelet_volume(volume, content, f"2026_01_01_00_00_0{n}.000000001")
        took = time_until(
            lambda c=content: topo.chain(4) == desired(c, 4) and topo.chain(6) == desired(c, 6),
            CONFIG_CHANGE_BOUND + 3,
        )
        timings.append(took)
    print(
        f"\n[{topo.backend}] ..data swap in the kernel in "
        + ", ".join(f"{t:.3f}s" for t in timings)
    )
    assert max(timings) <= CONFIG_CHANGE_BOUND
    assert daemon.status().config.generation == 4


# -- a killed worker ---------------------------------------------------------------------------

WORKER_REPLACED_BOUND = 1.0


@pytest.mark.parametrize("backend", ["nft"])
def test_killed_worker_is_restarted_and_rules_stay(
    topo: netns.Topology, start_masqd: Callable[..., Masqd]
) -> None:
    """SIGKILL of a worker: it is replaced within a second (new pid, restarts+1, in sync again),
    the other family is untouched."""
    daemon = start_masqd(GOOD)
    chains = {4: topo.chain(4), 6: topo.chain(6)}
    for victim in (0, 1):
        before = {f.family: (f.pid, f.restarts) for f in daemon.status().families}
        family = daemon.status().families[victim].family
        pid, restarts = before[family]
        assert pid > 0
        os.kill(pid, signal.SIGKILL)

        def restarted(family: int = family, pid: int = pid, restarts: int = restarts) -> bool:
            f = next(f for f in daemon.status().families if f.family == family)
            return f.restarts == restarts + 1 and f.pid not in (0, pid) and f.in_sync

        took = time_until(restarted, 10)
        print(f"\n[{topo.backend}] worker {family} back after SIGKILL in {took:.3f}s")
        assert took <= WORKER_REPLACED_BOUND
        after = {f.family: (f.pid, f.restarts) for f in daemon.status().families}
        others = {k: v for k, v in after.items() if k != family}
        assert others == {k: v for k, v in before.items() if k != family}
        assert {4: topo.chain(4), 6: topo.chain(6)} == chains
    assert daemon.synced()


# -- tampering ---------------------------------------------------------------------------------

TAMPERS: dict[str, list[list[str]]] = {
    "chain-flushed": [["-F", CHAIN]],
    "rule-deleted": [["-D", CHAIN, "1"]],
    "foreign-rule-added": [["-I", CHAIN, "1", "-j", "RETURN"]],
    "jump-deleted": [["-D", "POSTROUTING", "1"]],
    "chain-deleted": [["-D", "POSTROUTING", "1"], ["-F", CHAIN], ["-X", CHAIN]],
    "table-wiped": [["-F"], ["-X"]],
}


def test_tampering_is_repaired_within_10s(
    topo: netns.Topology, start_masqd: Callable[..., Masqd]
) -> None:
    """Flushed/deleted chain, deleted jump or wiped table: repaired in both families within 10 s."""
    daemon = start_masqd(GOOD, "--drift-check-interval", "5")  # masqd's default
    want = {4: desired(GOOD, 4), 6: desired(GOOD, 6)}

    def intact(family: int) -> bool:
        jumps = [r for r in topo.postrouting(family) if r.endswith(f"-j {CHAIN}")]
        return topo.chain(family) == want[family] and jumps == [JUMP]

    assert intact(4) and intact(6)
    results = {}
    for name, commands in TAMPERS.items():
        start = time.monotonic()
        for family in (4, 6):
            for args in commands:
                topo.iptables(family, "-t", "nat", *args)
        assert not intact(4) and not intact(6)
        wait_until(lambda: intact(4) and intact(6), REPAIR_BOUND + 5, interval=0.02)
        results[name] = time.monotonic() - start
    print(
        f"\n[{topo.backend}] tamper -> repair: "
        + ", ".join(f"{k} {v:.2f}s" for k, v in results.items())
    )
    assert max(results.values()) <= REPAIR_BOUND
    counts = {
        f.family: {c.reason: c.count for c in f.sync_counts} for f in daemon.status().families
    }
    assert all(counts.values())
    assert daemon.proc is not None and daemon.proc.poll() is None


# -- the xtables lock --------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["legacy"])
def test_sync_waits_out_a_held_xtables_lock(
    topo: netns.Topology,
    start_masqd: Callable[..., Masqd],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Legacy mode: while another process holds the lock nothing is written; after release the
    pending change is applied (the restore's lock timeout was retried)."""
    # A private lock file: iptables honours XTABLES_LOCKFILE, so the host's lock is never held.
    lock = tmp_path / "xtables.lock"
    lock.touch()
    monkeypatch.setenv("XTABLES_LOCKFILE", str(lock))
    daemon = start_masqd(GOOD)
    hold_for = 6.5  # longer than the restore's -w 5, so at least one attempt times out
    holder = subprocess.Popen(["flock", str(lock), "sleep", str(hold_for)], start_new_session=True)
    try:
        wait_until(lambda: subprocess.run(["flock", "-n", str(lock), "true"]).returncode != 0, 5)
        held_at = time.monotonic()
        put(daemon.config, GOOD_NEXT)
        time.sleep(2.0)
        assert topo.chain(4) == desired(GOOD, 4), "written while the lock was held"
        holder.wait(hold_for + 5)
        released_at = time.monotonic()
        took = time_until(lambda: topo.chain(4) == desired(GOOD_NEXT, 4), 10)
    finally:
        if holder.poll() is None:
            os.killpg(holder.pid, signal.SIGKILL)
            holder.wait()
    held = released_at - held_at
    print(f"\n[legacy] lock held {held:.1f}s; change applied {took:.3f}s after release")
    assert topo.chain(6) == desired(GOOD_NEXT, 6)
    # In sync once the write is verified (legacy: read back a moment after it).
    wait_until(lambda: all(f.last_sync.ok and f.in_sync for f in daemon.status().families), 2)


# -- the config file on disk -------------------------------------------------------------------


def test_one_unreadable_state_replacing_another_is_noticed(tmp_path: Path) -> None:
    """A symlink loop replaced by a path through a regular file changes the file's identity."""
    from masqd.host import configfile

    path = tmp_path / "ip-masq-agent"
    prepare_links(tmp_path)
    put_symlink(path, tmp_path / "loop-a")
    looping = configfile.identity(str(path))
    (tmp_path / "plain").write_text("x")
    put_symlink(path, tmp_path / "plain" / "ip-masq-agent")
    assert configfile.identity(str(path)) != looping


def test_a_fifo_at_the_config_path_does_not_block_reading(tmp_path: Path) -> None:
    """Reading a FIFO at the config path fails promptly instead of blocking the config loop."""
    import threading

    from masqd.host import configfile

    fifo = tmp_path / "ip-masq-agent"
    os.mkfifo(fifo)
    outcome: list[object] = []

    def read() -> None:
        try:
            outcome.append(configfile.read(str(fifo)))
        except Exception as e:
            outcome.append(e)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(2.0)
    blocked = reader.is_alive()
    if blocked:  # let the reader go: a writer that closes at once gives it EOF
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(5.0)
    assert not blocked, "configfile.read() blocked on a FIFO"
