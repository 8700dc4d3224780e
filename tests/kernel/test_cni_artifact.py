"""The standalone masq-cni (`make cni-bin`) on a host older than the build machine: no ELF in it
needs a glibc symbol newer than 2.28, and inside a Debian bullseye root (glibc 2.31, no Python)
it answers VERSION and an ADD through a real masqd with an empty environment; its installer
chains it into such a host only after running it there, and refuses a build the host cannot
run."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import require_root
from tests.support import cni_build, netns
from tests.support.daemon import Masqd
from tests.support.paths import ROOT

GLIBC_TARGET = "2.28"
PREV = {"cniVersion": "1.0.0", "ips": [{"address": "10.244.1.2/24"}]}


def load_elf_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "elf_glibc", ROOT / "scripts" / "cni" / "elf_glibc.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


elf = load_elf_tool()


@pytest.fixture(scope="module")
def bundle() -> Path:
    return Path(os.path.realpath(cni_build.standalone())).parent


@pytest.fixture(scope="module")
def old_root() -> Path:
    require_root()
    return cni_build.old_host_root()


@pytest.fixture
def host(old_root: Path) -> Iterator[Path]:
    """A directory of this test inside the bullseye root, seen as /<name> from in there."""
    place = Path(tempfile.mkdtemp(prefix="mqt-", dir=old_root / "opt"))
    try:
        yield place
    finally:
        shutil.rmtree(place, ignore_errors=True)


def in_root(root: Path, argv: list[str], stdin: Any = None, **env: str) -> Any:
    """Run argv chrooted into root with only env in its environment."""
    data = json.dumps(stdin) if stdin is not None else ""
    command = ["chroot", str(root), "env", "-i", *(f"{k}={v}" for k, v in env.items()), *argv]
    return subprocess.run(command, input=data, capture_output=True, text=True, timeout=60)


def inside(root: Path, path: Path) -> str:
    return "/" + path.relative_to(root).as_posix()


def test_every_elf_needs_glibc_2_28_at_most(bundle: Path) -> None:
    """Each ELF file in the bundle, by the newest GLIBC version its version-needs ask for."""
    found = {str(p.relative_to(bundle)): elf.newest_glibc(p) for p in elf.elf_files([bundle])}
    assert found, "no ELF file in the bundle"
    print(f"\nnewest GLIBC version needed: {found}")
    too_new = {p: v for p, v in found.items() if v and elf.version_key(v) > (2, 28)}
    assert too_new == {}
    assert (bundle / "masq-cni.build.json").is_file()
    assert json.loads((bundle / "masq-cni.build.json").read_text())["glibc"] == GLIBC_TARGET


def test_the_glibc_check_sees_newer_versions() -> None:
    """The reader is not vacuous: Debian bookworm's own bridge plugin needs GLIBC_2.34, and
    the script fails on it with --max 2.28."""
    bridge = Path("/usr/lib/cni/bridge")
    assert elf.newest_glibc(bridge) == "2.34"
    script = ROOT / "scripts" / "cni" / "elf_glibc.py"
    proc = subprocess.run(
        ["python3", str(script), "--max", GLIBC_TARGET, str(bridge)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1 and "GLIBC_2.34" in proc.stderr


def test_bundle_holds_no_shared_library_but_its_executable(bundle: Path) -> None:
    """The interpreter is linked in: the executable is the only ELF, and it needs nothing but
    glibc's own libraries."""
    assert [p.name for p in elf.elf_files([bundle])] == ["masq-cni"]
    needed = subprocess.run(
        ["readelf", "-d", str(bundle / "masq-cni")], capture_output=True, text=True, check=True
    ).stdout
    libraries = {
        line.split("[")[1].split("]")[0] for line in needed.splitlines() if "NEEDED" in line
    }
    assert libraries <= {"libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0", "libutil.so.1"}


def test_version_runs_in_bullseye_with_an_empty_environment(host: Path, bundle: Path) -> None:
    """Copied into the bullseye root (no Python there) and run with env -i: VERSION works."""
    old_root = host.parent.parent
    assert not list((old_root / "usr" / "bin").glob("python*"))
    shutil.copytree(bundle, host / "masq-cni.d", symlinks=True)
    plugin = inside(old_root, host / "masq-cni.d" / "masq-cni")
    proc = in_root(old_root, [plugin], {"cniVersion": "1.1.0"}, CNI_COMMAND="VERSION")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["supportedVersions"][-1] == "1.1.0"
    proc = in_root(old_root, [plugin])
    assert proc.returncode != 0 and json.loads(proc.stdout)["code"] == 4  # no CNI_COMMAND


def test_add_in_bullseye_resyncs_a_real_masqd(host: Path, bundle: Path, tmp_path: Path) -> None:
    """ADD from inside the bullseye root, env -i, failurePolicy fail, to a masqd whose socket
    lies in that root: it succeeds, passes prevResult through, and masqd counts a cni sync."""
    old_root = host.parent.parent
    shutil.copytree(bundle, host / "masq-cni.d", symlinks=True)
    plugin = inside(old_root, host / "masq-cni.d" / "masq-cni")
    config = tmp_path / "ip-masq-agent"
    config.write_text("masqOutBound: true\n")
    with netns.namespace("artifact") as ns:
        daemon = Masqd(ns, host, config, "--iptables-mode", "nft").start()
        try:
            before = cni_syncs(daemon)
            netconf = {
                "cniVersion": "1.0.0",
                "name": "k8s",
                "type": "masq-cni",
                "socket": inside(old_root, Path(daemon.socket)),
                "failurePolicy": "fail",
                "prevResult": PREV,
            }
            env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/x"}
            proc = in_root(old_root, [plugin], netconf, CNI_IFNAME="eth0", **env)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            assert json.loads(proc.stdout) == PREV
            assert cni_syncs(daemon) == before + 1
        finally:
            daemon.stop()


