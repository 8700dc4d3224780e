"""The client's light path: the few calls masq-cni makes (Resync, GetRules, GetStatus), within
one deadline, without grpcio or protobuf.

The calls go through `h2transport` (gRPC over HTTP/2 with the standard library) and the
messages through `wire` (protobuf's wire format by hand), so a pod start pays for neither
runtime. masqd answers them with its ordinary grpcio server: the same masqd.api.v1 calls the
grpcio path (`api.py`) makes, with the same errors (`errors.py`).
"""

from __future__ import annotations

import time

from masqd.client import h2transport, wire
from masqd.client.errors import ApiError, ClientError, SyncFailed, Unreachable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    T = TypeVar("T")

SERVICE = "/masqd.api.v1.Control/"


class FamilyState:
    """Whether one family's live chain matches the desired rules, and why not, in words."""

    __slots__ = ("family", "in_sync", "problem")

    def __init__(self, family: str, in_sync: bool, problem: str = "") -> None:
        self.family = family
        self.in_sync = in_sync
        self.problem = problem


class Client:
    """masqd at a socket; every call shares one deadline (time.monotonic() seconds)."""

    def __init__(self, socket: str, deadline: float) -> None:
        self.socket = socket
        self.deadline = deadline

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        """Each call has a connection of its own, closed when it returns: nothing to close."""

    def resync(self) -> None:
        """Ask for a sync counted under "cni" and wait until one that started after the
        request has finished; SyncFailed when a family's sync failed."""
        answer = self._call("Resync", wire.resync_request(wire.SYNC_REASON_CNI))
        results = _decoded(wire.resync_response, answer, "Resync")
        failed = [f"{r.family}: {r.error or 'failed'}" for r in results if not r.ok]
        if failed:
            raise SyncFailed("masqd's sync failed: " + "; ".join(failed))

    def rules(self) -> list[FamilyState]:
        """Whether each family's live chain matches what masqd wants, as masqd reads it now."""
        answer = self._call("GetRules", wire.GET_RULES_REQUEST)
        return [_state(f) for f in _decoded(wire.get_rules_response, answer, "GetRules")]

    def ping(self) -> None:
        """Succeed when masqd answers a status request in time."""
        self._call("GetStatus", wire.GET_STATUS_REQUEST)

    def _call(self, method: str, request: bytes) -> bytes:
        if self.deadline - time.monotonic() <= 0:
            raise Unreachable(self.socket, f"no time left to ask ({method})")
        try:
            return h2transport.unary_call(self.socket, SERVICE + method, request, self.deadline)
        except h2transport.CallError as e:
            if e.unreachable or e.code in (h2transport.DEADLINE_EXCEEDED, h2transport.UNAVAILABLE):
                raise Unreachable(self.socket, f"{e.message} ({method})") from None
            status = h2transport.STATUS_NAMES.get(e.code, str(e.code))
            raise ApiError(status, f"masqd refused {method}: {e}") from None


def _decoded(decode: Callable[[bytes], T], answer: bytes, method: str) -> T:
    try:
        return decode(answer)
    except wire.DecodeError as e:
        raise ClientError(f"masqd's answer to {method} is not the message expected: {e}") from None


def _state(rules: wire.FamilyRules) -> FamilyState:
    if rules.in_sync:
        return FamilyState(rules.family, True)
    if rules.error:
        problem = f"reading the live chain failed: {rules.error}"
    elif not rules.chain_exists:
        problem = f"chain {rules.chain} is missing"
    elif not rules.jump_present:
        problem = f"the POSTROUTING jump to {rules.chain} is missing"
    else:
        problem = (
            f"chain {rules.chain} holds {rules.live} rules that differ from the "
            f"{rules.desired} desired"
        )
    return FamilyState(rules.family, False, problem)
