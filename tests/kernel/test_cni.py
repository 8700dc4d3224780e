"""masq-cni, the chained CNI plugin: the protocol (errors, VERSION, STATUS, GC, CHECK) against a
fake masqd, and end to end behind the real reference bridge plugin with a real masqd, both as
`python -m masqd.cni` and as the standalone build (dist/masq-cni) run with an empty
environment."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from masqd.api.v1 import control_pb2 as pb
from masqd.api.v1 import control_pb2_grpc as pb_grpc
from tests.conftest import require_root
from tests.support import cni_build, cni_runtime, netns
from tests.support.daemon import Masqd, wait_until
from tests.support.paths import ROOT

SUBNET = "10.244.1.0/24"
# masqd's config in the node: RFC 1918 keeps the pod's address, the rest leaves as the node.
MASQD_CONFIG = """
nonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16]
masqOutBound: true
"""
PREV_RESULT = {
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "eth0", "mac": "0a:58:0a:f4:01:02", "sandbox": "/var/run/netns/x"}],
    "ips": [{"address": "10.244.1.2/24", "gateway": "10.244.1.1", "interface": 0}],
    "routes": [{"dst": "0.0.0.0/0"}],
    "dns": {},
}
POD_ENV = {"CNI_CONTAINERID": "c1", "CNI_NETNS": "/var/run/netns/x", "CNI_IFNAME": "eth0"}


# --- running the plugin ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def dev_plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """masq-cni from this checkout, as an executable a runtime can find by name."""
    path = tmp_path_factory.mktemp("dev-cni") / "masq-cni"
    path.write_text(f'#!/bin/sh\nexec {sys.executable} -m masqd.cni "$@"\n')
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def standalone() -> Path:
    """dist/masq-cni as `make cni-bin` builds it (into a directory of this run's own)."""
    return cni_build.standalone()


def invoke(
    plugin: Path, command: str | None, config: Any = None, stdin: str | None = None, **env: str
) -> cni_runtime.Call:
    """Run the plugin here (no namespace) with only the given CNI_* variables."""
    variables = {**({"CNI_COMMAND": command} if command is not None else {}), **env}
    data = stdin if stdin is not None else json.dumps(config) if config is not None else ""
    argv = ["env", "-i", *(f"{k}={v}" for k, v in variables.items()), str(plugin)]
    start = time.perf_counter()
    proc = subprocess.run(argv, input=data, capture_output=True, text=True, timeout=60)
    return cni_runtime.Call(
        "masq-cni",
        command or "",
        proc.returncode,
        proc.stdout,
        proc.stderr,
        time.perf_counter() - start,
    )


def netconf(version: str = "1.0.0", prev: Any = PREV_RESULT, **plugin: Any) -> dict[str, Any]:
    config: dict[str, Any] = {"cniVersion": version, "name": "k8s-pod-network", "type": "masq-cni"}
    if prev is not None:
        config["prevResult"] = prev
    return {**config, **plugin}


def assert_error(call: cni_runtime.Call, code: int, *words: str) -> dict[str, Any]:
    """The call failed with the spec's error object (and only that) on stdout."""
    assert call.returncode != 0, call
    error = json.loads(call.stdout)
    assert set(error) <= {"cniVersion", "code", "msg", "details"}, error
    assert error["code"] == code, error
    assert error["cniVersion"] and error["msg"], error
    text = f"{error['msg']} {error.get('details', '')}"
    for word in words:
        assert word in text, error
    return error


# --- a fake masqd, for what a real one will not do on demand -----------------------------------


@dataclass
class FakeMasqd(pb_grpc.ControlServicer):
    socket: str
    resync_delay: float = 0.0
    sync_error: str = ""
    in_sync: bool = True
    repairs: bool = False
    """A resync puts the chain back in sync."""
    resyncs: list[pb.ResyncRequest] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)

    def Resync(self, request: pb.ResyncRequest, context: Any) -> pb.ResyncResponse:
        self.resyncs.append(request)
        self.released.wait(self.resync_delay)
        if self.repairs:
            self.in_sync = True
        return pb.ResyncResponse(
            results=[
                pb.SyncResult(family=pb.FAMILY_IPV4, ok=not self.sync_error, error=self.sync_error)
            ]
        )

    def GetRules(self, request: pb.GetRulesRequest, context: Any) -> pb.GetRulesResponse:
        return pb.GetRulesResponse(
            families=[
                pb.FamilyRules(
                    family=pb.FAMILY_IPV4,
                    chain="IP-MASQ-AGENT",
                    chain_exists=True,
                    jump_present=self.in_sync,
                    in_sync=self.in_sync,
                ),
                pb.FamilyRules(family=pb.FAMILY_IPV6, chain="IP-MASQ-AGENT", in_sync=True),
            ]
        )

    def GetStatus(self, request: pb.GetStatusRequest, context: Any) -> pb.Status:
        return pb.Status(version="fake")


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: unix socket paths are limited to 107 bytes."""
    with tempfile.TemporaryDirectory(prefix="mqcni") as d:
        yield Path(d)


@pytest.fixture
def fake_masqd(short_dir: Path) -> Iterator[FakeMasqd]:
    fake = FakeMasqd(str(short_dir / "masqd.sock"))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_ControlServicer_to_server(fake, server)
    server.add_insecure_port(f"unix:{fake.socket}")
    server.start()
    yield fake
    fake.released.set()
    server.stop(0).wait(5)


# --- the protocol -----------------------------------------------------------------------------


def test_version_lists_supported_versions(dev_plugin: Path) -> None:
    """VERSION answers with every version masq-cni accepts, in the version it was asked."""
    call = invoke(dev_plugin, "VERSION", {"cniVersion": "1.0.0"})
    assert call.returncode == 0, call
    assert call.output == {
        "cniVersion": "1.0.0",
        "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"],
    }


MALFORMED = {
    "no CNI_COMMAND": (None, netconf(), {}, 4, ["CNI_COMMAND"]),
    "unknown command": ("FROB", netconf(), {}, 4, ["FROB"]),
    "ADD without CNI_NETNS": (
        "ADD",
        netconf(),
        {"CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0"},
        4,
        ["CNI_NETNS"],
    ),
    "stdin not JSON": ("ADD", "{not json", POD_ENV, 6, ["decode"]),
    "stdin empty": ("ADD", "", POD_ENV, 6, ["no network configuration"]),
    "stdin a JSON list": ("DEL", "[1, 2]", POD_ENV, 6, ["JSON object"]),
    "stdin nested too deeply": ("ADD", "[" * 100_000, POD_ENV, 6, ["nested too deeply"]),
    "stdin too large": ("ADD", " " * (4 << 20) + "{}", POD_ENV, 6, ["too large", "4 MiB"]),
    "unsupported version": ("ADD", netconf("0.2.0"), POD_ENV, 1, ["0.2.0", "1.1.0"]),
    "no cniVersion": ("ADD", {"name": "n", "type": "masq-cni"}, POD_ENV, 1, ["missing"]),
    "STATUS in a 1.0.0 config": ("STATUS", netconf("1.0.0"), {}, 1, ["STATUS", "1.1.0"]),
    "GC in a 0.4.0 config": ("GC", netconf("0.4.0"), {}, 1, ["GC"]),
    "CHECK in a 0.3.1 config": ("CHECK", netconf("0.3.1"), POD_ENV, 1, ["CHECK"]),
    "no prevResult on ADD": ("ADD", netconf(prev=None), POD_ENV, 7, ["prevResult", "chained"]),
    "prevResult not an object": ("ADD", netconf(prev=[1]), POD_ENV, 7, ["prevResult"]),
    "unknown failurePolicy": (
        "ADD",
        netconf(failurePolicy="sometimes"),
        POD_ENV,
        2,
        ["failurePolicy", "sometimes"],
    ),
    "bad timeout": ("ADD", netconf(timeout="2 sec"), POD_ENV, 7, ["timeout", "2 sec"]),
    "timeout too long": ("ADD", netconf(timeout="2h"), POD_ENV, 7, ["timeout", "60s"]),
    "timeout a bool": ("ADD", netconf(timeout=True), POD_ENV, 7, ["timeout"]),
    "socket not a string": ("ADD", netconf(socket=5), POD_ENV, 7, ["socket"]),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_input_gets_the_spec_error_object(dev_plugin: Path, case: str) -> None:
    """Bad environment, stdin or config: the spec's error object with the right code, saying
    what is wrong, and a non-zero exit."""
    command, config, env, code, words = MALFORMED[case]
    stdin = config if isinstance(config, str) else json.dumps(config)
    assert_error(invoke(dev_plugin, command, stdin=stdin, **env), code, *words)


@pytest.mark.parametrize("data", [b"\xff{}", b'{"a": "\xc3"}', b"\x00"], ids=repr)
def test_undecodable_bytes_are_a_decoding_failure(data: bytes) -> None:
    """Bytes that are not UTF-8 JSON: error 6, not a crash (999)."""
    from masqd.cni import spec

    with pytest.raises(spec.CniError) as failed:
        spec.decode_config(data)
    assert failed.value.code == spec.DECODING_FAILURE


def test_error_object_speaks_the_config_version(dev_plugin: Path) -> None:
    """An error for a config we understand carries that config's cniVersion."""
    call = invoke(dev_plugin, "ADD", netconf("0.4.0", prev=None), **POD_ENV)
    assert assert_error(call, 7)["cniVersion"] == "0.4.0"
    call = invoke(dev_plugin, "STATUS", netconf("1.0.0", prev=None))
    assert assert_error(call, 1)["cniVersion"] == "1.0.0"


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_add_accepts_every_supported_version(
    dev_plugin: Path, fake_masqd: FakeMasqd, version: str
) -> None:
    """ADD passes prevResult through for each accepted config version."""
    prev = {**PREV_RESULT, "cniVersion": version}
    call = invoke(dev_plugin, "ADD", netconf(version, prev, socket=fake_masqd.socket), **POD_ENV)
    assert call.returncode == 0, call
    assert call.output == prev
    assert [r.reason for r in fake_masqd.resyncs] == [pb.SYNC_REASON_CNI]
    assert not fake_masqd.resyncs[0].no_wait


