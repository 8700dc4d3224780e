"""Running a real masqd inside a test's node namespace, and talking to it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc

from masqd.api.v1 import control_pb2 as pb
from masqd.api.v1 import control_pb2_grpc as pb_grpc


def wait_until(condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll condition until it returns something truthy; fail the test after timeout."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as e:  # the condition may fail while things start
            last_error = e
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last error: {last_error})")


class Masqd:
    """A masqd process in a namespace, with its socket, log and a gRPC stub."""

    def __init__(self, netns: str, workdir: Path, config: Path | None, *flags: str) -> None:
        """config None: pass no --config (say --config-dir in flags instead)."""
        self.netns = netns
        self.config = config
        self.socket = str(workdir / "masqd.sock")
        self.log_path = workdir / "masqd.log"
        self.flags = flags
        self.proc: subprocess.Popen[bytes] | None = None
        self._channel: grpc.Channel | None = None

    def start(self, wait_synced: bool = True) -> Masqd:
        argv = ["ip", "netns", "exec", self.netns, sys.executable, "-m", "masqd"]
        argv += ["--config", str(self.config)] if self.config is not None else []
        argv += ["--socket", self.socket, *self.flags]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: os.path.exists(self.socket) or self.proc.poll() is not None, 15)
        assert self.proc.poll() is None, f"masqd exited:\n{self.log()}"
        if wait_synced:
            wait_until(self.synced, 15)
        return self

    def synced(self) -> bool:
        status = self.stub().GetStatus(pb.GetStatusRequest(), timeout=5)
        return bool(status.families) and all(f.in_sync and f.last_sync.ok for f in status.families)

    def stub(self) -> pb_grpc.ControlStub:
        if self._channel is None:
            self._channel = grpc.insecure_channel(f"unix:{self.socket}")
        return pb_grpc.ControlStub(self._channel)

    def status(self) -> pb.Status:
        return self.stub().GetStatus(pb.GetStatusRequest(), timeout=5)

    def sync_count(self, reason: int) -> int:
        """Syncs run for reason so far, in the family that ran fewest."""
        counts = [
            c.count for f in self.status().families for c in f.sync_counts if c.reason == reason
        ]
        return min(counts) if counts else 0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> float:
        """Signal masqd and wait; returns how long it took to exit."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        start = time.monotonic()
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return time.monotonic() - start


@contextlib.contextmanager
def running(
    netns: str, workdir: Path, config: Path | None, *flags: str, wait_synced: bool = True
) -> Iterator[Masqd]:
    daemon = Masqd(netns, workdir, config, *flags)
    try:
        yield daemon.start(wait_synced)
    finally:
        daemon.stop()


@contextlib.contextmanager
def quiet_masqd(workdir: Path, config_text: str, prefix: str) -> Iterator[tuple[str, Masqd]]:
    """A masqd (nft, drift checks off) in a namespace of its own, shared by a module's tests
    that leave it as they found it; yields the namespace and the daemon."""
    from tests.support import netns

    config = workdir / "ip-masq-agent"
    config.write_text(config_text)
    with (
        netns.namespace(prefix) as ns,
        running(
            ns, workdir, config, "--iptables-mode", "nft", "--drift-check-interval", "600"
        ) as daemon,
    ):
        yield ns, daemon
