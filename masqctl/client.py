"""The client library of masqd's control API: one unix-socket channel, typed calls, plain errors.

Every gRPC failure leaves this module as an `errors.CommandError`: `Unreachable` when nothing
answers on the socket, `ApiError` (carrying the gRPC status name) when masqd refused or failed.
The CLI and masq-cni use it alike:

    with Client("/run/masqd/masqd.sock") as masqd:
        response = masqd.resync(timeout=2.0)
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from masqctl.errors import ApiError, Exit, Unreachable
from masqd.api.v1 import control_pb2 as pb
from masqd.api.v1 import control_pb2_grpc as pb_grpc

DEFAULT_SOCKET = "/run/masqd/masqd.sock"
DEFAULT_TIMEOUT = 5.0
"""Seconds any call other than a waiting Resync or Watch may take."""

T = TypeVar("T")


class Client:
    """A connection to masqd's control API on a unix socket."""

    def __init__(self, socket: str = DEFAULT_SOCKET, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.socket = socket
        self.timeout = timeout
        self._channel = grpc.insecure_channel(f"unix:{os.path.abspath(socket)}")
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
        return self._call(self._control.GetStatus, pb.GetStatusRequest(), pb.Status)

    def rules(self, family: pb.Family = pb.FAMILY_UNSPECIFIED) -> pb.GetRulesResponse:
        return self._call(
            self._control.GetRules, pb.GetRulesRequest(family=family), pb.GetRulesResponse
        )

    def resync(
        self,
        family: pb.Family = pb.FAMILY_UNSPECIFIED,
        *,
        wait: bool = True,
        timeout: float = 10.0,
        reason: pb.SyncReason = pb.SYNC_REASON_API,
    ) -> pb.ResyncResponse:
        """Ask for a sync; with wait, return each family's result once a new sync finished."""
        request = pb.ResyncRequest(family=family, no_wait=not wait, reason=reason)
        return self._call(
            self._control.Resync,
            request,
            pb.ResyncResponse,
            timeout=timeout,
            deadline_message=f"the sync did not finish within {timeout:g}s",
        )

    def set_interval_override(self, interval: float, ttl: float) -> pb.Status:
        request = pb.SetIntervalOverrideRequest()
        request.interval.FromNanoseconds(round(interval * 1e9))
        request.ttl.FromNanoseconds(round(ttl * 1e9))
        return self._call(self._control.SetIntervalOverride, request, pb.Status)

    def clear_interval_override(self) -> pb.Status:
        return self._call(
            self._control.ClearIntervalOverride, pb.ClearIntervalOverrideRequest(), pb.Status
        )

    def health(self, service: str = "") -> bool:
        """Whether the health service reports `service` ("" overall, "ipv4", "ipv6") SERVING."""
        request = health_pb2.HealthCheckRequest(service=service)
        response = self._call(self._health.Check, request, health_pb2.HealthCheckResponse)
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)

    def watch(self) -> EventStream:
        """Subscribe to masqd's events; the stream is live once `subscribed()` returned."""
        self._check_socket()
        return EventStream(self, self._control.Watch(pb.WatchRequest()))

    # -- error mapping ---------------------------------------------------------------------

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
        try:
            return cast(T, method(request, timeout=timeout))
        except grpc.RpcError as e:
            message = deadline_message or f"masqd did not answer within {timeout:g}s"
            raise self.error(e, message) from e

    def _check_socket(self) -> None:
        if not os.path.exists(self.socket):
            raise Unreachable(
                self.socket, "no such socket (is masqd running? set --socket or MASQD_SOCKET)"
            )

    def error(self, e: grpc.RpcError, deadline_message: str = "") -> Exception:
        """The CommandError for a failed call."""
        code = cast(grpc.StatusCode, e.code())
        details = cast(str, e.details() or "")
        if code == grpc.StatusCode.UNAVAILABLE:
            return Unreachable(self.socket, _explain_unavailable(details))
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return ApiError(code.name, deadline_message or details)
        exit_code = Exit.USAGE if code == grpc.StatusCode.INVALID_ARGUMENT else Exit.FAILED
        return ApiError(code.name, f"masqd refused: {details} ({code.name})", exit_code)


class EventStream:
    """A Watch call: iterate for events, `cancel()` (from any thread) to end it."""

    def __init__(self, client: Client, call: Any) -> None:
        self._client = client
        self._call = call
        self._cancelled = threading.Event()

    def subscribed(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait until masqd has subscribed us: every event from now on will arrive."""
        done = threading.Event()
        failure: list[BaseException] = []

        def headers() -> None:
            try:
                self._call.initial_metadata()
            except BaseException as e:  # the call failed before its headers
                failure.append(e)
            done.set()

        threading.Thread(target=headers, daemon=True).start()
        if not done.wait(timeout):
            self.cancel()
            raise Unreachable(self._client.socket, f"no answer to Watch within {timeout:g}s")
        if self._call.done() and not self._cancelled.is_set():
            self._raise_from_call()

    def __iter__(self) -> Iterator[pb.Event]:
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
        code = self._call.code()
        if code != grpc.StatusCode.OK:
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
