"""masqd's container image, built with `make image` and run with podman.

masqd runs from the image exactly as the rendered DaemonSet runs it (its command line, only
NET_ADMIN and NET_RAW, a read-only root filesystem) inside a network namespace this module
creates and always deletes, with the seed's "node identity" config mounted at
/etc/config/ip-masq-agent. The host's own iptables and network are never touched: podman is
configured by deploy/podman/*.conf, and its bridge network is never used.

The image is built once per run, unless dist/masqd-image.tar is newer than every input and the
image is in podman's store (set MASQD_REBUILD_IMAGE=1 to force a build).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.paths import ROOT

IMAGE = "localhost/masqd:dev"
ARCHIVE = ROOT / "dist" / "masqd-image.tar"
REPORT = ROOT / "dist" / "masqd-image-report.json"
RENDERED = ROOT / "deploy" / "cce-ip-masq-agent.yaml"
IN_CI = os.environ.get("CI") == "true"
PODMAN_ENV = {
    **os.environ,
    "CONTAINERS_CONF": str(ROOT / "deploy" / "podman" / "containers.conf"),
    "CONTAINERS_STORAGE_CONF": str(ROOT / "deploy" / "podman" / "storage.conf"),
}
# Everything the image is built from.
IMAGE_INPUTS = [
    "Dockerfile",
    ".dockerignore",
    "pyproject.toml",
    "scripts/build-image.sh",
    "scripts/build-cni.sh",
    "scripts/cni/*",
    "deploy/podman/*.conf",
    "masqd/**/*.py",
    "masqctl/**/*.py",
]

# The seed's "container masquerading as node identity" scenario.
NODE_IDENTITY_CONFIG = """\
nonMasqueradeCIDRs:
  - 10.0.0.0/8
  - 172.16.0.0/12
  - 100.64.230.0/24
  - 192.168.0.0/16
  - fc00::/7
masqOutBound: true
masqOutBoundIPv6: true
masqLinkLocal: false
masqLinkLocalIPv6: false
resyncInterval: 60s
"""
KEEP = '-m comment --comment "ip-masq-agent: local traffic is not subject to MASQUERADE" -j RETURN'
MASQ_ALL = (
    '-A IP-MASQ-AGENT -m comment --comment "ip-masq-agent: outbound traffic is subject to '
    'MASQUERADE (must be last in chain)" -j MASQUERADE'
)
EXPECTED_CHAIN = {
    "iptables": [
        "-N IP-MASQ-AGENT",
        *(
            f"-A IP-MASQ-AGENT -d {cidr} {KEEP}"
            for cidr in [
                "169.254.0.0/16",
                "10.0.0.0/8",
                "172.16.0.0/12",
                "100.64.230.0/24",
                "192.168.0.0/16",
            ]
        ),
        MASQ_ALL,
    ],
    "ip6tables": [
        "-N IP-MASQ-AGENT",
        f"-A IP-MASQ-AGENT -d fe80::/10 {KEEP}",
        f"-A IP-MASQ-AGENT -d fc00::/7 {KEEP}",
        MASQ_ALL,
    ],
}
JUMP = (
    '-A POSTROUTING -m comment --comment "ip-masq-agent: ensure nat POSTROUTING directs all '
    'non-LOCAL destination traffic to our custom IP-MASQ-AGENT chain" '
    "-m addrtype ! --dst-type LOCAL -j IP-MASQ-AGENT"
)

pytestmark = pytest.mark.timeout(1800)


def run(
    *args: str | Path, input: str | None = None, timeout: float = 60, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=PODMAN_ENV,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, args))} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


def podman(*args: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return run("podman", *args, **kwargs)


def netns_exec(netns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run("ip", "netns", "exec", netns, *args, check=check)


def write_configmap_volume(directory: Path, text: str) -> None:
    """Writes ip-masq-agent the way the kubelet updates a ConfigMap volume: a new timestamped
    directory, then an atomic swap of the `..data` symlink that `ip-masq-agent` points through."""
    directory.mkdir(exist_ok=True)
    new = directory / f"..{time.time_ns()}"
    new.mkdir()
    (new / "ip-masq-agent").write_text(text)
    data, swap = directory / "..data", directory / "..data_tmp"
    old = data.resolve() if data.is_symlink() else None
    swap.symlink_to(new.name)
    swap.rename(data)
    if not (directory / "ip-masq-agent").is_symlink():
        (directory / "ip-masq-agent").symlink_to("..data/ip-masq-agent")
    if old is not None:
        shutil.rmtree(old)


def require_prerequisites() -> None:
    """Root, podman and iproute2; missing ones skip locally and fail in CI."""
    missing = [tool for tool in ("podman", "ip", "make") if shutil.which(tool) is None]
    if os.geteuid() != 0:
        missing.append("root")
    if missing:
        message = f"the image tests need {', '.join(missing)} (scripts/install-deps.sh)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def image_is_fresh() -> bool:
    """The saved image is newer than everything it is built from and still in podman's store."""
    if os.environ.get("MASQD_REBUILD_IMAGE") == "1" or not ARCHIVE.exists():
        return False
    inputs = [p for pattern in IMAGE_INPUTS for p in ROOT.glob(pattern) if p.is_file()]
    newest = max(p.stat().st_mtime for p in inputs)
    in_store = podman("image", "exists", IMAGE, check=False).returncode == 0
    return in_store and ARCHIVE.stat().st_mtime > newest