def cni_syncs(daemon: Masqd) -> int:
    from masqd.api.v1 import control_pb2 as pb

    counts = [
        c.count
        for f in daemon.status().families
        for c in f.sync_counts
        if c.reason == pb.SYNC_REASON_CNI
    ]
    return min(counts) if counts else 0


@contextlib.contextmanager
def node_dirs(root: Path) -> Iterator[tuple[Path, Path]]:
    """The host's /opt/cni/bin and /etc/cni/net.d inside root, with flannel's conflist,
    removed afterwards."""
    bin_dir, conf_dir = root / "opt" / "cni" / "bin", root / "etc" / "cni" / "net.d"
    bin_dir.mkdir(parents=True, exist_ok=True)
    conf_dir.mkdir(parents=True, exist_ok=True)
    assert not any(bin_dir.iterdir()) and not any(conf_dir.iterdir()), "left over by a test"
    try:
        yield bin_dir, conf_dir
    finally:
        shutil.rmtree(root / "opt" / "cni", ignore_errors=True)
        shutil.rmtree(root / "etc" / "cni", ignore_errors=True)


FLANNEL = {
    "name": "cbr0",
    "cniVersion": "0.3.1",
    "plugins": [
        {"type": "flannel", "delegate": {"hairpinMode": True, "isDefaultGateway": True}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
    ],
}


def installer(standalone: Path, root: Path, *args: str, source: Path | None = None) -> Any:
    """The standalone build's installer, run here as the DaemonSet's container runs it, with
    the old host's root mounted at root."""
    argv = ["env", "-i", str(standalone), "install", "--host-root", str(root)]
    argv += ["--bin-dir", str(root / "opt/cni/bin"), "--conf-dir", str(root / "etc/cni/net.d")]
    if source is not None:
        argv += ["--source", str(source)]
    return subprocess.run([*argv, *args], capture_output=True, text=True, timeout=120)


def test_installer_chains_into_an_old_host_after_running_there(old_root: Path) -> None:
    """install --chain --host-root: the plugin lands in the host's bin dir, has been run there
    (bullseye's glibc), and is chained; the installed link runs in the host root."""
    standalone = cni_build.standalone()
    with node_dirs(old_root) as (bin_dir, conf_dir):
        (conf_dir / "10-flannel.conflist").write_text(json.dumps(FLANNEL))
        proc = installer(standalone, old_root, "--chain")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "installed" in proc.stdout and "chained into" in proc.stdout
        plugins = json.loads((conf_dir / "10-flannel.conflist").read_text())["plugins"]
        assert [p["type"] for p in plugins] == ["flannel", "portmap", "masq-cni"]
        link = inside(old_root, bin_dir / "masq-cni")
        proc = in_root(old_root, [link], {"cniVersion": "0.3.1"}, CNI_COMMAND="VERSION")
        assert proc.returncode == 0 and json.loads(proc.stdout)["cniVersion"] == "0.3.1"


def test_installer_refuses_a_build_the_old_host_cannot_run(old_root: Path) -> None:
    """A build needing a newer glibc than the host's (bookworm's own bridge plugin, which needs
    GLIBC_2.34, offered as the plugin): nothing is installed, nothing chained, and the message
    carries the host loader's complaint."""
    standalone = cni_build.standalone()
    with node_dirs(old_root) as (bin_dir, conf_dir):
        (conf_dir / "10-flannel.conflist").write_text(json.dumps(FLANNEL))
        before = (conf_dir / "10-flannel.conflist").read_bytes()
        proc = installer(standalone, old_root, "--chain", source=Path("/usr/lib/cni/bridge"))
        assert proc.returncode == 1, proc.stdout
        assert "cannot run on this host" in proc.stderr and "GLIBC_2.34" in proc.stderr
        assert list(bin_dir.iterdir()) == []
        assert sorted(p.name for p in conf_dir.iterdir()) == ["10-flannel.conflist"]
        assert (conf_dir / "10-flannel.conflist").read_bytes() == before


def test_installer_refuses_a_host_root_without_a_c_library(tmp_path: Path) -> None:
    """A host root where nothing can be executed (no dynamic loader): refused, saying so."""
    require_root()
    standalone = cni_build.standalone()
    empty = tmp_path / "root"
    with node_dirs(empty) as (bin_dir, conf_dir):
        (conf_dir / "10-flannel.conflist").write_text(json.dumps(FLANNEL))
        proc = installer(standalone, empty, "--chain")
        assert proc.returncode == 1
        assert "cannot run on this host" in proc.stderr and "cannot execute" in proc.stderr
        assert list(bin_dir.iterdir()) == []
