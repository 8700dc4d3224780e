"""Hostile config files on a live masqd: each is rejected within a second, with a short
message in status, the supervisor's memory grows by less than 50 MB, the rules stay as they
were, and masqd goes on applying the good file that follows (before, a deep file killed the
process at every start, an alias bomb filled its memory, and a long integer killed the thread
that reads the config, so no later change was ever applied)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_root
from tests.support import netns
from tests.support.daemon import Masqd, quiet_masqd, running, wait_until
from tests.support.hostile import HOSTILE
from tests.support.scenario import GOOD, GOOD_NEXT, put, time_until


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Masqd]]:
    require_root()
    with quiet_masqd(tmp_path_factory.mktemp("hostile"), GOOD, "hostile") as running:
        yield running


def peak_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("VmHWM:")).split()[1])


def chain(ns: str) -> str:
    return netns.run(ns, "iptables-nft-save", "-t", "nat")


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_file_is_rejected_at_once_and_changes_nothing(
    daemon: tuple[str, Masqd], name: str
) -> None:
    ns, masqd = daemon
    text, expect = HOSTILE[name]
    rules = [line for line in chain(ns).splitlines() if line.startswith("-A")]
    peak = peak_kb(masqd.pid)
    before = masqd.status().config.error_at.ToNanoseconds()

    def rejected() -> bool:
        config = masqd.status().config
        return config.error_at.ToNanoseconds() != before and expect in config.error

    put(masqd.config, text)
    took = time_until(rejected, 5)
    error = masqd.status().config.error
    print(f"\n{name}: rejected in {took:.2f}s: {error}")
    assert took < 1.0 + 0.5  # 0.5: masqd looks at the file every half second
    assert len(error) < 200
    assert peak_kb(masqd.pid) - peak < 50 * 1024
    assert masqd.proc is not None and masqd.proc.poll() is None
    assert [line for line in chain(ns).splitlines() if line.startswith("-A")] == rules


def test_after_them_a_good_file_is_still_applied(daemon: tuple[str, Masqd]) -> None:
    ns, masqd = daemon
    generation = masqd.status().config.generation
    put(masqd.config, GOOD_NEXT)
    wait_until(lambda: masqd.status().config.generation == generation + 1, 3)
    assert not masqd.status().config.error
    wait_until(lambda: "-A IP-MASQ-AGENT -d 192.168.0.0/16" in chain(ns), 3)


def test_masqd_starts_with_the_deepest_file_in_place_and_masqctl_validates_it(
    tmp_path: Path,
) -> None:
    """The 60 kB file of 30,000 nested lists used to crash masqd at every start (SIGSEGV) and
    `masqctl config validate` too: now masqd runs, says why, and validate exits 1."""
    require_root()
    text, expect = HOSTILE["30,000 nested lists"]
    config = tmp_path / "ip-masq-agent"
    config.write_text(text)
    with (
        netns.namespace("deep") as ns,
        running(ns, tmp_path, config, "--iptables-mode", "nft", wait_synced=False) as masqd,
    ):
        wait_until(lambda: expect in masqd.status().config.error, 5)
        assert masqd.proc is not None and masqd.proc.poll() is None
    validate = subprocess.run(
        [sys.executable, "-m", "masqctl.cli", "config", "validate", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert validate.returncode == 1 and expect in validate.stderr and len(validate.stderr) < 300