@dataclass
class Built:
    image_id: str
    build_seconds: float | None  # None when a fresh image was reused


@pytest.fixture(scope="module")
def built_image() -> Built:
    require_prerequisites()
    REPORT.unlink(missing_ok=True)
    build_seconds = None
    if not image_is_fresh():
        start = time.monotonic()
        run("make", "-C", ROOT, "image", timeout=1500)
        build_seconds = round(time.monotonic() - start, 1)
    image_id = podman("image", "inspect", IMAGE, "--format", "{{.Id}}").stdout.strip()
    return Built(image_id, build_seconds)


@pytest.fixture(scope="module")
def daemonset() -> dict[str, Any]:
    """The DaemonSet users apply: the image runs with its command line and security context."""
    (ds,) = [d for d in yaml.safe_load_all(RENDERED.read_text()) if d and d["kind"] == "DaemonSet"]
    return dict(ds)


def pod_container(daemonset: dict[str, Any], name: str) -> dict[str, Any]:
    spec = daemonset["spec"]["template"]["spec"]
    (found,) = [c for c in spec["containers"] + spec.get("initContainers", []) if c["name"] == name]
    return dict(found)


def security_flags(container: dict[str, Any]) -> list[str]:
    """podman flags for the container's Kubernetes securityContext."""
    security = container["securityContext"]
    assert security["capabilities"]["drop"] == ["ALL"]
    flags = ["--cap-drop=ALL", "--security-opt=no-new-privileges"]
    flags += [f"--cap-add={cap}" for cap in security["capabilities"].get("add", [])]
    if security.get("readOnlyRootFilesystem"):
        # As in a pod: only the mounted volumes are writable.
        flags += ["--read-only", "--read-only-tmpfs=false", "--tmpfs=/tmp"]
    return flags


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    """A network namespace of this test run, deleted afterwards whatever happens."""
    require_prerequisites()
    name = f"masqd-image-test-{os.getpid()}"
    run("ip", "netns", "delete", name, check=False)
    run("ip", "netns", "add", name)
    try:
        run("ip", "-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        run("ip", "netns", "delete", name, check=False)


@dataclass
class Masqd:
    container: str
    netns: str
    socket: str
    started: float
    config_dir: Path  # on the host, mounted at /etc/config like the ConfigMap volume


@pytest.fixture(scope="module")
def masqd(
    built_image: Built,
    netns: str,
    daemonset: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Masqd]:
    """masqd from the image, with the chart's command line, in the test's network namespace."""
    base = tmp_path_factory.mktemp("masqd-pod")
    config_dir, run_dir, lock = base / "config", base / "run-masqd", base / "xtables.lock"
    run_dir.mkdir()
    lock.touch()
    write_configmap_volume(config_dir, NODE_IDENTITY_CONFIG)

    spec = pod_container(daemonset, "masqd")
    name = f"masqd-image-test-{os.getpid()}"
    podman("rm", "--force", name, check=False)
    podman(
        "run",
        "--detach",
        f"--name={name}",
        f"--network=ns:/var/run/netns/{netns}",
        *security_flags(spec),
        f"--volume={config_dir}:/etc/config:ro",
        f"--volume={run_dir}:/run/masqd",
        f"--volume={lock}:/run/xtables.lock",
        IMAGE,
        *spec["command"],
        *spec["args"],
    )
    try:
        yield Masqd(name, netns, "/run/masqd/masqd.sock", time.monotonic(), config_dir)
    finally:
        logs = podman("logs", name, check=False)
        print(f"--- masqd's log ---\n{logs.stdout}{logs.stderr}")
        podman("rm", "--force", "--time=2", name, check=False)


def wait_healthy(masqd: Masqd, timeout: float = 60) -> float:
    """Seconds until `masqctl health` (the pod's probe) passed; fails with masqd's log."""
    deadline = time.monotonic() + timeout
    while True:
        probe = podman(
            "exec", masqd.container, "masqctl", f"--socket={masqd.socket}", "health", check=False
        )
        if probe.returncode == 0:
            return time.monotonic() - masqd.started
        if time.monotonic() > deadline:
            logs = podman("logs", masqd.container, check=False)
            pytest.fail(
                f"masqctl health never passed: {probe.stdout}{probe.stderr}\n"
                f"masqd's log:\n{logs.stdout}{logs.stderr}"
            )
        time.sleep(0.5)


def live_chain(netns: str, tool: str) -> tuple[str, list[str], list[str]]:
    """(backend, chain, POSTROUTING) as `<tool>-<backend> -t nat -S` prints them in the netns.

    The backend is the one holding our chain: nft (the image's Debian default) or legacy.
    """
    for backend in ("nft", "legacy"):
        chain = netns_exec(
            netns, f"{tool}-{backend}", "-t", "nat", "-S", "IP-MASQ-AGENT", check=False
        )
        if chain.returncode == 0:
            postrouting = netns_exec(netns, f"{tool}-{backend}", "-t", "nat", "-S", "POSTROUTING")
            return backend, chain.stdout.splitlines(), postrouting.stdout.splitlines()
    raise AssertionError(f"no IP-MASQ-AGENT chain in {netns} for {tool}")


def memory_of(container: str) -> dict[str, int]:
    """Resident and proportional memory of the container's processes, from the host's /proc."""
    pids = podman("top", container, "hpid").stdout.split()[1:]
    rss = pss = 0
    for pid in pids:
        status = Path(f"/proc/{pid}/status").read_text()
        rss += int(next(ln for ln in status.splitlines() if ln.startswith("VmRSS:")).split()[1])
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        pss += int(next(ln for ln in rollup.splitlines() if ln.startswith("Pss:")).split()[1])
    return {"processes": len(pids), "rss_kib": rss, "pss_kib": pss}


def k8s_quantity_kib(quantity: str) -> int:
    units = {"Ki": 1, "Mi": 1024, "Gi": 1024 * 1024}
    return int(quantity[:-2]) * units[quantity[-2:]]


def record(**facts: Any) -> None:
    """Adds measurements to dist/masqd-image-report.json (and prints them)."""
    report = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    report.update(facts)
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(facts))


