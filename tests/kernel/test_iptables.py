"""The iptables adapter: binaries per family and mode, error classification (a lock timeout is
retryable, a rejected rule set is not), timeouts, and choosing the node's backend."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from masqd.core.errors import ApplyError
from masqd.core.model import Family
from masqd.host.iptables import Backend
from tests.conftest import require_root
from tests.support import netns

# -- fake binaries: the adapter's contract without a kernel ----------------------------------


@pytest.fixture
def fake_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory first on PATH where tests put stand-ins for the iptables binaries."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


def fake(bin_dir: Path, name: str, script: str) -> Path:
    """Install an executable shell script named name; it logs argv and stdin to name.log."""
    path = bin_dir / name
    log = bin_dir / f"{name}.log"
    path.write_text(f'#!/bin/sh\necho "$@" >> {log}\ncat >> {log}\n{textwrap.dedent(script)}')
    path.chmod(0o755)
    return log


@pytest.mark.parametrize(
    ("family", "mode", "action", "binary"),
    [
        (Family.IPV4, "nft", "restore", "iptables-nft-restore"),
        (Family.IPV4, "legacy", "save", "iptables-legacy-save"),
        (Family.IPV6, "nft", "save", "ip6tables-nft-save"),
        (Family.IPV6, "legacy", "restore", "ip6tables-legacy-restore"),
        (Family.IPV6, "legacy", "", "ip6tables-legacy"),
    ],
)
def test_backend_names_the_binary_of_its_family_and_mode(
    family: Family, mode: str, action: str, binary: str
) -> None:
    """Each family and mode has its own binaries."""
    assert Backend(family, mode).binary(action) == binary


def test_restore_is_one_noflush_transaction_with_lock_wait(fake_bin: Path) -> None:
    """restore() runs iptables-restore --noflush -w WAIT once, with the text on stdin."""
    log = fake(fake_bin, "iptables-nft-restore", "exit 0")
    Backend(Family.IPV4, "nft").restore("*nat\nCOMMIT\n", wait=7)
    assert log.read_text() == "--noflush -w 7\n*nat\nCOMMIT\n"


def test_save_reads_the_nat_table_with_optional_counters(fake_bin: Path) -> None:
    """save_nat() runs iptables-save -t nat (-c with counters) and returns its output."""
    log = fake(fake_bin, "ip6tables-legacy-save", "echo '*nat'")
    backend = Backend(Family.IPV6, "legacy")
    assert backend.save_nat() == "*nat\n"
    assert backend.save_nat(counters=True) == "*nat\n"
    assert log.read_text().splitlines() == ["-t nat", "-t nat -c"]


def test_lock_timeout_is_retryable(fake_bin: Path) -> None:
    """Giving up on the xtables lock (exit 4 and the lock message) is a retryable error."""
    fake(
        fake_bin,
        "iptables-legacy-restore",
        """
        echo "Another app is currently holding the xtables lock. Stopped waiting after 5s." >&2
        exit 4
        """,
    )
    with pytest.raises(ApplyError) as info:
        Backend(Family.IPV4, "legacy").restore("*nat\nCOMMIT\n")
    assert info.value.retryable
    assert "xtables lock" in info.value.stderr


def test_rejected_rule_set_is_not_retryable(fake_bin: Path) -> None:
    """A parameter problem (exit 2) is final; the error carries iptables' stderr."""
    fake(
        fake_bin,
        "iptables-nft-restore",
        """
        echo "iptables-nft-restore v1.8.9 (nf_tables): Port \\`70000' not valid" >&2
        echo "Error occurred at line: 2" >&2
        exit 2
        """,
    )
    with pytest.raises(ApplyError) as info:
        Backend(Family.IPV4, "nft").restore("*nat\nCOMMIT\n")
    assert not info.value.retryable
    assert "Port `70000' not valid" in str(info.value)
    assert "exited 2" in str(info.value)


