"""The control API: a thin grpc.aio servicer over the Supervisor, on a unix socket.

asyncio here so that hundreds of callers waiting for a sync cost futures, not threads. The
supervisor is thread-based; it answers waits through callbacks handed to this loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from masqd.api.v1 import control_pb2 as pb
from masqd.api.v1 import control_pb2_grpc as pb_grpc
from masqd.core.model import Event, Family, Reason, SyncResult
from masqd.engine.supervisor import RequestError, Supervisor
from masqd.serve import convert
from masqd.serve.batching import ResyncBatcher
from masqd.serve.socketfile import claim_socket

log = logging.getLogger("masqd.serve.server")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Control"].full_name
DEFAULT_RESYNC_TIMEOUT = 30.0


class ControlServicer(pb_grpc.ControlServicer):
    def __init__(self, supervisor: Supervisor, batcher: ResyncBatcher | None = None) -> None:
        self.sup = supervisor
        self.batcher = batcher or ResyncBatcher(supervisor.request_sync)

    async def Resync(self, request: pb.ResyncRequest, context: Any) -> pb.ResyncResponse:
        families = await _families(request.family, self.sup, context)
        reason = {
            pb.SYNC_REASON_UNSPECIFIED: Reason.API,
            pb.SYNC_REASON_API: Reason.API,
            pb.SYNC_REASON_CNI: Reason.CNI,
        }.get(request.reason)
        if reason is None:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"reason {pb.SyncReason.Name(request.reason)} cannot be requested; use "
                "SYNC_REASON_API or SYNC_REASON_CNI",
            )
        assert reason is not None
        async with self.batcher.admitted(families, reason) as tickets:
            if request.no_wait:
                return pb.ResyncResponse()
            results = await self._wait(tickets, context)
        if any(r is None for r in results):
            if self.sup.config_state.loaded is None:
                await context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "no valid config has been loaded yet, so no rules are written: "
                    + (self.sup.config_state.error or "the config is being read"),
                )
            await context.abort(grpc.StatusCode.UNAVAILABLE, "masqd is shutting down")
        return pb.ResyncResponse(results=[convert.sync_result(r) for r in results if r])

    async def _wait(self, tickets: dict[Family, int], context: Any) -> list[SyncResult | None]:
        """Each family's result once its ticket is served, within the caller's deadline."""
        loop = asyncio.get_running_loop()
        waits = []
        for family, ticket in tickets.items():
            future: asyncio.Future[SyncResult | None] = loop.create_future()
            self.sup.runners[family].on_served(ticket, _resolver(loop, future))
            waits.append(future)
        remaining = context.time_remaining()
        timeout = DEFAULT_RESYNC_TIMEOUT if remaining is None else remaining
        try:
            # asyncio.timeout, and no gather for one family: no extra task on the hot path.
            async with asyncio.timeout(timeout):
                if len(waits) == 1:
                    return [await waits[0]]
                return list(await asyncio.gather(*waits))
        except TimeoutError:
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED, "the sync did not finish in time"
            )
            raise

    async def GetStatus(self, request: pb.GetStatusRequest, context: Any) -> pb.Status:
        return convert.status(self.sup)

    async def GetRules(self, request: pb.GetRulesRequest, context: Any) -> pb.GetRulesResponse:
        families = await _families(request.family, self.sup, context)
        response = pb.GetRulesResponse()
        for family in families:
            outcome = await asyncio.to_thread(self.sup.read_live, family)
            desired = self.sup.desired(family) or []
            response.families.append(
                convert.family_rules(family, self.sup.settings.render.chain, outcome, desired)
            )
        return response

    async def SetIntervalOverride(
        self, request: pb.SetIntervalOverrideRequest, context: Any
    ) -> pb.Status:
        if not request.HasField("interval") or not request.HasField("ttl"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "interval and ttl are required")
        try:
            self.sup.set_override(
                request.interval.ToTimedelta().total_seconds(),
                request.ttl.ToTimedelta().total_seconds(),
            )
        except RequestError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        return convert.status(self.sup)

    async def ClearIntervalOverride(
        self, request: pb.ClearIntervalOverrideRequest, context: Any
    ) -> pb.Status:
        self.sup.clear_override()
        return convert.status(self.sup)

    async def Watch(self, request: pb.WatchRequest, context: Any) -> AsyncIterator[pb.Event]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=1000)

        def listener(event: Event | None) -> None:
            loop.call_soon_threadsafe(_offer, queue, event)

        unsubscribe = self.sup.events.subscribe(listener)
        try:
            # Headers go out once we are subscribed: a client that waits for them knows that
            # every event from then on reaches it.
            await context.send_initial_metadata(())
            while True:
                event = await queue.get()
                if event is None:
                    return
                yield convert.event(event)
        finally:
            unsubscribe()


def _offer(queue: asyncio.Queue[Event | None], event: Event | None) -> None:
    """Queue an event for a watcher; a watcher too slow to keep up loses the oldest."""
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(event)


def _resolver(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[SyncResult | None]
) -> Callable[[SyncResult | None], None]:
    def resolve(result: SyncResult | None) -> None:
        loop.call_soon_threadsafe(_set_result, future, result)

    return resolve


def _set_result(future: asyncio.Future[SyncResult | None], result: SyncResult | None) -> None:
    if not future.done():
        future.set_result(result)


async def _families(value: pb.Family, sup: Supervisor, context: Any) -> tuple[Family, ...]:
    if value == pb.FAMILY_UNSPECIFIED:
        return sup.settings.families
    family = {pb.FAMILY_IPV4: Family.IPV4, pb.FAMILY_IPV6: Family.IPV6}.get(value)
    if family is None:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown family {value}")
    assert family is not None
    if family not in sup.settings.families:
        await context.abort(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"family {family.label} is not enabled on this masqd (--enable-ipv6=false)",
        )
    return (family,)


class ApiServer:
    """Runs the grpc.aio server on its own thread and event loop."""

    def __init__(
        self, supervisor: Supervisor, path: str, mode: int = 0o600, group: str = ""
    ) -> None:
        self.sup = supervisor
        self.path = path
        self.mode = mode
        self.group = group
        self._loop = asyncio.new_event_loop()
        self._server: grpc.aio.Server | None = None
        self._health: health.aio.HealthServicer | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="grpc", daemon=True)
        self._unsubscribe: Callable[[], None] | None = None
        self._lock_fd: int | None = None
        self._health_lock = threading.Lock()
        self._health_last: dict[str, bool] = {}

    def start(self, lock_fd: int | None = None) -> None:
        """Bind the socket (0600 from the first moment) and start serving.

        lock_fd is the socket's lock when the caller already claimed it (see socketfile).
        """
        self._lock_fd = claim_socket(self.path) if lock_fd is None else lock_fd
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        self._unsubscribe = self.sup.events.subscribe(lambda _e: self._update_health())
        self._update_health()
        log.info("control API listening on unix:%s", self.path)

    async def _start(self) -> None:
        server = grpc.aio.server()
        pb_grpc.add_ControlServicer_to_server(ControlServicer(self.sup), server)  # type: ignore[no-untyped-call]
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        # The socket must never be wider than asked, not even between bind and chmod.
        old_umask = os.umask(0o777 & ~self.mode)
        try:
            server.add_insecure_port(f"unix:{self.path}")
            await server.start()
        finally:
            os.umask(old_umask)
        os.chmod(self.path, self.mode)
        if self.group:
            os.chown(self.path, -1, grp.getgrnam(self.group).gr_gid)
        self._server = server

    def _update_health(self) -> None:
        """Mirror each family's state into the health service: overall, Control, per family."""
        states = {
            family.label: runner.in_sync and runner.pid != 0
            for family, runner in self.sup.runners.items()
        }
        overall = all(states.values()) and bool(states)
        statuses = {"": overall, SERVICE_NAME: overall, **states}

        async def apply() -> None:
            assert self._health is not None
            for name, ok in statuses.items():
                await self._health.set(
                    name,
                    health_pb2.HealthCheckResponse.SERVING
                    if ok
                    else health_pb2.HealthCheckResponse.NOT_SERVING,
                )

        # Called on every event, from any thread: apply changes only, in order.
        with self._health_lock:
            if statuses == self._health_last or not self._loop.is_running():
                return
            self._health_last = statuses
            asyncio.run_coroutine_threadsafe(apply(), self._loop)

    def stop(self, grace: float = 1.0) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._server is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._server.stop(grace), self._loop).result(
                    grace + 1
                )
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(2)
        if self._lock_fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            os.close(self._lock_fd)  # last: nobody may claim the path before it is gone
            self._lock_fd = None