def test_add_keeps_unknown_prev_result_fields(dev_plugin: Path, fake_masqd: FakeMasqd) -> None:
    """prevResult comes out with the same JSON content, fields masq-cni does not know included."""
    prev = {**PREV_RESULT, "x-vendor": {"nested": [1, 2.5, None, "é"]}}
    call = invoke(dev_plugin, "ADD", netconf(prev=prev, socket=fake_masqd.socket), **POD_ENV)
    assert call.returncode == 0 and call.output == prev, call


@pytest.mark.parametrize("timeout", ["300ms", 0.3])
def test_slow_masqd_ignore_passes_through_within_timeout(
    dev_plugin: Path, fake_masqd: FakeMasqd, timeout: object
) -> None:
    """masqd slower than `timeout` (Go duration or seconds): the default policy logs and passes
    prevResult through once the timeout is up."""
    fake_masqd.resync_delay = 10
    call = invoke(dev_plugin, "ADD", netconf(socket=fake_masqd.socket, timeout=timeout), **POD_ENV)
    assert call.returncode == 0, call
    assert call.output == PREV_RESULT
    assert "in time" in call.stderr and "ignore" in call.stderr
    assert 0.3 <= call.seconds < 3.0  # the timeout, plus start-up on a busy machine


def test_slow_masqd_fail_returns_try_again_later(dev_plugin: Path, fake_masqd: FakeMasqd) -> None:
    """failurePolicy fail: masqd too slow is error 11, try again later."""
    fake_masqd.resync_delay = 10
    config = netconf(socket=fake_masqd.socket, timeout="300ms", failurePolicy="fail")
    call = invoke(dev_plugin, "ADD", config, **POD_ENV)
    assert_error(call, 11, "try again later", "in time")
    assert call.seconds < 3.0


