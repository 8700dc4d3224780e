"""containerd as a test's container runtime: Debian's containerd with its CRI plugin, run inside
a node network namespace with a root, state, socket and CNI directories of its own (never the
host's /etc/cni, /opt/cni or /var/lib/containerd), driven through the CRI gRPC API as the
kubelet drives it (tests/cri/api.proto, compiled here with grpcio-tools).

The sandbox image is a pause image made offline: Debian's static busybox, imported into podman
(with the project's podman settings, deploy/podman) and from there into containerd with ctr.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc

from tests.support.paths import ROOT

PROTO_DIR = Path(__file__).resolve().parent / "cri"
PAUSE_IMAGE = "localhost/masq-cni-test/pause:1"
PODMAN_ENV = {
    **os.environ,
    "CONTAINERS_CONF": str(ROOT / "deploy" / "podman" / "containers.conf"),
    "CONTAINERS_STORAGE_CONF": str(ROOT / "deploy" / "podman" / "storage.conf"),
}


def run(*argv: str, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


@cache
def cri() -> tuple[ModuleType, ModuleType]:
    """api_pb2 and api_pb2_grpc of tests/cri/api.proto, compiled into a directory of this run."""
    from grpc_tools import protoc

    out = Path(tempfile.mkdtemp(prefix="masq-cni-cri-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    code = protoc.main(
        ["protoc", f"-I{PROTO_DIR}", f"--python_out={out}", f"--grpc_python_out={out}", "api.proto"]
    )
    assert code == 0, "protoc failed on tests/cri/api.proto"
    sys.path.insert(0, str(out))
    try:
        return importlib.import_module("api_pb2"), importlib.import_module("api_pb2_grpc")
    finally:
        sys.path.remove(str(out))


@cache
def pause_image_archive() -> Path:
    """A docker-archive of the pause image: /bin/busybox sleeping until killed."""
    busybox = Path("/bin/busybox")
    assert busybox.exists(), "apt-get install busybox-static"
    work = Path(tempfile.mkdtemp(prefix="masq-cni-pause-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    rootfs = work / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy2(busybox, rootfs / "bin" / "busybox")
    layer = work / "rootfs.tar"
    run("tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(layer), ".")
    change = 'ENTRYPOINT ["/bin/busybox", "sleep", "2147483647"]'
    run("podman", "import", "--change", change, str(layer), PAUSE_IMAGE, env=PODMAN_ENV)
    archive = work / "pause.tar"
    run("podman", "save", "--format", "docker-archive", "-o", str(archive), PAUSE_IMAGE,
        env=PODMAN_ENV)  # fmt: skip
    return archive


CONFIG = """\
version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  # The sandbox's -998 would be below what this machine lets a process set (no
  # CAP_SYS_RESOURCE here): containerd then keeps its own score for it.
  restrict_oom_score_adj = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"
    max_conf_num = 1

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{state}/runc"
        SystemdCgroup = false
