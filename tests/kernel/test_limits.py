"""Connections by the thousand, under the `nofile` limit of 1024 a node may give masqd: 2,000
idle control connections and 2,000 idle HTTP connections are capped, logged and closed in
time, masqd's descriptors and threads stay bounded, a killed worker is still replaced (before,
the runner thread died of EMFILE and the family never synced again), and both families go on
applying config changes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from masqd.api.v1 import control_pb2 as pb
from masqd.serve import httpserver, limits
from tests.support import netns
from tests.support.daemon import Masqd, wait_until
from tests.support.observability import fetch
from tests.support.scenario import GOOD, GOOD_NEXT, put

# Opens N connections (unix path or host:port) without a byte sent, says how many, holds them
# until its stdin closes. It raises its own descriptor limit: it is the one that holds 2,000.
_HOLD = """
import resource, socket, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
target, count = sys.argv[1], int(sys.argv[2])
held = []
for _ in range(count):
    if target.startswith("/"):
        s, address = socket.socket(socket.AF_UNIX), target
    else:
        host, port = target.rsplit(":", 1)
        s, address = socket.socket(), (host, int(port))
    s.setblocking(False)
    try:
        s.connect(address)
    except BlockingIOError:
        pass
    except OSError:
        s.close()
        continue
    held.append(s)
print(len(held), flush=True)
sys.stdin.read()
"""


def hold(ns: str, target: str, count: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", _HOLD, target, str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert int(proc.stdout.readline()) > 0
    return proc


def release(proc: subprocess.Popen[str]) -> None:
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("Threads:")).split()[1])


@pytest.mark.parametrize("backend", ["nft"])
def test_thousands_of_idle_connections_under_nofile_1024_cost_no_sync(
    topo: netns.Topology, start_masqd: Callable[..., Masqd]
) -> None:
    daemon = start_masqd(GOOD, wrap=("prlimit", "--nofile=1024:1024"))
    stub = daemon.stub()  # connected before the flood
    base_threads = threads(daemon.pid)
    holders = [
        hold(topo.node, daemon.socket, 2000),
        hold(topo.node, "127.0.0.1:9153", 2000),
    ]
    try:
        time.sleep(1.0)
        fds, count = descriptors(daemon.pid), threads(daemon.pid)
        print(f"\nwith 4,000 idle connections: {fds} descriptors, {count} threads")
        assert fds < limits.MAX_CONNECTIONS + httpserver.MAX_CONNECTIONS + 200 < 1024
        assert count <= base_threads + 2
        # A worker killed now is replaced: starting one needs descriptors.
        ipv4 = next(f for f in daemon.status().families if f.family == pb.FAMILY_IPV4)
        os.kill(ipv4.pid, 9)
        wait_until(
            lambda: (
                next(f for f in daemon.status().families if f.family == pb.FAMILY_IPV4).pid
                not in (0, ipv4.pid)
            ),
            5,
        )
        put(daemon.config, GOOD_NEXT)
        wait_until(lambda: "-A IP-MASQ-AGENT -d 192.168.0.0/16" in "\n".join(topo.chain(4)), 3)
        wait_until(lambda: any("fd00::/8" in r for r in topo.chain(6)), 3)
        # In sync once verified, a moment after the write.
        wait_until(
            lambda: all(
                f.in_sync and f.healthy
                for f in stub.GetStatus(pb.GetStatusRequest(), timeout=5).families
            ),
            2,
        )
        # The caps were reached, and said so.
        wait_until(lambda: "control connections are open, at the most served" in daemon.log(), 10)
        assert "HTTP connections are open, the most served at once" in daemon.log()
        # Idle ones are closed in time (handshake and HTTP idle timeouts): new clients get in.
        wait_until(lambda: fetch(topo.node, "/healthz")[0] == 200, httpserver.IDLE_TIMEOUT + 5)
        time.sleep(max(0.0, limits.HANDSHAKE_TIMEOUT - httpserver.IDLE_TIMEOUT) + 1)
        probe = subprocess.run(
            [sys.executable, "-m", "masqctl.cli", "--socket", daemon.socket, "health"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert probe.returncode == 0, probe.stdout + probe.stderr
    finally:
        for holder in holders:
            release(holder)
    wait_until(lambda: descriptors(daemon.pid) < 100, 15)