def test_failed_sync_follows_failure_policy(dev_plugin: Path, fake_masqd: FakeMasqd) -> None:
    """masqd answers but its sync failed: fail gives error 11 with masqd's reason; ignore
    passes through."""
    fake_masqd.sync_error = "iptables-restore: line 3 failed"
    config = netconf(socket=fake_masqd.socket, failurePolicy="Fail")
    assert_error(invoke(dev_plugin, "ADD", config, **POD_ENV), 11, "line 3 failed")
    call = invoke(dev_plugin, "ADD", netconf(socket=fake_masqd.socket), **POD_ENV)
    assert call.returncode == 0 and call.output == PREV_RESULT, call


def test_no_masqd_socket(dev_plugin: Path, short_dir: Path) -> None:
    """No masqd at all: ignore passes through at once, fail says try again later."""
    socket = str(short_dir / "absent.sock")
    call = invoke(dev_plugin, "ADD", netconf(socket=socket), **POD_ENV)
    assert call.returncode == 0 and call.output == PREV_RESULT, call
    assert call.seconds < 2.0
    call = invoke(dev_plugin, "ADD", netconf(socket=socket, failurePolicy="fail"), **POD_ENV)
    assert_error(call, 11, "no socket", socket)


def test_socket_path_not_a_socket(dev_plugin: Path, short_dir: Path) -> None:
    """`socket` naming something that is not a socket fails at once, saying so."""
    path = short_dir / "file"
    path.write_text("")
    call = invoke(dev_plugin, "ADD", netconf(socket=str(path), failurePolicy="fail"), **POD_ENV)
    assert_error(call, 11, "not a socket")
    assert call.seconds < 2.0


