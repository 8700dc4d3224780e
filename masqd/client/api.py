"""The one client of masqd's control API (`masqd.api.v1`) over grpcio, for masqctl: see the
package (`masqd.client`), which re-exports these names.

    with Client("/run/masqd/masqd.sock") as masqd:
        response = masqd.resync(timeout=2.0)

The transport (grpcio) is imported when a Client is built, not with this module, so a command
that never talks to masqd never pays for it. Every failure leaves as a `ClientError`:
`Unreachable` when nothing answers on the socket in time, `ApiError` (with the gRPC status
name) when masqd answered with an error. Calls share an optional deadline (a masq-cni
invocation has one budget for all it asks); each call also has its own timeout.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar, cast

from masqd.api import families
from masqd.client.errors import ApiError, ClientError, Unreachable
from masqd.core.defaults import DEFAULT_SOCKET

if TYPE_CHECKING:
    from masqd.api.v1 import control_pb2 as pb

DEFAULT_TIMEOUT = 5.0
"""Seconds any call other than a waiting Resync or Watch may take."""

T = TypeVar("T")


class Client:
    """A connection to masqd's control API on a unix socket."""

    def __init__(
        self,
        socket: str = DEFAULT_SOCKET,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        deadline: float | None = None,
        wait_for_ready: bool = False,
    ) -> None:
        """deadline: time.monotonic() by which every call must be done; wait_for_ready: keep
        trying to connect until then (masqd may be restarting) instead of failing at once."""
        self.socket = socket
        self.timeout = timeout
        self.deadline = deadline
        self._wait_for_ready = wait_for_ready
        self._check_socket()
        import grpc
        from grpc_health.v1 import health_pb2_grpc

        from masqd.api.v1 import control_pb2_grpc as pb_grpc

        self._grpc: Any = grpc
        self._channel = grpc.insecure_channel(
            f"unix:{os.path.abspath(socket)}", options=[("grpc.enable_http_proxy", 0)]
        )
        self._control = pb_grpc.ControlStub(self._channel)  # type: ignore[no-untyped-call]
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    # -- the calls -------------------------------------------------------------------------

    def status(self) -> pb.Status:
        from masqd.api.v1 import control_pb2 as pb

        return self._call(self._control.GetStatus, pb.GetStatusRequest(), pb.Status)

    def rules(self, family: str = "") -> pb.GetRulesResponse:
        from masqd.api.v1 import control_pb2 as pb

        request = pb.GetRulesRequest(family=cast(Any, families.value_of_label(family)))
        return self._call(self._control.GetRules, request, pb.GetRulesResponse)

    def resync(
        self,
        family: str = "",
        *,
        wait: bool = True,
        timeout: float = 10.0,
        reason: str = "api",
    ) -> pb.ResyncResponse:
        """Ask for a sync (reason "api" or "cni"); with wait, return each family's result once
        a sync that started after the request has finished."""
        from masqd.api.v1 import control_pb2 as pb

        request = pb.ResyncRequest(
            family=cast(Any, families.value_of_label(family)),
            no_wait=not wait,
            reason=pb.SYNC_REASON_CNI if reason == "cni" else pb.SYNC_REASON_API,
        )
        return self._call(
            self._control.Resync,
            request,
            pb.ResyncResponse,
            timeout=timeout,
            deadline_message=f"the sync did not finish within {timeout:g}s",
        )

    def explain(self, destination: str, source: str = "", family: str = "") -> pb.Explanation:
        """What a new connection from source (empty: a pod) to destination gets, and why."""
        from masqd.api.v1 import control_pb2 as pb

        request = pb.ExplainRequest(
            destination=destination,
            source=source,
            family=cast(Any, families.value_of_label(family)),
        )
        return self._call(self._control.Explain, request, pb.Explanation)

    def set_interval_override(self, interval: float, ttl: float) -> pb.Status:
        from masqd.api.v1 import control_pb2 as pb

        request = pb.SetIntervalOverrideRequest()
        request.interval.FromNanoseconds(round(interval * 1e9))
        request.ttl.FromNanoseconds(round(ttl * 1e9))
        return self._call(self._control.SetIntervalOverride, request, pb.Status)

    def clear_interval_override(self) -> pb.Status:
        from masqd.api.v1 import control_pb2 as pb

        request = pb.ClearIntervalOverrideRequest()
        return self._call(self._control.ClearIntervalOverride, request, pb.Status)

    def health(self, service: str = "") -> bool:
        """Whether the health service reports `service` ("" overall, "ipv4", "ipv6") SERVING."""
        from grpc_health.v1 import health_pb2

        request = health_pb2.HealthCheckRequest(service=service)
        response = self._call(self._health.Check, request, health_pb2.HealthCheckResponse)
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)

    def watch(self) -> EventStream:
        """Subscribe to masqd's events; the stream is live once `subscribed()` returned."""
        from masqd.api.v1 import control_pb2 as pb

        self._check_socket()
        return EventStream(self, self._control.Watch(pb.WatchRequest()))

    # -- deadlines and errors --------------------------------------------------------------

    def _call(
        self,
        method: Callable[..., Any],
        request: Any,
        response_type: type[T],
        *,
        timeout: float | None = None,
        deadline_message: str = "",
    ) -> T:
        self._check_socket()
        timeout = self.timeout if timeout is None else timeout
        if self.deadline is not None:
            timeout = min(timeout, self.deadline - time.monotonic())
            if timeout <= 0:
                raise Unreachable(self.socket, "no time left to ask")
        try:
            return cast(T, method(request, timeout=timeout, wait_for_ready=self._wait_for_ready))
        except self._grpc.RpcError as e:
            message = deadline_message or f"masqd did not answer within {timeout:g}s"
            raise self.error(e, message) from None

    def _check_socket(self) -> None:
        try:
            mode = os.stat(self.socket).st_mode
        except FileNotFoundError:
            raise Unreachable(
                self.socket, "no such socket (is masqd running? set --socket or MASQD_SOCKET)"
            ) from None
        except OSError as e:
            raise Unreachable(self.socket, e.strerror or str(e)) from None
        if not stat.S_ISSOCK(mode):
            raise Unreachable(self.socket, "not a socket")

    def error(self, e: Any, deadline_message: str = "") -> ClientError:
        """The ClientError for a failed call (a grpc.RpcError)."""
        code = e.code()
        details = cast(str, e.details() or "")
        if code == self._grpc.StatusCode.UNAVAILABLE:
            return Unreachable(self.socket, _explain_unavailable(details))
        if code == self._grpc.StatusCode.DEADLINE_EXCEEDED:
            if self._wait_for_ready:  # never connected, or connected and not answered: alike
                return Unreachable(self.socket, deadline_message or details)
            return ApiError(code.name, deadline_message or details)
        return ApiError(code.name, f"masqd refused: {details} ({code.name})")


