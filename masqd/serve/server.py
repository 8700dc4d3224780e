"""The control API: a thin grpc.aio servicer over the Supervisor, on a unix socket.

asyncio here so that hundreds of callers waiting for a sync cost futures, not threads. The
supervisor is thread-based: a Resync is a concurrent.futures.Future from its queue, awaited here
with asyncio.wrap_future under the caller's deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import grp
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from masqd.api.explanation import message as explanation_message
from masqd.api.v1 import control_pb2 as pb
from masqd.api.v1 import control_pb2_grpc as pb_grpc
from masqd.core.errors import Kind, MasqdError
from masqd.core.explain import packet_of
from masqd.core.livestate import ReadOutcome
from masqd.core.model import Event, Family, Reason, SyncResult
from masqd.engine.supervisor import Supervisor
from masqd.serve import convert, limits
from masqd.serve.grpchealth import HealthService
from masqd.serve.socketfile import claim_socket

log = logging.getLogger("masqd.server")
T = TypeVar("T")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Control"].full_name
DEFAULT_RESYNC_TIMEOUT = 30.0
"""How long a Resync without a deadline waits for its sync."""
LIVE_READ_TIMEOUT = 10.0
"""How long GetRules waits for a worker busy with a sync."""
LOOK_EVERY = 2.0
"""Seconds between the server's looks at its connections and the time-bound health."""


# Where a failure's kind becomes a gRPC status: the API edge, and only here.
STATUS_CODE = {
    Kind.BAD_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
    Kind.NOT_ENABLED: grpc.StatusCode.FAILED_PRECONDITION,
    Kind.NO_CONFIG: grpc.StatusCode.FAILED_PRECONDITION,
    Kind.STOPPING: grpc.StatusCode.UNAVAILABLE,
    Kind.WORKER_GONE: grpc.StatusCode.UNAVAILABLE,
    Kind.HUNG: grpc.StatusCode.UNAVAILABLE,
    Kind.TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
}


class ControlServicer(pb_grpc.ControlServicer):
    def __init__(self, supervisor: Supervisor) -> None:
        self.sup = supervisor

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
        futures = self.sup.resync(families, reason)
        if request.no_wait:
            return pb.ResyncResponse()
        remaining = context.time_remaining()
        try:
            async with asyncio.timeout(DEFAULT_RESYNC_TIMEOUT if remaining is None else remaining):
                results = tuple([await _result(f) for f in futures.values()])
        except TimeoutError:
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED, "the sync did not finish in time"
            )
            raise
        except MasqdError as e:
            await _abort(context, e, self._detail(e))
            raise
        return _resync_response(results)

    def _detail(self, e: MasqdError) -> str:
        if e.kind == Kind.NO_CONFIG:
            return "no valid config has been loaded yet, so no rules are written: " + (
                self.sup.config_state.error or "the config is being read"
            )
        if e.kind == Kind.STOPPING:
            return "masqd is shutting down"
        return str(e)

    async def GetStatus(self, request: pb.GetStatusRequest, context: Any) -> pb.Status:
        return self._status()

    def _status(self) -> pb.Status:
        return convert.status(self.sup.status(), self.sup.settings.health_timeout)

    async def GetRules(self, request: pb.GetRulesRequest, context: Any) -> pb.GetRulesResponse:
        families = await _families(request.family, self.sup, context)
        response = pb.GetRulesResponse()
        for family in families:
            outcome = await _read_live(self.sup, family)
            desired = self.sup.desired(family)
            response.families.append(
                convert.family_rules(
                    family,
                    self.sup.settings.render.chain,
                    outcome,
                    desired,
                    self.sup.rule_origins(family),
                    first=self.sup.settings.render.first,
                )
            )
        return response

    async def SetIntervalOverride(
        self, request: pb.SetIntervalOverrideRequest, context: Any
    ) -> pb.Status:
        if not request.HasField("interval") or not request.HasField("ttl"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "interval and ttl are required")
        try:
            self.sup.set_override(
                convert.seconds_of(request.interval, "interval"),
                convert.seconds_of(request.ttl, "ttl"),
            )
        except MasqdError as e:
            await _abort(context, e, str(e))
        return self._status()

    async def ClearIntervalOverride(
        self, request: pb.ClearIntervalOverrideRequest, context: Any
    ) -> pb.Status:
        self.sup.clear_override()
        return self._status()

    async def Explain(self, request: pb.ExplainRequest, context: Any) -> pb.Explanation:
        family = convert.FAMILY_OF.get(request.family) if request.family else None
        try:
            packet = packet_of(request.destination, request.source, family)
        except MasqdError as e:
            await _abort(context, e, str(e))
            raise
        await _families(convert.FAMILY[Family(packet.destination.version)], self.sup, context)
        try:
            async with asyncio.timeout(LIVE_READ_TIMEOUT):
                explanation = await _result(self.sup.explain(packet))
        except TimeoutError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the worker is busy; try again")
            raise
        except MasqdError as e:
            await _abort(context, e, str(e))
            raise
        return explanation_message(explanation, self.sup.mode, self.sup.settings.config_source)

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