# ---- the image ---------------------------------------------------------------------------------


def test_make_image_saves_an_oci_archive(built_image: Built) -> None:
    """dist/masqd-image.tar is an OCI image layout holding localhost/masqd:dev."""
    with tarfile.open(ARCHIVE) as archive:
        names = set(archive.getnames())
        assert {"oci-layout", "index.json"} <= names
        index = json.load(archive.extractfile("index.json"))  # type: ignore[arg-type]
    refs = [
        m.get("annotations", {}).get("org.opencontainers.image.ref.name")
        for m in index["manifests"]
    ]
    assert any(ref and ref.endswith("masqd:dev") for ref in refs), refs
    size = int(podman("image", "inspect", IMAGE, "--format", "{{.Size}}").stdout)
    record(
        image_size_mb=round(size / 1e6, 1),
        archive_size_mb=round(ARCHIVE.stat().st_size / 1e6, 1),
        build_seconds=built_image.build_seconds,
    )
    assert size < 250e6, "the image should stay slim"


def test_image_has_the_tools_and_no_build_leftovers(built_image: Built, netns: str) -> None:
    """iptables, ip6tables, ipset, nft, masqd, masqctl and masq-cni; no compiler, pip or
    caches."""
    script = (
        "for t in iptables ip6tables iptables-legacy iptables-nft ipset nft tini masqd masqctl"
        ' masq-cni; do command -v "$t" >/dev/null || echo "missing $t"; done;'
        " for t in gcc cc g++ make pip pip3 pyinstaller objdump;"
        ' do command -v "$t" >/dev/null && echo "leftover $t"; done;'
        " find /var/lib/apt/lists /var/cache/apt /root/.cache -mindepth 1 2>/dev/null; true"
    )
    result = podman(
        "run", "--rm", f"--network=ns:/var/run/netns/{netns}", IMAGE, "sh", "-c", script
    )
    assert result.stdout == "", result.stdout
    command = json.loads(
        podman("image", "inspect", IMAGE, "--format", "{{json .Config.Cmd}}").stdout
    )
    assert command[:3] == ["tini", "--", "masqd"], "the image runs masqd under tini by default"


