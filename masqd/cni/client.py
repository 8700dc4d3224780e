"""The little of masqd's control API the plugin uses, over its unix socket, within a deadline.

gRPC and the generated messages are imported when a client is made, not when this module is:
DEL, GC and VERSION never pay for them.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any


class MasqdError(Exception):
    """masqd answered, but not with what we asked for (a failed sync, a rejected request)."""


class Unreachable(MasqdError):
    """masqd could not be asked in time: no socket, nobody listening, or past the deadline."""


@dataclass(frozen=True)
class FamilyState:
    family: str
    """ipv4 or ipv6."""
    in_sync: bool
    """The live chain matches the desired rules."""
    problem: str = ""
    """Why not, in words; empty when in sync."""


class Client:
    """A connection to masqd; every call shares one deadline (time.monotonic() seconds)."""

    def __init__(self, socket: str, deadline: float) -> None:
        try:
            is_socket = stat.S_ISSOCK(os.stat(socket).st_mode)
        except FileNotFoundError:
            raise Unreachable(f"masqd is not running: no socket at {socket}") from None
        except OSError as e:
            raise Unreachable(f"cannot reach masqd's socket: {e}") from None
        if not is_socket:
            raise Unreachable(f"{socket} is not a socket")
        import grpc

        from masqd.api.v1 import control_pb2

        self._grpc: Any = grpc
        self._pb: Any = control_pb2
        self._service = control_pb2.DESCRIPTOR.services_by_name["Control"].full_name
        self.socket = socket
        self.deadline = deadline
        self._channel = grpc.insecure_channel(
            f"unix:{os.path.abspath(socket)}", options=[("grpc.enable_http_proxy", 0)]
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._channel.close()

    def resync(self) -> None:
        """Ask for a sync counted under "cni" and wait until one that started after the
        request has finished; raise MasqdError when a family's sync failed."""
        pb = self._pb
        request = pb.ResyncRequest(reason=pb.SYNC_REASON_CNI, no_wait=False)
        response = self._call("Resync", request, pb.ResyncResponse)
        failed = [
            f"{self._family(r.family)}: {r.error or 'failed'}" for r in response.results if not r.ok
        ]
        if failed:
            raise MasqdError("masqd's sync failed: " + "; ".join(failed))

    def rules(self) -> list[FamilyState]:
        """Whether each family's live chain matches what masqd wants, as masqd reads it now."""
        pb = self._pb
        response = self._call("GetRules", pb.GetRulesRequest(), pb.GetRulesResponse)
        return [self._state(f) for f in response.families]

    def ping(self) -> None:
        """Succeed when masqd answers a status request in time."""
        self._call("GetStatus", self._pb.GetStatusRequest(), self._pb.Status)

    def _call(self, method: str, request: Any, response_type: Any) -> Any:
        grpc = self._grpc
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise Unreachable(f"masqd did not answer in time (before {method})")
        stub = self._channel.unary_unary(
            f"/{self._service}/{method}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=response_type.FromString,
        )
        try:
            return stub(request, timeout=remaining, wait_for_ready=True)
        except grpc.RpcError as e:
            code, details = e.code(), e.details()
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise Unreachable(
                    f"masqd did not answer {method} in time on {self.socket}: {details}"
                ) from None
            if code == grpc.StatusCode.UNAVAILABLE:
                raise Unreachable(f"masqd is unavailable on {self.socket}: {details}") from None
            raise MasqdError(f"masqd refused {method}: {code.name}: {details}") from None

    def _family(self, value: int) -> str:
        return str(self._pb.Family.Name(value)).removeprefix("FAMILY_").lower()

    def _state(self, rules: Any) -> FamilyState:
        family = self._family(rules.family)
        if rules.in_sync:
            return FamilyState(family, True)
        if rules.error:
            problem = f"reading the live chain failed: {rules.error}"
        elif not rules.chain_exists:
            problem = f"chain {rules.chain} is missing"
        elif not rules.jump_present:
            problem = f"the POSTROUTING jump to {rules.chain} is missing"
        else:
            problem = (
                f"chain {rules.chain} holds {len(rules.live)} rules that differ from the "
                f"{len(rules.desired)} desired"
            )
        return FamilyState(family, False, problem)
