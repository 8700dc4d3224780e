"""Wall time of a pod network ADD through masq-cni, next to the bridge plugin's own ADD.

    python bench/cni_add.py [--plugin dist/masq-cni] [--rounds 20]      (as root)

A node network namespace with masqd running in it (nft), and the test runtime
(tests/support/cni_runtime.py) running the conflist bridge + host-local, then masq-cni, each
plugin with an empty environment inside the node namespace. Every round creates a fresh pod
namespace, ADDs it, and DELs it. Per round it records how long each plugin's ADD took (wall
clock around the exec, `ip netns exec` included for both); it prints the median and range of
each and the ratio of the medians (the goal: masq-cni's ADD at most 3x the bridge's), masq-cni's
floor (VERSION: start-up only; ADD with no masqd socket: start-up and config, no call), and the
same Resync from a client that is already running (masqd's own share of an ADD).

Last, why the plugin speaks gRPC through masqd.client.h2transport: the start-up of this
checkout's Python (`-I -S`) bare, importing the plugin's ADD path, and importing grpcio (and the
h2 library, when it is installed), each a fresh process, medians of the same rounds.
Runs alone: it does not need `python -m bench`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import site
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from masqd.api.v1 import control_pb2 as pb  # noqa: E402
from tests.support import cni_runtime, netns  # noqa: E402
from tests.support.daemon import Masqd  # noqa: E402

CONFIG = "nonMasqueradeCIDRs: [10.0.0.0/8]\nmasqOutBound: true\n"


def summary(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    return f"{statistics.median(ms):7.1f} ms  (min {ms[0]:.1f}, max {ms[-1]:.1f}, n={len(ms)})"


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def import_costs(rounds: int) -> list[tuple[str, list[float]]]:
    """Fresh-process start-up (-I -S, as the standalone build starts) with nothing, the
    plugin's ADD imports, grpcio, h2."""
    paths = [str(ROOT), *site.getsitepackages()]
    prefix = f"import sys; sys.path[:0] = {paths!r}; "
    cases = [
        ("python -I -S (nothing imported)", "pass"),
        ("python -I -S, masq-cni's ADD path", "import masqd.cni.plugin, masqd.client.light"),
        ("python -I -S, grpc + masqd.api.v1", "import grpc, masqd.api.v1.control_pb2"),
    ]
    if importlib.util.find_spec("h2") is not None:
        cases.append(("python -I -S, h2 (connection)", "import h2.connection, h2.config"))
    samples: dict[str, list[float]] = {name: [] for name, _ in cases}
    for _ in range(rounds):
        for name, code in cases:
            start = time.perf_counter()
            subprocess.run([sys.executable, "-I", "-S", "-c", prefix + code], check=True)
            samples[name].append(time.perf_counter() - start)
    return [(name, samples[name]) for name, _ in cases]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plugin", default=str(ROOT / "dist" / "masq-cni"))
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    plugin = Path(args.plugin).absolute()
    if not plugin.exists():
        print(f"{plugin} does not exist: run `make cni-bin` first", file=sys.stderr)
        return 2
    with (
        netns.namespace("bench-node") as node,
        tempfile.TemporaryDirectory(prefix="mqcnib") as tmp,
    ):
        work = Path(tmp)
        config = work / "ip-masq-agent"
        config.write_text(CONFIG)
        daemon = Masqd(node, work, config, "--iptables-mode", "nft").start()
        try:
            bin_dir = cni_runtime.bin_dir(work / "bin", plugin)
            conflist = cni_runtime.bridge_conflist(
                "bench", "mqbench0", "10.244.1.0/24", work / "ipam", {"socket": daemon.socket}
            )
            runtime = cni_runtime.Runtime(node, conflist, [bin_dir])
            bridge, masq_cni = [], []
            for i in range(args.rounds + 2):  # the first two warm caches and are dropped
                with netns.namespace("bench-pod") as pod:
                    runtime.add(f"pod{i}", f"/var/run/netns/{pod}")
                    if i >= 2:
                        bridge.append(runtime.last("bridge").seconds)
                        masq_cni.append(runtime.last("masq-cni").seconds)
                    runtime.delete(f"pod{i}", f"/var/run/netns/{pod}")
            floor_version, floor_nosocket, warm = [], [], []
            env = {"CNI_CONTAINERID": "x", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0"}
            prev = '{"cniVersion":"1.0.0","ips":[]}'
            nosocket = f'{{"cniVersion":"1.0.0","socket":"{work}/none.sock","prevResult":{prev}}}'
            for _ in range(args.rounds):
                call = runtime.exec("masq-cni", {"CNI_COMMAND": "VERSION"}, "{}")
                floor_version.append(call.seconds)
                call = runtime.exec("masq-cni", {"CNI_COMMAND": "ADD", **env}, nosocket)
                floor_nosocket.append(call.seconds)
                start = time.perf_counter()
                daemon.stub().Resync(pb.ResyncRequest(reason=pb.SYNC_REASON_API), timeout=10)
                warm.append(time.perf_counter() - start)
        finally:
            daemon.stop()
    imports = import_costs(args.rounds)
    ratio = median_ms(masq_cni) / median_ms(bridge)
    print(f"plugin: {plugin}")
    print(f"bridge + host-local ADD:          {summary(bridge)}")
    print(f"masq-cni ADD (resync, wait):      {summary(masq_cni)}")
    print(f"ratio of the medians:             {ratio:7.2f}x  (goal: at most 3x)")
    print(f"masq-cni VERSION (start-up):      {summary(floor_version)}")
    print(f"masq-cni ADD, no masqd socket:    {summary(floor_nosocket)}")
    print(f"Resync(wait) from a warm client:  {summary(warm)}")
    for name, samples in imports:
        print(f"{name + ':':34}{summary(samples)}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