def test_command_that_hangs_times_out_as_retryable(fake_bin: Path) -> None:
    """Every call has a timeout; running past it is a retryable error."""
    fake(fake_bin, "iptables-nft-save", "sleep 5")
    with pytest.raises(ApplyError) as info:
        Backend(Family.IPV4, "nft").save_nat(timeout=0.3)
    assert info.value.retryable
    assert "did not finish within 0.3s" in str(info.value)


def test_missing_binary_is_not_retryable(fake_bin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A backend whose binaries are not installed fails for good, saying so."""
    monkeypatch.setenv("PATH", str(fake_bin))
    backend = Backend(Family.IPV6, "nft")
    assert not backend.available()
    with pytest.raises(ApplyError) as info:
        backend.save_nat()
    assert not info.value.retryable
    assert "is not installed" in str(info.value)


def _wait_for(path: Path, text: str) -> None:
    """Until path holds text (a fake binary logs its argv as soon as it starts)."""
    deadline = time.monotonic() + 10
    while not (path.exists() and text in path.read_text()):
        assert time.monotonic() < deadline, f"{path} never held {text!r}"
        time.sleep(0.01)


def test_prepared_restore_waits_for_its_rules_and_serves_the_next_restore(fake_bin: Path) -> None:
    """prepare_restore starts iptables-restore ahead; restore() feeds it: one process in all."""
    log = fake(fake_bin, "iptables-nft-restore", "exit 0")
    backend = Backend(Family.IPV4, "nft")
    backend.prepare_restore(7)
    _wait_for(log, "--noflush -w 7\n")
    assert log.read_text() == "--noflush -w 7\n"  # started, waiting on stdin
    backend.restore("*nat\nCOMMIT\n", wait=7)
    assert log.read_text() == "--noflush -w 7\n*nat\nCOMMIT\n"
    backend.restore("*nat\nCOMMIT\n", wait=7)  # none prepared: started on the spot
    assert log.read_text().count("--noflush") == 2


def test_prepared_restore_with_another_lock_wait_is_not_used(fake_bin: Path) -> None:
    """A waiting restore started with another -w exits unfed; a fresh one applies the rules."""
    log = fake(fake_bin, "iptables-legacy-restore", "exit 0")
    backend = Backend(Family.IPV4, "legacy")
    backend.prepare_restore(5)
    _wait_for(log, "-w 5\n")
    backend.restore("*nat\nCOMMIT\n", wait=1)
    assert log.read_text() == "--noflush -w 5\n--noflush -w 1\n*nat\nCOMMIT\n"


def test_prepared_restore_that_died_is_replaced(fake_bin: Path) -> None:
    """A waiting restore killed by someone else is reaped; the rules still go in, once."""
    log = fake(fake_bin, "ip6tables-nft-restore", "exit 0")
    backend = Backend(Family.IPV6, "nft")
    backend.prepare_restore()
    _wait_for(log, "-w 5\n")
    waiting = backend._ready
    assert waiting is not None
    waiting.kill()
    waiting.wait()
    backend.restore("*nat\nCOMMIT\n")
    assert log.read_text() == "--noflush -w 5\n--noflush -w 5\n*nat\nCOMMIT\n"
    backend.prepare_restore()  # and after a death noticed by prepare_restore itself
    _wait_for(log, "COMMIT\n--noflush -w 5\n")
    assert backend._ready is not None
    backend._ready.kill()
    backend._ready.wait()
    backend.prepare_restore()
    _wait_for(log, "COMMIT\n--noflush -w 5\n--noflush -w 5\n")
    backend.close()


def test_close_ends_a_waiting_restore_unfed(fake_bin: Path) -> None:
    """close() ends the waiting restore: it exits having read nothing, and is reaped."""
    log = fake(fake_bin, "iptables-nft-restore", "exit 0")
    backend = Backend(Family.IPV4, "nft")
    backend.prepare_restore()
    waiting = backend._ready
    assert waiting is not None
    _wait_for(log, "-w 5\n")
    backend.close()
    assert waiting.returncode == 0
    assert log.read_text() == "--noflush -w 5\n"
    backend.close()  # nothing waiting: nothing to do


# -- the real kernel, inside a namespace ------------------------------------------------------

_IN_NS = """
import json, sys
from masqd.core.errors import ApplyError
from masqd.host.iptables import Backend, detect_mode
from masqd.core.model import Family
what = sys.argv[1]
if what == "detect":
    print(json.dumps(detect_mode()))
else:
    backend = Backend(Family(int(sys.argv[2])), sys.argv[3])
    if sys.argv[5:] == ["prepared"]:
        backend.prepare_restore(int(sys.argv[4]))  # fed to a restore started ahead
    try:
        backend.restore(sys.stdin.read(), wait=int(sys.argv[4]))
        print(json.dumps("ok"))
    except ApplyError as e:
        print(json.dumps({"retryable": e.retryable, "error": str(e)}))
"""


def in_ns(ns: str, *args: str, input: str = "", env: dict[str, str] | None = None) -> object:
    """Run the adapter inside namespace ns and return what it reported."""
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", _IN_NS, *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=True,
    )
    return json.loads(proc.stdout)


@pytest.fixture
def kernel_ns() -> Iterator[str]:
    require_root()
    with netns.namespace("ipt") as name:
        yield name


# A chain that POSTROUTING enters and that jumps to itself: the kernel refuses the loop.
LOOP = "*nat\n:LOOP - [0:0]\n-A LOOP -j LOOP\n-A POSTROUTING -j LOOP\nCOMMIT\n"


@pytest.mark.parametrize("started", ["on the spot", "prepared"])
@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_kernel_rejection_is_not_retryable(mode: str, started: str, kernel_ns: str) -> None:
    """A rule set the kernel refuses (a loop) is a final error in both modes, also when fed to
    a restore started ahead; nothing changes."""
    keep = "-A KEEP -d 192.0.2.0/24 -j RETURN"
    netns.run(kernel_ns, f"iptables-{mode}-restore", input=f"*nat\n:KEEP - [0:0]\n{keep}\nCOMMIT\n")
    extra = ["prepared"] if started == "prepared" else []
    result = in_ns(kernel_ns, "restore", "4", mode, "5", *extra, input=LOOP)
    assert isinstance(result, dict)
    assert result["retryable"] is False, result["error"]
    save = netns.run(kernel_ns, f"iptables-{mode}-save", "-t", "nat")
    assert "LOOP" not in save
    assert keep in save.splitlines()  # what was there before is still there


def test_legacy_lock_held_elsewhere_is_retryable_and_waits(kernel_ns: str, tmp_path: Path) -> None:
    """With the xtables lock held elsewhere restore fails retryably; after release it succeeds."""
    lock = tmp_path / "xtables.lock"
    lock.touch()
    env = {"XTABLES_LOCKFILE": str(lock)}
    # A session of its own: flock's child `sleep` holds the lock too, so kill the whole group.
    holder = subprocess.Popen(["flock", str(lock), "sleep", "30"], start_new_session=True)
    try:
        netns.run(None, "sh", "-c", f"sleep 0.2; ! flock -n {lock} true")  # the lock is taken
        text = "*nat\n:HELD - [0:0]\nCOMMIT\n"
        result = in_ns(kernel_ns, "restore", "4", "legacy", "1", input=text, env=env)
        assert isinstance(result, dict)
        assert result["retryable"] is True, result["error"]
        assert "xtables lock" in result["error"]
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
    assert in_ns(kernel_ns, "restore", "4", "legacy", "1", input=text, env=env) == "ok"
    assert ":HELD - [0:0]" in netns.run(kernel_ns, "iptables-legacy-save", "-t", "nat")


_PREPARED_IN_NS = """
import json, subprocess, sys
from masqd.host.iptables import Backend
from masqd.core.model import Family
mode, lock = sys.argv[1], sys.argv[2]
backend = Backend(Family.IPV4, mode)
backend.prepare_restore(1)
seen = {}
with open("/proc/net/ip_tables_names") as f:
    seen["legacy tables while waiting"] = f.read().split()
# The lock is free while the restore waits (flock -n fails if it is held).
seen["lock free while waiting"] = subprocess.run(["flock", "-n", lock, "true"]).returncode == 0
# A chain created after the restore started: it must see the kernel as of its input.
subprocess.run([f"iptables-{mode}", "-w", "1", "-t", "nat", "-N", "LATER"], check=True)
backend.restore("*nat\\n-A LATER -d 192.0.2.0/24 -j RETURN\\nCOMMIT\\n", wait=1)
seen["save"] = subprocess.run(
    [f"iptables-{mode}-save", "-t", "nat"], capture_output=True, text=True, check=True
).stdout
print(json.dumps(seen))
"""


@pytest.mark.parametrize("mode", ["nft", "legacy"])
def test_prepared_restore_holds_nothing_and_reads_the_kernel_when_fed(
    mode: str, kernel_ns: str, tmp_path: Path
) -> None:
    """A waiting iptables-restore neither holds the xtables lock nor creates a legacy table,
    and it applies its rules to the kernel as it is when they arrive, not as it was at start."""
    lock = tmp_path / "xtables.lock"
    lock.touch()
    proc = subprocess.run(
        ["ip", "netns", "exec", kernel_ns, sys.executable, "-c", _PREPARED_IN_NS, mode, str(lock)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "XTABLES_LOCKFILE": str(lock)},
        check=True,
    )
    seen = json.loads(proc.stdout)
    assert seen["legacy tables while waiting"] == []
    assert seen["lock free while waiting"] is True
    assert "-A LATER -d 192.0.2.0/24 -j RETURN" in seen["save"]


def _mangle_chain(ns: str, mode: str, chain: str) -> None:
    netns.run(ns, f"iptables-{mode}", "-t", "mangle", "-N", chain)


def _some_rules(ns: str, mode: str, count: int) -> None:
    for i in range(count):
        netns.run(ns, f"iptables-{mode}", "-t", "filter", "-A", "INPUT", "-s", f"10.9.{i}.0/24")


def test_detect_mode_defaults_to_nft_without_any_sign(kernel_ns: str) -> None:
    """A node with no kubelet marker and no rules is nft."""
    assert in_ns(kernel_ns, "detect") == "nft"
    assert not netns.run(kernel_ns, "cat", "/proc/net/ip_tables_names").strip()


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ([("legacy", "KUBE-IPTABLES-HINT")], "legacy"),
        ([("nft", "KUBE-IPTABLES-HINT")], "nft"),
        ([("legacy", "KUBE-KUBELET-CANARY")], "legacy"),
        ([("nft", "KUBE-KUBELET-CANARY"), ("legacy", "SOMETHING")], "nft"),
    ],
)
def test_detect_mode_follows_kubelet_markers(
    setup: list[tuple[str, str]], expected: str, kernel_ns: str
) -> None:
    """The mode whose mangle table holds kubelet's hint or canary chain is the node's mode."""
    for mode, chain in setup:
        _mangle_chain(kernel_ns, mode, chain)
    assert in_ns(kernel_ns, "detect") == expected


def test_detect_mode_marker_beats_rule_count(kernel_ns: str) -> None:
    """kubelet's marker in nft wins even when legacy holds more rules."""
    _mangle_chain(kernel_ns, "nft", "KUBE-IPTABLES-HINT")
    _some_rules(kernel_ns, "legacy", 3)
    assert in_ns(kernel_ns, "detect") == "nft"


def test_detect_mode_without_marker_picks_the_mode_with_more_rules(kernel_ns: str) -> None:
    """With no marker, the mode holding more rules is the node's mode."""
    _some_rules(kernel_ns, "legacy", 3)
    _some_rules(kernel_ns, "nft", 1)
    assert in_ns(kernel_ns, "detect") == "legacy"