def test_nobody_listening_on_socket(dev_plugin: Path, short_dir: Path) -> None:
    """A stale socket file (masqd killed): ADD gives masqd until the timeout, then goes on."""
    import socket as sockets

    path = str(short_dir / "stale.sock")
    with sockets.socket(sockets.AF_UNIX) as s:
        s.bind(path)  # bound, never listening: connections are refused
        call = invoke(dev_plugin, "ADD", netconf(socket=path, timeout="500ms"), **POD_ENV)
    assert call.returncode == 0 and call.output == PREV_RESULT, call
    assert call.seconds < 3.0


def test_del_always_succeeds(dev_plugin: Path, short_dir: Path) -> None:
    """DEL succeeds without masqd, without prevResult, without a network namespace, twice."""
    config = netconf(prev=None, socket=str(short_dir / "absent.sock"), failurePolicy="fail")
    for env in (POD_ENV, {"CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0"}, {}):
        for _ in range(2):
            call = invoke(dev_plugin, "DEL", config, **env)
            assert call.returncode == 0 and call.stdout == "", call


def test_gc_succeeds(dev_plugin: Path) -> None:
    """GC (1.1.0) succeeds with no output: masq-cni keeps nothing per attachment."""
    config = netconf("1.1.0", prev=None)
    config["cni.dev/valid-attachments"] = [{"containerID": "c1", "ifname": "eth0"}]
    call = invoke(dev_plugin, "GC", config, CNI_PATH="/opt/cni/bin")
    assert call.returncode == 0 and call.stdout == "", call


def test_status_reports_masqd_reachable(dev_plugin: Path, fake_masqd: FakeMasqd) -> None:
    """STATUS (1.1.0) succeeds with no output while masqd answers."""
    call = invoke(dev_plugin, "STATUS", netconf("1.1.0", prev=None, socket=fake_masqd.socket))
    assert call.returncode == 0 and call.stdout == "", call


def test_status_unreachable_masqd(dev_plugin: Path, short_dir: Path) -> None:
    """masqd unreachable: with failurePolicy fail ADD cannot work, so STATUS is error 50; with
    ignore ADD still works (passing through), so STATUS succeeds and logs why."""
    socket = str(short_dir / "absent.sock")
    config = netconf("1.1.0", prev=None, socket=socket, failurePolicy="fail")
    assert_error(invoke(dev_plugin, "STATUS", config), 50, "masqd", socket)
    call = invoke(dev_plugin, "STATUS", netconf("1.1.0", prev=None, socket=socket))
    assert call.returncode == 0 and call.stdout == "", call
    assert "no socket" in call.stderr