# ---- masqd running from the image ----------------------------------------------------------


def test_masqd_from_the_image_writes_the_node_identity_chain(masqd: Masqd) -> None:
    """The namespace's IP-MASQ-AGENT chains are the seed's node-identity rules, both families."""
    seconds = wait_healthy(masqd)
    for tool, expected in EXPECTED_CHAIN.items():
        backend, chain, postrouting = live_chain(masqd.netns, tool)
        assert chain == expected, f"{tool}-{backend}"
        assert postrouting.count(JUMP) == 1, postrouting
    record(seconds_to_healthy=round(seconds, 2), iptables_backend=backend)


def test_masqctl_status_from_the_image(masqd: Masqd) -> None:
    """`masqctl status` reports the mounted config loaded and both families in sync."""
    wait_healthy(masqd)
    table = podman("exec", masqd.container, "masqctl", f"--socket={masqd.socket}", "status")
    assert "/etc/config/ip-masq-agent" in table.stdout
    status = json.loads(
        podman(
            "exec", masqd.container, "masqctl", f"--socket={masqd.socket}", "-o", "json", "status"
        ).stdout
    )
    assert status["config"]["path"] == "/etc/config/ip-masq-agent"
    assert not status["config"].get("error")
    assert not status["config"].get("usingDefaults")
    families = {f["family"]: f for f in status["families"]}
    assert set(families) == {"FAMILY_IPV4", "FAMILY_IPV6"}
    for family in families.values():
        assert family.get("inSync") is True, family
        assert family["backend"] in {"nft", "legacy"}