"""


class Containerd:
    """One containerd in a namespace; `start` again after `stop` reloads its CNI config."""

    def __init__(self, netns: str, workdir: Path, cni_bin: Path, cni_conf: Path) -> None:
        self.netns = netns
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.socket = str(workdir / "containerd.sock")
        self.cgroup_parent = f"/masq-cni-test-{os.getpid()}-{workdir.name}"
        self.config = workdir / "config.toml"
        self.config.write_text(
            CONFIG.format(
                root=workdir / "root",
                state=workdir / "state",
                socket=self.socket,
                pause=PAUSE_IMAGE,
                cni_bin=cni_bin,
                cni_conf=cni_conf,
            )
        )
        self.log_path = workdir / "containerd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.channel: grpc.Channel | None = None
        self.pb, self._grpc = cri()

    def start(self) -> Containerd:
        # nsenter, not `ip netns exec`: that also gives the process a mount namespace with a
        # fresh /sys, without the cgroup mounts runc needs.
        argv = ["nsenter", f"--net=/var/run/netns/{self.netns}", "containerd"]
        argv += ["--config", str(self.config)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            assert self.proc.poll() is None, f"containerd exited:\n{self.log()}"
            if os.path.exists(self.socket):
                try:
                    self.version()
                    break
                except grpc.RpcError:
                    pass
            assert time.monotonic() < deadline, f"containerd did not come up:\n{self.log()}"
            time.sleep(0.1)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stub(self) -> Any:
        if self.channel is None:
            self.channel = grpc.insecure_channel(f"unix:{self.socket}")
        return self._grpc.RuntimeServiceStub(self.channel)

    def version(self) -> Any:
        return self.stub().Version(self.pb.VersionRequest(version="v1"), timeout=5)

    def import_image(self, archive: Path) -> None:
        run("ctr", "--address", self.socket, "-n", "k8s.io", "images", "import", str(archive))

    def run_sandbox(self, name: str, timeout: float = 60) -> str:
        """RunPodSandbox as the kubelet asks it: pod network namespace, our cgroup parent."""
        pb = self.pb
        config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="default"),
            hostname=name,
            log_directory=str(self.workdir / "logs" / name),
            linux=pb.LinuxPodSandboxConfig(
                cgroup_parent=self.cgroup_parent,
                security_context=pb.LinuxSandboxSecurityContext(
                    namespace_options=pb.NamespaceOption(network=pb.POD, pid=pb.POD, ipc=pb.POD)
                ),
            ),
        )
        response = self.stub().RunPodSandbox(
            pb.RunPodSandboxRequest(config=config), timeout=timeout
        )
        return str(response.pod_sandbox_id)

    def status(self, sandbox_id: str) -> tuple[Any, dict[str, Any]]:
        """The sandbox's status and its verbose info (the runtime spec, the CNI result)."""
        request = self.pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=True)
        response = self.stub().PodSandboxStatus(request, timeout=10)
        return response.status, json.loads(response.info.get("info", "{}"))

    def netns_path(self, sandbox_id: str) -> str:
        _, info = self.status(sandbox_id)
        for ns in info["runtimeSpec"]["linux"]["namespaces"]:
            if ns["type"] == "network":
                return str(ns["path"])
        raise AssertionError(f"no network namespace in {info}")

    def stop_sandbox(self, sandbox_id: str) -> None:
        self.stub().StopPodSandbox(
            self.pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=60
        )

    def remove_sandbox(self, sandbox_id: str) -> None:
        request = self.pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id)
        self.stub().RemovePodSandbox(request, timeout=60)

    def stop(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill_leftovers(self) -> None:
        """Whatever a failed test left running of this containerd: its shims (they name our
        socket) and the sandboxes' processes (in our cgroup parent), then that cgroup."""
        mine = []
        for pid in (p for p in os.listdir("/proc") if p.isdigit()):
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                cgroups = Path(f"/proc/{pid}/cgroup").read_text()
                if self.socket.encode() in cmdline or self.cgroup_parent in cgroups:
                    mine.append(int(pid))
        for pid in mine:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for controller in Path("/sys/fs/cgroup").iterdir():
            group = controller / self.cgroup_parent.lstrip("/")
            if group.is_dir():
                for sub in sorted(group.rglob("*"), reverse=True):
                    if sub.is_dir():
                        with contextlib.suppress(OSError):
                            sub.rmdir()
                with contextlib.suppress(OSError):
                    group.rmdir()


@contextlib.contextmanager
def running(netns: str, workdir: Path, cni_bin: Path, cni_conf: Path) -> Iterator[Containerd]:
    """containerd started with the pause image imported; on exit every sandbox of the test is
    stopped and removed, containerd stopped, and anything left of it killed."""
    runtime = Containerd(netns, workdir, cni_bin, cni_conf).start()
    try:
        runtime.import_image(pause_image_archive())
        yield runtime
    finally:
        with contextlib.suppress(Exception):
            if runtime.proc is None or runtime.proc.poll() is not None:
                runtime.start()
            for sandbox in list_sandbox_ids(runtime):
                with contextlib.suppress(grpc.RpcError):
                    runtime.stop_sandbox(sandbox)
                    runtime.remove_sandbox(sandbox)
        runtime.stop()
        runtime.kill_leftovers()
        with contextlib.suppress(OSError):
            subprocess.run(
                ["umount", "-R", str(workdir / "state")], capture_output=True, timeout=30
            )


def list_sandbox_ids(runtime: Containerd) -> list[str]:
    out = run("ctr", "--address", runtime.socket, "-n", "k8s.io", "containers", "ls", "-q")
    return [line for line in out.splitlines() if line]