def test_check_in_sync(dev_plugin: Path, fake_masqd: FakeMasqd) -> None:
    """CHECK succeeds with no output when masqd reports every chain in sync."""
    call = invoke(dev_plugin, "CHECK", netconf(socket=fake_masqd.socket), **POD_ENV)
    assert call.returncode == 0 and call.stdout == "", call
    assert fake_masqd.resyncs == []


def test_check_out_of_sync_fails_clearly(dev_plugin: Path, fake_masqd: FakeMasqd) -> None:
    """CHECK fails, naming the family and what is wrong, when the chain stays out of sync
    after a resync."""
    fake_masqd.in_sync = False
    call = invoke(dev_plugin, "CHECK", netconf(socket=fake_masqd.socket), **POD_ENV)
    assert_error(call, 100, "out of sync", "ipv4", "POSTROUTING jump")
    assert len(fake_masqd.resyncs) == 1


def test_check_converges_after_resync(dev_plugin: Path, fake_masqd: FakeMasqd) -> None:
    """A chain that one resync repairs passes CHECK (CHECK right after ADD must converge)."""
    fake_masqd.in_sync, fake_masqd.repairs = False, True
    call = invoke(dev_plugin, "CHECK", netconf(socket=fake_masqd.socket), **POD_ENV)
    assert call.returncode == 0, call


def test_check_needs_prev_result(dev_plugin: Path, fake_masqd: FakeMasqd) -> None:
    call = invoke(dev_plugin, "CHECK", netconf(prev=None, socket=fake_masqd.socket), **POD_ENV)
    assert_error(call, 7, "prevResult")


