"""A plain gRPC client of masqd's API for the daemon figures."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from masqd.api.v1 import control_pb2 as pb
from masqd.api.v1 import control_pb2_grpc as pb_grpc


def resync_many(socket: str, count: int, before_each: Callable[[], object] | None = None) -> None:
    """count Resyncs (both families, wait), each checked; before_each runs before every one."""
    with grpc.insecure_channel(f"unix:{socket}") as channel:
        stub = pb_grpc.ControlStub(channel)
        for _ in range(count):
            if before_each is not None:
                before_each()
            response = stub.Resync(pb.ResyncRequest(), timeout=30)
            failed = [r.error for r in response.results if not r.ok]
            if failed or not response.results:
                raise RuntimeError(f"Resync failed: {failed or 'no results'}")
