"""A burst of requests from many clients, in one of two shapes:

- `concurrent`: every client sends all its requests at once (500 in flight);
- `sequential`: each client sends its requests one after another, each once the previous one
  was answered (50 in flight at a time, as pods starting in waves would).

The clients run in a process of their own (`python -m bench.burst SOCKET ...`), as CNI plugin
invocations do on a node, with grpc.aio, so the client's own Python work does not share a GIL
with the masqd under test. `rpc=health` sends the cheapest RPC the server has (Health.Check):
the floor any gRPC call pays on this machine, to read the Resync figure against.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field


@dataclass
class BurstResult:
    latencies: list[float] = field(default_factory=list)
    """Seconds from each answered request's send to its answer."""
    answered: int = 0
    span: float = 0.0
    """Seconds from the first send to the last answer."""
    errors: list[str] = field(default_factory=list)


SHAPES = ("concurrent", "sequential")


def burst(
    socket: str,
    clients: int = 50,
    per_client: int = 10,
    rpc: str = "resync",
    shape: str = "concurrent",
) -> BurstResult:
    """Run the clients in a child process and return what they saw."""
    argv = [sys.executable, "-m", "bench.burst", socket, str(clients), str(per_client), rpc, shape]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"the burst client failed: {proc.stderr.strip()[-2000:]}")
    return BurstResult(**json.loads(proc.stdout))


async def _clients(socket: str, clients: int, per_client: int, rpc: str, shape: str) -> BurstResult:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from masqd.api.v1 import control_pb2 as pb
    from masqd.api.v1 import control_pb2_grpc as pb_grpc

    channels = [grpc.aio.insecure_channel(f"unix:{socket}") for _ in range(clients)]
    await asyncio.gather(*(asyncio.wait_for(c.channel_ready(), 10) for c in channels))
    result = BurstResult()

    async def one(channel: grpc.aio.Channel) -> None:
        sent = time.perf_counter()
        try:
            if rpc == "health":
                stub = health_pb2_grpc.HealthStub(channel)
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=60)
            else:
                response = await pb_grpc.ControlStub(channel).Resync(pb.ResyncRequest(), timeout=60)
                if not response.results or not all(r.ok for r in response.results):
                    result.errors.append(str(response))
                    return
        except grpc.RpcError as e:
            result.errors.append(f"{e.code()}: {e.details()}")
            return
        result.latencies.append(time.perf_counter() - sent)
        result.answered += 1

    async def in_turn(channel: grpc.aio.Channel) -> None:
        for _ in range(per_client):
            await one(channel)

    start = time.perf_counter()
    if shape == "sequential":
        await asyncio.gather(*(in_turn(c) for c in channels))
    else:
        await asyncio.gather(*(one(c) for c in channels for _ in range(per_client)))
    result.span = time.perf_counter() - start
    await asyncio.gather(*(c.close() for c in channels))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.burst")
    parser.add_argument("socket")
    parser.add_argument("clients", type=int)
    parser.add_argument("per_client", type=int)
    parser.add_argument("rpc", choices=("resync", "health"))
    parser.add_argument("shape", choices=SHAPES)
    args = parser.parse_args()
    result = asyncio.run(_clients(args.socket, args.clients, args.per_client, args.rpc, args.shape))
    print(json.dumps(result.__dict__))
    return 0


if __name__ == "__main__":
    sys.exit(main())