def test_masqd_from_the_image_runs_the_nftables_backend(
    built_image: Built, daemonset: dict[str, Any], tmp_path: Path
) -> None:
    """The chart's command line with --backend=nftables, in a namespace of its own: the image's
    nft writes `table ip masqd` and `table ip6 masqd` with the seed's node-identity entries,
    nothing lands in the iptables nat table, and masqctl status says nftables."""
    name = f"masqd-image-nft-{os.getpid()}"
    run("ip", "netns", "delete", name, check=False)
    run("ip", "netns", "add", name)
    config_dir, run_dir, lock = tmp_path / "config", tmp_path / "run-masqd", tmp_path / "lock"
    run_dir.mkdir()
    lock.touch()
    write_configmap_volume(config_dir, NODE_IDENTITY_CONFIG)
    spec = pod_container(daemonset, "masqd")
    podman("rm", "--force", name, check=False)
    try:
        run("ip", "-n", name, "link", "set", "lo", "up")
        podman(
            "run",
            "--detach",
            f"--name={name}",
            f"--network=ns:/var/run/netns/{name}",
            *security_flags(spec),
            f"--volume={config_dir}:/etc/config:ro",
            f"--volume={run_dir}:/run/masqd",
            f"--volume={lock}:/run/xtables.lock",
            IMAGE,
            *spec["command"],
            *spec["args"],
            "--backend=nftables",
        )
        deadline = time.monotonic() + 60
        while "table ip6 masqd" not in netns_exec(name, "nft", "list", "tables").stdout:
            assert time.monotonic() < deadline, podman("logs", name, check=False).stderr
            time.sleep(0.5)
        v4 = netns_exec(name, "nft", "list", "table", "ip", "masqd").stdout
        v6 = netns_exec(name, "nft", "list", "table", "ip6", "masqd").stdout
        for cidr in ("10.0.0.0/8", "172.16.0.0/12", "100.64.230.0/24", "192.168.0.0/16"):
            assert f'comment "nonMasqueradeCIDRs: {cidr}"' in v4
        assert 'comment "nonMasqueradeCIDRs: fc00::/7"' in v6
        assert "priority srcnat + 10" in v4 and "counter packets 0 bytes 0 masquerade" in v4
        assert "IP-MASQ-AGENT" not in netns_exec(name, "iptables-nft-save", "-t", "nat").stdout
        status = podman(
            "exec", name, "masqctl", "--socket=/run/masqd/masqd.sock", "-o", "json", "status"
        )
        families = json.loads(status.stdout)["families"]
        assert {f["backend"] for f in families} == {"nftables"}
    finally:
        logs = podman("logs", name, check=False)
        print(f"--- masqd (nftables)'s log ---\n{logs.stdout}{logs.stderr}")
        podman("rm", "--force", "--time=2", name, check=False)
        run("ip", "netns", "delete", name, check=False)


def test_masqd_memory_fits_the_chart_limits(masqd: Masqd, daemonset: dict[str, Any]) -> None:
    """masqd's processes use less than the memory limit the DaemonSet gives them."""
    wait_healthy(masqd)
    memory = memory_of(masqd.container)
    limit = pod_container(daemonset, "masqd")["resources"]["limits"]["memory"]
    record(masqd_memory=memory, memory_limit=limit)
    assert memory["processes"] >= 3, "a supervisor and a worker per family"
    assert memory["pss_kib"] < k8s_quantity_kib(limit) * 0.6, "headroom for the probe's masqctl"


def test_masq_cni_version_from_the_image(masqd: Masqd) -> None:
    """The standalone masq-cni answers the CNI VERSION command with the versions it speaks."""
    result = podman(
        "exec",
        "--interactive",
        "--env=CNI_COMMAND=VERSION",
        masqd.container,
        "masq-cni",
        input='{"cniVersion":"1.0.0"}',
    )
    answer = json.loads(result.stdout)
    assert {"1.0.0", "1.1.0"} <= set(answer["supportedVersions"])
    assert answer["cniVersion"]


def wait_for_chain(masqd: Masqd, tool: str, expected: list[str], timeout: float = 10) -> float:
    """Seconds until the live chain is expected; fails with what it was."""
    start = time.monotonic()
    while (chain := live_chain(masqd.netns, tool)[1]) != expected:
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{tool} chain after {timeout}s: {chain}")
        time.sleep(0.2)
    return time.monotonic() - start


