"""masqd in the bench's own process (masqd.daemon.Daemon), and a real gRPC channel to it.

Runs inside the figure's namespace. The daemon starts exactly as `masqd` does (workers forked
first, then gRPC); the API is the real grpc.aio server on a unix socket under a temporary
directory, and the bench calls it through a real channel, so a timed Resync pays for the whole
path: request, coalescing, the worker's pipe, `iptables-save`, `iptables-restore`, the answer.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from masqd import logs
from masqd.core.model import NFTABLES, Family
from masqd.core.nftrules import Table
from masqd.core.rules import RenderOptions
from masqd.core.settings import Settings
from masqd.daemon import Daemon
from masqd.engine.supervisor import Supervisor

if TYPE_CHECKING:  # gRPC is imported only once the workers are forked (masqd.daemon)
    import grpc

    from masqd.api.v1 import control_pb2 as pb
    from masqd.api.v1 import control_pb2_grpc as pb_grpc

FAMILY_IPV4 = 1  # control_pb2.FAMILY_IPV4, without importing gRPC early

# CCE's shipped defaults without its VPC range: a realistic chain of a handful of rules.
DEFAULT_CONFIG = """\
nonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7]
masqOutBound: true
masqOutBoundIPv6: true
resyncInterval: 60s
"""


def config_with_cidrs(count: int, last: str | None = None) -> str:
    """A config with count distinct IPv4 nonMasqueradeCIDRs (10.x.y.0/24) and a limit to match;
    last, if given, replaces the last entry (a second config of the same size)."""
    cidrs = [f"10.{i >> 8}.{i & 255}.0/24" for i in range(count)]
    if last is not None:
        cidrs[-1] = last
    lines = ["nonMasqueradeCIDRs:", *(f"  - {c}" for c in cidrs)]
    return "\n".join([*lines, "masqOutBound: true", f"cidrLimit: {max(count, 64)}", ""])


class InProcessMasqd:
    """A context manager: masqd running in this process, synced, with a stub to its API."""

    def __init__(self, mode: str, config: str = DEFAULT_CONFIG, *, watch: bool = True) -> None:
        """watch=False: the config loop never looks at the file itself (no inotify, no poll),
        so a figure that changes the file and calls `Supervisor.reload()` is the one that
        loads it, and gets the sync it asked for."""
        self.mode = mode
        self.watch = watch
        self._tmp = tempfile.TemporaryDirectory(prefix="masqd-bench-")
        work = Path(self._tmp.name)
        (work / "config").write_text(config)
        self.settings = Settings(
            config_path=str(work / "config"),
            socket=str(work / "masqd.sock"),
            backend="nftables" if mode == NFTABLES else "iptables",
            iptables_mode="auto" if mode == NFTABLES else mode,
            render=RenderOptions(),
            # Nobody tampers during a timed round except the bench itself: a drift check
            # landing between "flush" and "Resync" would make the Resync a no-op.
            drift_check_interval=3600.0,
            file_poll_interval=0.5 if watch else 3600.0,
        )
        self.daemon = Daemon(self.settings, mode=mode)
        self.channel: grpc.Channel | None = None

    @property
    def config_path(self) -> Path:
        return Path(self.settings.config_path)

    @property
    def supervisor(self) -> Supervisor:
        assert self.daemon.supervisor is not None
        return self.daemon.supervisor

    def __enter__(self) -> InProcessMasqd:
        """Start masqd as its cli does (masqd.daemon)."""
        logs.setup("text", "warning")
        logging.getLogger("masqd").setLevel(logging.WARNING)
        if not self.watch:
            from masqd.engine import supervisor

            supervisor.FileWatch = _NoWatch  # type: ignore[assignment,misc]
        self.daemon.start()
        import grpc

        self._wait_in_sync(30.0)
        self.channel = grpc.insecure_channel(f"unix:{self.settings.socket}")
        grpc.channel_ready_future(self.channel).result(timeout=10)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.channel is not None:
            self.channel.close()
        self.daemon.stop()
        self._tmp.cleanup()

    def _wait_in_sync(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            families = self.supervisor.status().families
            if all(f.in_sync and f.last_result is not None for f in families):
                return
            time.sleep(0.02)
        states = {f.family.label: (f.state, f.last_result) for f in families}
        raise RuntimeError(f"masqd did not reach in-sync within {timeout:g}s: {states}")

    def stub(self) -> pb_grpc.ControlStub:
        from masqd.api.v1 import control_pb2_grpc as pb_grpc

        assert self.channel is not None
        return pb_grpc.ControlStub(self.channel)

    def resync(self, family: int = FAMILY_IPV4, *, changed: bool | None = None) -> None:
        """One Resync with wait through the API; checks the result (and whether it changed)."""
        from masqd.api.v1 import control_pb2 as pb

        response = self.stub().Resync(pb.ResyncRequest(family=family), timeout=60)
        check_response(response, changed)

    def desired(self, family: Family = Family.IPV4) -> list[str]:
        """Our chain's rules (the iptables backend)."""
        rules = self.supervisor.desired(family)
        assert rules is not None and not isinstance(rules, Table)
        return list(rules)

    def table(self, family: Family = Family.IPV4) -> Table:
        """Our table (the nftables backend)."""
        table = self.supervisor.desired(family)
        assert isinstance(table, Table)
        return table

    def syncs(self) -> dict[Family, int]:
        """Syncs run so far per family (every reason)."""
        return {f.family: sum(f.syncs.values()) for f in self.supervisor.status().families}

    def worker_pids(self) -> list[int]:
        return [f.pid for f in self.supervisor.status().families]

    def restores(self) -> dict[Family, int]:
        return {f.family: f.restores for f in self.supervisor.status().families}


class _NoWatch:
    """A FileWatch that watches nothing (inotify unavailable, as the loop sees it)."""

    active = False

    def __init__(self, path: str) -> None:
        pass

    def close(self) -> None:
        pass


def check_response(response: pb.ResyncResponse, changed: bool | None) -> None:
    if not response.results:
        raise RuntimeError("Resync answered without results")
    for result in response.results:
        if not result.ok:
            raise RuntimeError(f"sync failed: {result.error}")
        if changed is not None and result.family == FAMILY_IPV4 and result.changed != changed:
            raise RuntimeError(f"expected changed={changed}, the sync said {result.changed}")