class EventStream:
    """A Watch call: iterate for events, `cancel()` (from any thread) to end it."""

    def __init__(self, client: Client, call: Any) -> None:
        self._client = client
        self._call = call
        self._cancelled = threading.Event()

    def subscribed(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait until masqd has subscribed us: every event from now on will arrive."""
        done = threading.Event()

        def headers() -> None:
            # A call that fails before its headers is told apart below.
            with contextlib.suppress(BaseException):
                self._call.initial_metadata()
            done.set()

        threading.Thread(target=headers, daemon=True).start()
        if not done.wait(timeout):
            self.cancel()
            raise Unreachable(self._client.socket, f"no answer to Watch within {timeout:g}s")
        if self._call.done() and not self._cancelled.is_set():
            self._raise_from_call()

    def __iter__(self) -> Iterator[pb.Event]:
        grpc = self._client._grpc
        try:
            yield from self._call
        except grpc.RpcError as e:
            if self._cancelled.is_set() or e.code() == grpc.StatusCode.CANCELLED:
                return
            raise self._client.error(e) from None

    def cancel(self) -> None:
        self._cancelled.set()
        self._call.cancel()

    def _raise_from_call(self) -> None:
        if self._call.code() != self._client._grpc.StatusCode.OK:
            raise self._client.error(self._call)


def _explain_unavailable(details: str) -> str:
    """gRPC's connect errors, said the way an operator needs them."""
    if "Connection refused" in details:
        return "connection refused: nothing listens there (a socket left by a stopped masqd?)"
    if "Permission denied" in details:
        return (
            "permission denied: the socket is 0600 by default; run as its owner, or start "
            "masqd with --socket-mode/--socket-group"
        )
    return details or "unavailable"