def test_commands_without_masqd_do_not_import_grpc() -> None:
    """DEL, GC and VERSION stay on the standard library: gRPC costs ~0.15s to import."""
    code = (
        "import io, sys; from masqd.cni.plugin import run\n"
        "for env, conf in (({'CNI_COMMAND': 'DEL'}, '{\"cniVersion\": \"1.0.0\"}'),\n"
        "                  ({'CNI_COMMAND': 'GC'}, '{\"cniVersion\": \"1.1.0\"}'),\n"
        "                  ({'CNI_COMMAND': 'VERSION'}, '')):\n"
        "    assert run(env, io.BytesIO(conf.encode()), io.StringIO(), 0.0) == 0\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'google')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"


def test_add_imports_nothing_costly(fake_masqd: FakeMasqd) -> None:
    """A whole ADD through masqd (the call, the answer) loads none of the standard library's
    costly modules, nor grpc or protobuf: each would cost a pod start more than the rest."""
    config = json.dumps(netconf(socket=fake_masqd.socket))
    code = (
        "import io, sys, time; from masqd.cni.plugin import run\n"
        f"env = {POD_ENV!r}; env['CNI_COMMAND'] = 'ADD'\n"
        f"out = io.StringIO(); assert run(env, io.BytesIO({config.encode()!r}), out, "
        "time.monotonic()) == 0, out.getvalue()\n"
        "costly = ('grpc', 'google', 'typing', 'dataclasses', 're', 'enum', 'json', 'socket',\n"
        "          'collections', 'inspect', 'logging', 'traceback')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in costly))\n"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]", out.stdout
    assert len(fake_masqd.resyncs) == 1


# --- end to end: a node, the reference bridge plugin, masqd, masq-cni -----------------------


@dataclass
class Node:
    """A node namespace with an uplink to a dest namespace, masqd running in it, and a CNI
    runtime whose conflist chains masq-cni after the reference bridge plugin."""

    name: str
    dest: str
    workdir: Path
    masqd: Masqd
    bridge: str
    pods: list[str] = field(default_factory=list)

    def runtime(self, plugin: Path, **masq_cni: Any) -> cni_runtime.Runtime:
        bin_dir = self.workdir / f"bin{len(list(self.workdir.glob('bin*')))}"
        cni_runtime.bin_dir(bin_dir, plugin)
        options = {"socket": self.masqd.socket, **masq_cni}
        conflist = cni_runtime.bridge_conflist(
            "masqtest", self.bridge, SUBNET, self.workdir / "ipam", options
        )
        return cni_runtime.Runtime(self.name, conflist, [bin_dir])

    def pod(self, stack: contextlib.ExitStack) -> str:
        """A new, empty pod network namespace; returns its path for CNI_NETNS."""
        name = stack.enter_context(netns.namespace("pod"))
        self.pods.append(name)
        return f"/var/run/netns/{name}"

    def source_seen(self, pod_netns: str, dst: str) -> str:
        pod = Path(pod_netns).name
        return netns.Topology(self.name, pod, self.dest).source_seen(dst)

    def cni_syncs(self) -> int:
        return self.masqd.sync_count(pb.SYNC_REASON_CNI)


@contextlib.contextmanager
def uplinked_node() -> Iterator[tuple[str, str]]:
    """node and dest namespaces; dest answers for netns.DEST_V4 and routes pods back."""
    with netns.namespace("node") as node, netns.namespace("dest") as dest:
        run = netns.run
        run(node, "ip", "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", dest)
        run(node, "ip", "link", "set", "up0", "up")
        run(dest, "ip", "link", "set", "eth0", "up")
        run(node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        run(node, "ip", "addr", "add", f"{netns.NODE_UPLINK_V4}/24", "dev", "up0")
        run(dest, "ip", "addr", "add", f"{netns.DEST_UPLINK_V4}/24", "dev", "eth0")
        for addr in netns.DEST_V4.values():
            run(dest, "ip", "addr", "add", f"{addr}/32", "dev", "eth0")
            run(node, "ip", "route", "add", f"{addr}/32", "via", netns.DEST_UPLINK_V4)
        run(dest, "ip", "route", "add", "10.244.0.0/16", "via", netns.NODE_UPLINK_V4)
        yield node, dest


_bridges = iter(range(1000))


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    require_root()
    assert cni_runtime.CNI_BIN.joinpath("bridge").exists(), (
        "apt-get install containernetworking-plugins"
    )
    with uplinked_node() as (name, dest), tempfile.TemporaryDirectory(prefix="mqcni") as short:
        config = tmp_path / "ip-masq-agent"
        config.write_text(MASQD_CONFIG)
        daemon = Masqd(name, Path(short), config, "--iptables-mode", "nft")
        daemon.start()
        bridge = f"mqbr{os.getpid() % 10000}x{next(_bridges)}"
        try:
            yield Node(name, dest, tmp_path, daemon, bridge)
        finally:
            daemon.stop()


def pod_address(result: dict[str, Any]) -> str:
    return str(result["ips"][0]["address"]).split("/")[0]


def assert_add_end_to_end(node: Node, plugin: Path) -> None:
    """ADD through bridge + host-local + masq-cni: the chain's result is the bridge's, masqd
    counted a "cni" sync, and the pod's packets leave with the sources the config promises."""
    runtime = node.runtime(plugin)
    before = node.cni_syncs()
    with contextlib.ExitStack() as stack:
        pod = node.pod(stack)
        result = runtime.add("pod-a", pod)
        assert result == runtime.last("bridge").output
        masq_cni = runtime.last("masq-cni")
        assert "failurePolicy" not in masq_cni.stderr, masq_cni.stderr  # it did not give up
        assert node.cni_syncs() >= before + 1
        address = pod_address(result)
        assert address.startswith("10.244.1.")
        assert node.source_seen(pod, netns.DEST_V4["internet"]) == netns.NODE_UPLINK_V4
        assert node.source_seen(pod, netns.DEST_V4["vpc"]) == address
        runtime.check("pod-a", pod)
        runtime.delete("pod-a", pod)
        runtime.delete("pod-a", pod)


def test_add_end_to_end(node: Node, dev_plugin: Path) -> None:
    """masq-cni chained after the real bridge plugin, from this checkout."""
    assert_add_end_to_end(node, dev_plugin)


def test_add_end_to_end_standalone(node: Node, standalone: Path) -> None:
    """The same with the standalone build, which the runtime runs with an empty environment."""
    assert os.path.islink(standalone) and os.access(standalone, os.X_OK)
    assert_add_end_to_end(node, standalone)


def test_del_twice_and_without_netns(node: Node, dev_plugin: Path) -> None:
    """DEL of the whole chain twice, and once more for a container whose netns is gone."""
    runtime = node.runtime(dev_plugin)
    with contextlib.ExitStack() as stack:
        pod = node.pod(stack)
        runtime.add("pod-b", pod)
        runtime.delete("pod-b", pod)
        runtime.delete("pod-b", pod)
    runtime.delete("pod-b", None)


def _stopped(proc: subprocess.Popen[bytes] | None) -> Callable[[], None]:
    """SIGSTOP masqd (it keeps its socket but answers nothing); returns the undo."""
    assert proc is not None
    os.kill(proc.pid, signal.SIGSTOP)
    return lambda: os.kill(proc.pid, signal.SIGCONT)


def test_masqd_frozen_or_stopped(node: Node, dev_plugin: Path) -> None:
    """masqd hung (SIGSTOP) or stopped: ignore passes the bridge's result through within the
    timeout; fail returns error 11 and the runtime's ADD fails."""
    ignore = node.runtime(dev_plugin, timeout="500ms")
    fail = node.runtime(dev_plugin, timeout="500ms", failurePolicy="fail")
    with contextlib.ExitStack() as stack:
        resume = _stopped(node.masqd.proc)
        try:
            pod = node.pod(stack)
            result = ignore.add("pod-c", pod)
            assert result == ignore.last("bridge").output
            assert 0.5 <= ignore.last("masq-cni").seconds < 3.0
            with pytest.raises(cni_runtime.PluginFailed) as failed:
                fail.add("pod-d", node.pod(stack))
            assert_error(failed.value.call, 11, "try again later")
        finally:
            resume()
        wait_until(node.masqd.synced)
        node.masqd.stop()
        result = ignore.add("pod-e", node.pod(stack))
        assert result == ignore.last("bridge").output
        assert ignore.last("masq-cni").seconds < 2.0
        with pytest.raises(cni_runtime.PluginFailed) as failed:
            fail.add("pod-f", node.pod(stack))
        assert_error(failed.value.call, 11, "no socket")
        ignore.delete("pod-e", None)


def test_standalone_runs_with_empty_environment(standalone: Path) -> None:
    """`env -i dist/masq-cni`: without CNI_COMMAND it answers the spec's error 4; VERSION works."""
    assert_error(invoke(standalone, None), 4, "CNI_COMMAND")
    call = invoke(standalone, "VERSION", {"cniVersion": "1.1.0"})
    assert call.returncode == 0 and call.output["supportedVersions"][-1] == "1.1.0", call


def test_standalone_installs_itself(standalone: Path, tmp_path: Path) -> None:
    """`env -i dist/masq-cni install --chain` (what the DaemonSet's installer runs) copies the
    bundle into the bin dir, where it runs with an empty environment, and chains the conflist."""
    bin_dir, conf_dir = tmp_path / "bin", tmp_path / "net.d"
    conf_dir.mkdir()
    conflist = cni_runtime.bridge_conflist("k8s", "cni0", SUBNET, tmp_path / "ipam", None)
    (conf_dir / "10-bridge.conflist").write_text(json.dumps(conflist))
    argv = ["env", "-i", str(standalone), "install", "--bin-dir", str(bin_dir)]
    argv += ["--conf-dir", str(conf_dir), "--chain"]
    for _ in range(2):
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
    assert "already installed" in proc.stdout and "already chained" in proc.stdout
    call = invoke(bin_dir / "masq-cni", "VERSION", {"cniVersion": "1.0.0"})
    assert call.returncode == 0 and call.output["cniVersion"] == "1.0.0", call
    chained = json.loads((conf_dir / "10-bridge.conflist").read_text())
    assert [p["type"] for p in chained["plugins"]] == ["bridge", "masq-cni"]