def test_configmap_update_takes_effect_without_a_restart(masqd: Masqd) -> None:
    """`kubectl edit cm`: the kubelet's ..data swap reaches masqd in the container within
    seconds; switching to the seed's own-identity config drops the IPv4 catch-all MASQUERADE."""
    wait_healthy(masqd)
    own_identity = NODE_IDENTITY_CONFIG.replace("masqOutBound: true", "masqOutBound: false")
    write_configmap_volume(masqd.config_dir, own_identity)
    seconds = wait_for_chain(masqd, "iptables", EXPECTED_CHAIN["iptables"][:-1])
    assert live_chain(masqd.netns, "ip6tables")[1] == EXPECTED_CHAIN["ip6tables"]
    record(seconds_to_apply_config_change=round(seconds, 2))
    write_configmap_volume(masqd.config_dir, NODE_IDENTITY_CONFIG)
    wait_for_chain(masqd, "iptables", EXPECTED_CHAIN["iptables"])


# Inside the container: kill -9 the worker whose iptables-restore waits, then list what is left.
_KILL_A_WORKER = """
import json, os, signal, time

def processes():
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\\0")
        except OSError:
            continue
        found[int(pid)] = (stat[0], int(stat[1]), os.path.basename(argv[0].decode()))
    return found

waiting = {}
deadline = time.monotonic() + 10
while not waiting and time.monotonic() < deadline:
    waiting = {p: v for p, v in processes().items() if v[2].endswith("-restore")}
    time.sleep(0.1)
restore, (_, worker, _) = sorted(waiting.items())[0]
os.kill(worker, signal.SIGKILL)
time.sleep(1)
orphans = [v for v in processes().values() if v[0] == "Z" and v[1] == 1]
# The killed worker is masqd's own zombie until its runner notices and replaces it.
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    left = processes()
    if not any(v[0] == "Z" for v in left.values()):
        break
    time.sleep(0.2)
print(json.dumps({
    "pid1": left[1][2],
    "restore left": restore in left,
    "orphan zombies": orphans,
    "zombies": [v for v in left.values() if v[0] == "Z"],
}))
"""


def test_a_killed_worker_leaves_no_zombie(masqd: Masqd) -> None:
    """A worker killed with SIGKILL orphans the iptables-restore it kept waiting; that exits
    at once (its stdin closed) and PID 1 (tini) reaps it; masqd starts a new worker."""
    wait_healthy(masqd)
    seen = json.loads(podman("exec", masqd.container, "python3", "-c", _KILL_A_WORKER).stdout)
    assert seen["pid1"] == "tini"
    assert seen["restore left"] is False, seen
    assert seen["orphan zombies"] == [], seen  # tini reaped the orphaned restore
    assert seen["zombies"] == [], seen  # and masqd its dead worker, when it replaced it
    wait_healthy(masqd)  # the worker was replaced and both families are in sync again


def test_sigterm_stops_masqd_quickly_and_keeps_the_rules(masqd: Masqd) -> None:
    """Stopping the pod (SIGTERM) ends masqd within 5 s and leaves the chains in place."""
    wait_healthy(masqd)
    start = time.monotonic()
    podman("stop", "--time=10", masqd.container)
    seconds = time.monotonic() - start
    exit_code = podman("inspect", masqd.container, "--format", "{{.State.ExitCode}}").stdout
    record(seconds_to_stop=round(seconds, 2))
    assert exit_code.strip() == "0"
    assert seconds < 6
    for tool, expected in EXPECTED_CHAIN.items():
        assert live_chain(masqd.netns, tool)[1] == expected


# ---- masq-cni's installer from the image ---------------------------------------------------------


