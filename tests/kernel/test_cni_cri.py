"""masq-cni under a real container runtime: containerd's CRI plugin (libcni, as every runtime
uses it) runs the conflist bridge + host-local + masq-cni (the standalone build) for pod
sandboxes created through the CRI API, in a node network namespace with masqd running in it.

It checks what the kubelet would see and what a pod would feel: the sandbox comes up with the
bridge's address, masqd counted a `cni` sync for it, the pod's packets leave with the sources
masqd's config promises, the runtime runs masq-cni's DEL when the sandbox stops, and with masqd
stopped the pod starts anyway (failurePolicy ignore) or its sandbox fails with masq-cni's
"try again later" and is torn down (failurePolicy fail).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from masqd.api.v1 import control_pb2 as pb
from tests.conftest import require_root
from tests.kernel.test_cni import uplinked_node
from tests.support import cni_build, containerd, netns
from tests.support.cni_runtime import CNI_BIN
from tests.support.daemon import Masqd

SUBNET = "10.244.7.0/24"
MASQD_CONFIG = (
    "nonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16]\nmasqOutBound: true\n"
)


@dataclass
class Node:
    name: str
    dest: str
    workdir: Path
    masqd: Masqd
    cni_bin: Path
    cni_conf: Path
    calls: Path
    """masq-cni's invocations as the runtime made them, one line each (a shim logs them)."""

    def conflist(self, **masq_cni: Any) -> None:
        """bridge + host-local, then masq-cni: the only file in the runtime's conf dir."""
        network = {
            "cniVersion": "1.0.0",
            "name": "masq-cni-cri-test",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": f"mqcri{os.getpid() % 100000}",
                    "isGateway": True,
                    "ipMasq": False,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": SUBNET}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.workdir / "ipam"),
                    },
                },
                {"type": "masq-cni", "socket": self.masqd.socket, **masq_cni},
            ],
        }
        (self.cni_conf / "10-masq-cni-test.conflist").write_text(json.dumps(network, indent=2))

    def invocations(self) -> list[str]:
        return self.calls.read_text().splitlines() if self.calls.exists() else []

    def cni_syncs(self) -> int:
        return self.masqd.sync_count(pb.SYNC_REASON_CNI)

    def source_seen(self, netns_path: str, dst: str) -> str:
        """UDP from the sandbox's network namespace to dst; the source dest saw."""
        port = 20000 + int(time.monotonic() * 1000) % 20000
        receiver = subprocess.Popen(
            ["ip", "netns", "exec", self.dest, sys.executable, "-c", netns._RECEIVER,
             "0.0.0.0", str(port), "5"],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            assert receiver.stdout is not None and receiver.stdout.readline().strip() == "ready"
            deadline = time.monotonic() + 5
            while receiver.poll() is None and time.monotonic() < deadline:
                subprocess.run(
                    ["nsenter", f"--net={netns_path}", sys.executable, "-c", netns._SENDER,
                     dst, str(port)],
                    check=True,
                    timeout=10,
                )  # fmt: skip
                with contextlib.suppress(subprocess.TimeoutExpired):
                    receiver.wait(0.2)
            out, _ = receiver.communicate(timeout=10)
        finally:
            if receiver.poll() is None:
                receiver.kill()
                receiver.wait()
        assert out.strip(), f"no datagram from the sandbox reached {dst}"
        return out.strip()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    require_root()
    for tool in ("containerd", "ctr", "runc", "podman", "nsenter"):
        assert subprocess.run(["which", tool], capture_output=True).returncode == 0, (
            f"{tool} is missing (scripts/install-deps.sh installs it)"
        )
    plugin = cni_build.standalone()
    with uplinked_node() as (name, dest), tempfile.TemporaryDirectory(prefix="mqcri") as short:
        work = Path(short)
        cni_bin, cni_conf = work / "cni-bin", work / "net.d"
        cni_bin.mkdir()
        cni_conf.mkdir()
        for tool in ("bridge", "host-local", "loopback"):
            (cni_bin / tool).symlink_to(CNI_BIN / tool)
        calls = work / "masq-cni.calls"
        # The runtime runs this shim as masq-cni: it notes the command, then is the plugin.
        shim = cni_bin / "masq-cni"
        shim.write_text(
            f'#!/bin/sh\necho "$CNI_COMMAND $CNI_CONTAINERID" >> {calls}\nexec {plugin} "$@"\n'
        )
        shim.chmod(0o755)
        config = tmp_path / "ip-masq-agent"
        config.write_text(MASQD_CONFIG)
        daemon = Masqd(name, work, config, "--iptables-mode", "nft").start()
        try:
            yield Node(name, dest, work, daemon, cni_bin, cni_conf, calls)
        finally:
            daemon.stop()


def test_containerd_runs_masq_cni_for_pod_sandboxes(node: Node) -> None:
    """RunPodSandbox: ready with the bridge's address, one more cni sync in masqd, the pod's
    traffic masqueraded to the internet and not to the VPC; StopPodSandbox runs masq-cni's
    DEL; with masqd stopped, failurePolicy ignore still starts the pod."""
    node.conflist()
    with containerd.running(node.name, node.workdir / "ctrd", node.cni_bin, node.cni_conf) as rt:
        before = node.cni_syncs()
        sandbox = rt.run_sandbox("pod-a")
        status, _ = rt.status(sandbox)
        assert status.state == rt.pb.SANDBOX_READY
        address = status.network.ip
        assert address.startswith("10.244.7."), status
        assert node.cni_syncs() >= before + 1
        assert f"ADD {sandbox}" in node.invocations()
        pod_netns = rt.netns_path(sandbox)
        assert pod_netns.startswith(str(node.workdir / "ctrd" / "state"))
        assert node.source_seen(pod_netns, netns.DEST_V4["internet"]) == netns.NODE_UPLINK_V4
        assert node.source_seen(pod_netns, netns.DEST_V4["vpc"]) == address
        rt.stop_sandbox(sandbox)
        assert f"DEL {sandbox}" in node.invocations()
        rt.remove_sandbox(sandbox)

        node.masqd.stop()
        calls = len(node.invocations())
        sandbox = rt.run_sandbox("pod-b")
        status, _ = rt.status(sandbox)
        assert status.state == rt.pb.SANDBOX_READY and status.network.ip.startswith("10.244.7.")
        assert node.invocations()[calls:] == [f"ADD {sandbox}"]
        rt.stop_sandbox(sandbox)
        rt.remove_sandbox(sandbox)


def test_containerd_fails_the_sandbox_with_failure_policy_fail(node: Node) -> None:
    """masqd stopped and failurePolicy fail: RunPodSandbox fails with masq-cni's error 11
    (try again later), the runtime tears the network down again (DEL), nothing is left."""
    node.conflist(failurePolicy="fail", timeout="500ms")
    node.masqd.stop()
    with containerd.running(node.name, node.workdir / "ctrd", node.cni_bin, node.cni_conf) as rt:
        with pytest.raises(grpc.RpcError) as failed:
            rt.run_sandbox("pod-c")
        message = failed.value.details() or ""
        assert "masq-cni" in message or "try again later" in message, message
        assert "try again later" in message, message
        commands = [line.split()[0] for line in node.invocations()]
        assert commands[:1] == ["ADD"] and "DEL" in commands, commands
        assert containerd.list_sandbox_ids(rt) == []