_awaited: dict[Future[Any], asyncio.Future[Any]] = {}
"""The loop's view of each supervisor future being awaited: callers served by the same sync
share its future, so it is wrapped (one hop from the runner's thread to the loop) once."""


async def _result(future: Future[T]) -> T:
    """The future's result, within the caller's own timeout.

    A future already done is read at once. Otherwise the caller waits through a shield on the
    shared wrapper, so a caller that gives up cancels only its own wait.
    """
    if future.done():
        return future.result()
    shared = _awaited.get(future)
    if shared is None:
        shared = _awaited[future] = asyncio.wrap_future(future)
        shared.add_done_callback(lambda _: _awaited.pop(future, None))
    return await asyncio.shield(shared)


@functools.lru_cache(maxsize=16)
def _resync_response(results: tuple[SyncResult, ...]) -> pb.ResyncResponse:
    """The answer for these results. Every caller a sync served gets the same answer, so it is
    built once; the message is only ever serialized, never changed."""
    return pb.ResyncResponse(results=[convert.sync_result(r) for r in results])


async def _abort(context: Any, e: MasqdError, detail: str) -> None:
    await context.abort(STATUS_CODE.get(e.kind, grpc.StatusCode.INTERNAL), detail)


async def _read_live(sup: Supervisor, family: Family) -> ReadOutcome:
    """The worker's read of the live chain, or why there is none (a busy worker, shutdown)."""
    try:
        async with asyncio.timeout(LIVE_READ_TIMEOUT):
            return await _result(sup.read_live(family))
    except TimeoutError:
        return ReadOutcome(None, "the worker is busy; try again", Kind.TIMEOUT)
    except MasqdError as e:
        return ReadOutcome(None, str(e), e.kind)


def _offer(queue: asyncio.Queue[Event | None], event: Event | None) -> None:
    """Queue an event for a watcher; a watcher too slow to keep up loses the oldest."""
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(event)


async def _families(value: pb.Family, sup: Supervisor, context: Any) -> tuple[Family, ...]:
    if value == pb.FAMILY_UNSPECIFIED:
        return sup.settings.families
    family = convert.FAMILY_OF.get(value)
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
        self._health = HealthService(supervisor, (SERVICE_NAME,))
        self._watch = limits.ConnectionWatch(path)
        self._thread = threading.Thread(target=self._loop.run_forever, name="grpc", daemon=True)
        self._unsubscribe: Callable[[], None] | None = None
        self._lock_fd: int | None = None
        self._looking: asyncio.Task[None] | None = None

    def start(self, lock_fd: int | None = None) -> None:
        """Bind the socket (0600 from the first moment) and start serving.

        lock_fd is the socket's lock when the caller already claimed it (see socketfile).
        """
        self._lock_fd = claim_socket(self.path) if lock_fd is None else lock_fd
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        self._unsubscribe = self.sup.events.subscribe(lambda _e: self._refresh_health())
        log.info("control API listening on unix:%s", self.path)

    async def _start(self) -> None:
        server = grpc.aio.server(options=limits.SERVER_OPTIONS)
        pb_grpc.add_ControlServicer_to_server(ControlServicer(self.sup), server)  # type: ignore[no-untyped-call]
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
            group = self.group
            gid = int(group) if group.isascii() and group.isdigit() else grp.getgrnam(group).gr_gid
            os.chown(self.path, -1, gid)
        self._server = server
        self._refresh_health()
        self._looking = asyncio.get_running_loop().create_task(self._look())

    async def _look(self) -> None:
        """Now and then: the connections against their cap, the health against its timeout."""
        while True:
            await asyncio.sleep(LOOK_EVERY)
            self._watch.look()
            self._refresh_health()

    def _refresh_health(self) -> None:
        """On every event, from any thread: what changed is applied on the server's loop."""

        def schedule(changed: dict[str, bool]) -> None:
            if not self._loop.is_closed():
                asyncio.run_coroutine_threadsafe(self._health.apply(changed), self._loop)

        self._health.changes(schedule)

    def stop(self, grace: float = 1.0) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._looking is not None:
            self._loop.call_soon_threadsafe(self._looking.cancel)
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