def test_cni_chain_from_the_image_chains_an_old_host(
    built_image: Built, daemonset: dict[str, Any], tmp_path: Path
) -> None:
    """The DaemonSet's cni-chain container, from the image with its command, security context
    (only SYS_CHROOT) and mounts, over a Debian bullseye host root (glibc 2.31): it runs the
    plugin chrooted there, installs it, chains the conflist flannel writes after it started,
    and stops cleanly on SIGTERM, leaving the chain."""
    from tests.support import cni_build

    host = cni_build.old_host_root()
    spec = pod_container(daemonset, "cni-chain")
    bin_dir, conf_dir = tmp_path / "bin", tmp_path / "net.d"
    bin_dir.mkdir()
    conf_dir.mkdir()
    for mountpoint in ("opt/cni/bin", "etc/cni/net.d"):  # as on a node: the dirs exist
        (host / mountpoint).mkdir(parents=True, exist_ok=True)
    mounts = {m["name"]: m for m in spec["volumeMounts"]}
    sources = {"host-root": host, "cni-bin": bin_dir, "cni-conf": conf_dir}
    volumes = [
        f"--volume={sources[name]}:{m['mountPath']}{':ro' if m.get('readOnly') else ''}"
        for name, m in mounts.items()
    ]
    name = f"masq-cni-chain-test-{os.getpid()}"
    podman("rm", "--force", name, check=False)
    podman("run", "--detach", f"--name={name}", *security_flags(spec), *volumes, IMAGE,
           *spec["command"])  # fmt: skip
    try:
        time.sleep(1.5)
        assert podman("inspect", name, "--format", "{{.State.Running}}").stdout.strip() == "true"
        assert "waiting for the main CNI" in podman("logs", name).stdout
        flannel = {
            "name": "cbr0",
            "cniVersion": "0.3.1",
            "plugins": [{"type": "flannel", "delegate": {"isDefaultGateway": True}}],
        }
        (conf_dir / "10-flannel.conflist").write_text(json.dumps(flannel))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            plugins = json.loads((conf_dir / "10-flannel.conflist").read_text())["plugins"]
            if plugins[-1]["type"] == "masq-cni":
                break
            time.sleep(0.2)
        logs = podman("logs", name).stdout
        assert [p["type"] for p in plugins] == ["flannel", "masq-cni"], logs
        assert "installed:" in logs and "chained into" in logs
        assert (bin_dir / "masq-cni").is_symlink() and (bin_dir / "masq-cni").exists()
        podman("stop", "--time=10", name)
        assert podman("inspect", name, "--format", "{{.State.ExitCode}}").stdout.strip() == "0"
        assert json.loads((conf_dir / "10-flannel.conflist").read_text())["plugins"] == plugins
        # A restarted pod changes nothing: the same build, already chained.
        chained = (conf_dir / "10-flannel.conflist").read_bytes()
        podman("start", name)
        deadline = time.monotonic() + 30
        while "already installed" not in podman("logs", name).stdout:
            assert time.monotonic() < deadline, podman("logs", name).stdout
            time.sleep(0.2)
        podman("stop", "--time=10", name)
        assert (conf_dir / "10-flannel.conflist").read_bytes() == chained
        # Standalone: the installed plugin runs here too, outside the image, without its Python.
        plugin = bin_dir / "masq-cni"
        assert plugin.resolve().read_bytes()[:4] == b"\x7fELF", "a native executable"
        version = subprocess.run(
            [plugin], input='{"cniVersion":"0.3.1"}', capture_output=True, text=True,
            env={"CNI_COMMAND": "VERSION"}, timeout=60, check=False,
        )  # fmt: skip
        assert version.returncode == 0, version.stdout + version.stderr
        assert json.loads(version.stdout)["cniVersion"] == "0.3.1"
    finally:
        logs = podman("logs", name, check=False)
        print(f"--- cni-chain's log ---\n{logs.stdout}{logs.stderr}")
        podman("rm", "--force", "--time=2", name, check=False)
        for mountpoint in ("opt/cni/bin", "etc/cni/net.d"):
            with contextlib.suppress(OSError):
                (host / mountpoint).rmdir()
        for parent in ("opt/cni", "etc/cni"):
            with contextlib.suppress(OSError):
                (host / parent).rmdir()
