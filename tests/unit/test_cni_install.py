"""`masq-cni install` / `uninstall` on temporary directories, fed with the conflists real CNIs
write: the binary lands behind an atomically swapped relative link, and only once it has run
and a chain can be made; masq-cni goes into the file the runtime loads (libcni's lexically
first .conf/.conflist/.json, a generated list for a bare .conf), stays there while the main
CNI rewrites its file (--watch), never costs the main CNI a concurrent rewrite, and uninstall
puts back the exact bytes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from masqd.cni import chaining, confdir, conflist
from masqd.cni.install import cli
from tests.support import cni_cases
from tests.support.paths import ROOT

BRIDGE_CONFLIST = {
    "cniVersion": "1.0.0",
    "name": "k8s-pod-network",
    "plugins": [
        {
            "type": "bridge",
            "bridge": "cni0",
            "ipam": {"type": "host-local", "subnet": "10.1.0.0/16"},
        },
        {"type": "portmap", "capabilities": {"portMappings": True}},
    ],
}
RECHAIN_WITHIN = 5.0  # seconds: the watch's promise

# A stand-in for the standalone build: it answers the installer's run check (VERSION, and ADD
# passing prevResult through) as masq-cni does, and prints its version when run bare.
FAKE_PLUGIN = """#!/bin/sh
case "$CNI_COMMAND" in
VERSION) echo '{"cniVersion": "1.0.0", "supportedVersions": ["1.0.0"]}' ;;
ADD) echo '{"cniVersion": "1.0.0", "ips": []}' ;;
*) echo %s ;;
esac
"""


def make_bundle(path: Path, version: str, script: str = FAKE_PLUGIN) -> Path:
    """A stand-in for the standalone build's folder: its executable and its lib/."""
    (path / "lib").mkdir(parents=True)
    (path / "lib" / "payload").write_text(version)
    exe = path / "masq-cni"
    exe.write_text(script.replace("%s", version))
    exe.chmod(0o755)
    return path


def snapshot(*roots: Path) -> dict[str, Any]:
    """Every path under roots with its content (or link target) and mode."""
    out: dict[str, Any] = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.is_symlink():
                out[str(p)] = ("link", os.readlink(p))
            elif p.is_file():
                out[str(p)] = ("file", p.read_bytes(), p.stat().st_mode & 0o777)
            else:
                out[str(p)] = ("dir",)
    return out


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """A CNI bin dir with a plugin in it, and a conf dir with the node's network (first) and
    another one after it."""
    bin_dir, conf_dir = tmp_path / "opt/cni/bin", tmp_path / "etc/cni/net.d"
    bin_dir.mkdir(parents=True)
    conf_dir.mkdir(parents=True)
    (bin_dir / "bridge").write_text("#!/bin/sh\n")
    (conf_dir / "10-bridge.conflist").write_text(json.dumps(BRIDGE_CONFLIST, indent=4))
    (conf_dir / "10-bridge.conflist").chmod(0o600)
    (conf_dir / "20-other.conflist").write_text(json.dumps({**BRIDGE_CONFLIST, "name": "other"}))
    (conf_dir / "99-loopback.conf.disabled").write_text("{}")
    return bin_dir, conf_dir


def install(bin_dir: Path, source: Path, *extra: str, conf_dir: Path | None = None) -> int:
    args = ["install", "--bin-dir", str(bin_dir), "--source", str(source)]
    if conf_dir is not None:
        args += ["--conf-dir", str(conf_dir)]
    return cli([*args, *extra])


def uninstall(bin_dir: Path, conf_dir: Path) -> int:
    return cli(["uninstall", "--bin-dir", str(bin_dir), "--conf-dir", str(conf_dir)])


def plugins(path: Path) -> list[dict[str, Any]]:
    return list(json.loads(path.read_text())["plugins"])


def types(path: Path) -> list[str]:
    return [p["type"] for p in plugins(path)]


def run_plugin(path: Path) -> str:
    return subprocess.run([str(path)], capture_output=True, text=True, check=True).stdout.strip()


def runtime_loads(conf_dir: Path) -> Path:
    """The file libcni's runtimes load: the lexically first .conf, .conflist or .json."""
    names = confdir.config_names([p.name for p in conf_dir.iterdir() if p.is_file()])
    assert names, f"no configuration in {conf_dir}"
    return conf_dir / names[0]


def chain_in_effect(conf_dir: Path) -> list[dict[str, Any]]:
    """The plugins the runtime would run for the loaded file, masq-cni required last."""
    loaded = runtime_loads(conf_dir)
    data = json.loads(loaded.read_text())
    found = data.get("plugins", [data])
    assert found[-1]["type"] == "masq-cni", (loaded, found)
    return list(found)


def write_in_place(path: Path, data: bytes) -> None:
    """How `cp -f` and Go's os.WriteFile write: truncate the file and write into it."""
    with open(path, "r+b") as f:
        f.truncate(0)
        f.write(data)


def write_by_rename(path: Path, data: bytes) -> None:
    """How renameio (Cilium) and kindnet write: a temporary file renamed over the old one."""
    tmp = path.with_name(path.name + ".temp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# ---- the binary ----------------------------------------------------------------------------


def test_install_places_bundle_behind_relative_link(
    tmp_path: Path, dirs: tuple[Path, Path]
) -> None:
    """BIN/masq-cni is a relative link into BIN/masq-cni.d, so it works wherever BIN is mounted
    (the installer's /host/opt/cni/bin is the host's /opt/cni/bin)."""
    bin_dir, _ = dirs
    assert install(bin_dir, make_bundle(tmp_path / "v1", "v1")) == 0
    link = bin_dir / "masq-cni"
    assert link.is_symlink() and not os.path.isabs(os.readlink(link))
    assert os.readlink(link).startswith("masq-cni.d/")
    assert run_plugin(link) == "v1"
    moved = tmp_path / "host-view"
    bin_dir.rename(moved)
    assert run_plugin(moved / "masq-cni") == "v1"
    assert (moved / "bridge").exists()


def test_install_is_idempotent(
    tmp_path: Path, dirs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The same build installed twice changes nothing the second time."""
    bin_dir, _ = dirs
    bundle = make_bundle(tmp_path / "v1", "v1")
    assert install(bin_dir, bundle) == 0
    before = snapshot(bin_dir)
    inode = os.lstat(bin_dir / "masq-cni").st_ino
    capsys.readouterr()
    assert install(bin_dir, bundle) == 0
    assert "already installed" in capsys.readouterr().out
    assert snapshot(bin_dir) == before
    assert os.lstat(bin_dir / "masq-cni").st_ino == inode


def test_upgrade_swaps_link_and_keeps_only_the_previous_bundle(
    tmp_path: Path, dirs: tuple[Path, Path]
) -> None:
    """A new build goes in beside the old one and the link moves; the old bundle stays for an
    ADD still running from it, older ones go; no temporary files are left."""
    bin_dir, _ = dirs
    for version in ("v1", "v2", "v3"):
        assert install(bin_dir, make_bundle(tmp_path / version, version)) == 0
        assert run_plugin(bin_dir / "masq-cni") == version
    bundles = sorted(p.name for p in (bin_dir / "masq-cni.d").iterdir())
    payloads = {(bin_dir / "masq-cni.d" / b / "lib/payload").read_text() for b in bundles}
    assert payloads == {"v2", "v3"}
    assert sorted(p.name for p in bin_dir.iterdir()) == ["bridge", "masq-cni", "masq-cni.d"]


def test_install_single_file(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    """A single-file source is copied to BIN/masq-cni (mode 0755), replacing a bundle link."""
    bin_dir, _ = dirs
    assert install(bin_dir, make_bundle(tmp_path / "v1", "v1")) == 0
    single = tmp_path / "single"
    single.write_text(FAKE_PLUGIN.replace("%s", "single"))
    assert install(bin_dir, single) == 0
    target = bin_dir / "masq-cni"
    assert not target.is_symlink() and target.stat().st_mode & 0o777 == 0o755
    assert run_plugin(target) == "single"
    assert not (bin_dir / "masq-cni.d").exists()
    inode = target.stat().st_ino
    assert install(bin_dir, single) == 0
    assert target.stat().st_ino == inode


@pytest.mark.parametrize(
    ("script", "said"),
    [
        ("#!/bin/sh\necho \"version 'GLIBC_2.99' not found\" >&2\nexit 1\n", "GLIBC_2.99"),
        ("#!/bin/sh\necho hello\n", "no CNI result"),
        ("#!/no/such/interpreter\n", "cannot execute"),
    ],
    ids=["exits", "wrong-answer", "cannot-exec"],
)
def test_binary_that_cannot_run_is_neither_installed_nor_chained(
    tmp_path: Path,
    dirs: tuple[Path, Path],
    script: str,
    said: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A build the host cannot run (a newer glibc, not masq-cni, no interpreter): exit 1
    saying how it failed; the bin dir and the conf dir stay exactly as they were."""
    bin_dir, conf_dir = dirs
    before = snapshot(bin_dir, conf_dir)
    bundle = make_bundle(tmp_path / "bad", "bad", script)
    assert install(bin_dir, bundle, "--chain", conf_dir=conf_dir) == 1
    err = capsys.readouterr().err
    assert "cannot run on this host" in err and said in err, err
    assert snapshot(bin_dir, conf_dir) == before
    single = tmp_path / "bad-single"
    single.write_text(script)
    single.chmod(0o755)
    assert install(bin_dir, single, "--chain", conf_dir=conf_dir) == 1
    assert snapshot(bin_dir, conf_dir) == before


def test_install_from_python_needs_a_standalone_build(
    dirs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Run from a Python installation, install refuses to copy the interpreter to the host."""
    bin_dir, _ = dirs
    assert cli(["install", "--bin-dir", str(bin_dir)]) == 1
    assert "make cni-bin" in capsys.readouterr().err
    assert not (bin_dir / "masq-cni").exists()


def test_cni_command_wins_over_arguments() -> None:
    """With CNI_COMMAND set, masq-cni is the plugin whatever its arguments."""
    proc = subprocess.run(
        [sys.executable, "-m", "masqd.cni", "install"],
        input='{"cniVersion": "1.0.0"}',
        env={**os.environ, "CNI_COMMAND": "VERSION"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(proc.stdout)["cniVersion"] == "1.0.0"


# ---- chaining, one shot ----------------------------------------------------------------------


def test_chain_appends_last_once_with_backup(
    tmp_path: Path, dirs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """--chain: masq-cni (with the given settings) becomes the last plugin of the file the
    runtime loads; its bytes are kept as .masq-cni.bak; a second run rewrites nothing."""
    bin_dir, conf_dir = dirs
    target = conf_dir / "10-bridge.conflist"
    original = target.read_bytes()
    flags = ["--chain", "--socket", "/run/m.sock", "--timeout", "3s", "--failure-policy", "fail"]
    assert install(bin_dir, make_bundle(tmp_path / "v1", "v1"), *flags, conf_dir=conf_dir) == 0
    entry = {"type": "masq-cni", "socket": "/run/m.sock", "timeout": "3s", "failurePolicy": "fail"}
    assert plugins(target) == [*BRIDGE_CONFLIST["plugins"], entry]
    assert json.loads(target.read_text())["name"] == "k8s-pod-network"
    assert conflist.backup_path(target).read_bytes() == original
    assert target.stat().st_mode & 0o777 == 0o600
    assert types(conf_dir / "20-other.conflist") == ["bridge", "portmap"]
    before, inode = snapshot(conf_dir), target.stat().st_ino
    capsys.readouterr()
    assert install(bin_dir, tmp_path / "v1", *flags, conf_dir=conf_dir) == 0
    assert "already chained" in capsys.readouterr().out
    assert snapshot(conf_dir) == before and target.stat().st_ino == inode
    # Nothing a runtime would load was added: only the backup, which ends in .bak.
    assert sorted(p.name for p in conf_dir.iterdir()) == [
        "10-bridge.conflist",
        "10-bridge.conflist.masq-cni.bak",
        "20-other.conflist",
        "99-loopback.conf.disabled",
    ]


def test_chain_moves_masq_cni_last_and_keeps_its_settings(
    tmp_path: Path, dirs: tuple[Path, Path]
) -> None:
    """A masq-cni entry that is not last (another plugin was appended) moves to the end with the
    settings it had, overridden only by flags given now."""
    bin_dir, conf_dir = dirs
    target = conf_dir / "10-bridge.conflist"
    mine = {"type": "masq-cni", "timeout": "5s", "socket": "/x.sock"}
    data = {**BRIDGE_CONFLIST, "plugins": [BRIDGE_CONFLIST["plugins"][0], mine, {"type": "tuning"}]}
    target.write_text(json.dumps(data))
    bundle = make_bundle(tmp_path / "v1", "v1")
    assert install(bin_dir, bundle, "--chain", "--socket", "/y.sock", conf_dir=conf_dir) == 0
    assert types(target) == ["bridge", "tuning", "masq-cni"]
    assert plugins(target)[-1] == {"type": "masq-cni", "timeout": "5s", "socket": "/y.sock"}
    assert not conflist.backup_path(target).exists()  # it was chained already: no new backup


def test_chain_explicit_conflist(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    """--conflist NAME picks that file in --conf-dir instead of the one the runtime loads."""
    bin_dir, conf_dir = dirs
    bundle = make_bundle(tmp_path / "v1", "v1")
    assert install(bin_dir, bundle, "--chain", "--conflist", "20-other.conflist") == 1
    assert (
        install(bin_dir, bundle, "--chain", "--conflist", "20-other.conflist", conf_dir=conf_dir)
        == 0
    )
    assert plugins(conf_dir / "20-other.conflist")[-1] == {"type": "masq-cni"}
    assert plugins(conf_dir / "10-bridge.conflist") == BRIDGE_CONFLIST["plugins"]


def test_chain_without_configuration_installs_nothing(
    tmp_path: Path, dirs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """No configuration yet (the main plugin has not written it), without --watch: exit 1,
    say so, and put no binary into the bin dir."""
    bin_dir, _ = dirs
    empty = tmp_path / "empty"
    empty.mkdir()
    before = snapshot(bin_dir)
    assert install(bin_dir, make_bundle(tmp_path / "v1", "v1"), "--chain", conf_dir=empty) == 1
    assert "no CNI configuration" in capsys.readouterr().err
    assert snapshot(bin_dir) == before


@pytest.mark.parametrize(
    "text", ["{not json", '["a"]', '{"name": "x"}', '{"plugins": [1]}'], ids=str
)
def test_malformed_conflist_is_left_alone_and_nothing_installed(
    tmp_path: Path, dirs: tuple[Path, Path], text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A conflist the runtime would load but masq-cni cannot read: exit 1 naming it; the file
    is untouched and no binary is installed."""
    bin_dir, conf_dir = dirs
    target = conf_dir / "10-bridge.conflist"
    target.write_text(text)
    before = snapshot(bin_dir)
    assert install(bin_dir, make_bundle(tmp_path / "v1", "v1"), "--chain", conf_dir=conf_dir) == 1
    assert target.read_text() == text
    assert "10-bridge.conflist" in capsys.readouterr().err
    assert snapshot(bin_dir) == before


def test_failed_write_leaves_conflist_intact_and_no_binary(
    tmp_path: Path, dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A conflist write that fails before its rename leaves the original, no temporary file,
    and (it was not there before) no binary."""
    bin_dir, conf_dir = dirs
    bundle = make_bundle(tmp_path / "v1", "v1")
    before = snapshot(bin_dir, conf_dir)
    real_write = conflist.atomic_write

    def broken_write(path: Path, *args: Any, **kwargs: Any) -> bool:
        if path.name == "10-bridge.conflist":
            raise OSError(28, "No space left on device")
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(conflist, "atomic_write", broken_write)
    assert install(bin_dir, bundle, "--chain", conf_dir=conf_dir) == 1
    after = snapshot(bin_dir, conf_dir)
    after.pop(str(conf_dir / "10-bridge.conflist.masq-cni.bak"), None)
    assert after == before


def test_symlinked_conflist_is_written_through(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    """A conflist that is a symlink (k3s, and hand-made setups, link it from elsewhere): the
    target file is chained, the link stays a link, uninstall restores the target's bytes."""
    bin_dir, conf_dir = dirs
    elsewhere = tmp_path / "var/lib/cni-config"
    elsewhere.mkdir(parents=True)
    real = elsewhere / "10-flannel.conflist"
    real.write_bytes(json.dumps(BRIDGE_CONFLIST).encode())
    original = real.read_bytes()
    (conf_dir / "10-bridge.conflist").unlink()
    (conf_dir / "05-flannel.conflist").symlink_to(real)
    assert install(bin_dir, make_bundle(tmp_path / "v1", "v1"), "--chain", conf_dir=conf_dir) == 0
    assert (conf_dir / "05-flannel.conflist").is_symlink()
    assert types(real) == ["bridge", "portmap", "masq-cni"]
    assert uninstall(bin_dir, conf_dir) == 0
    assert (conf_dir / "05-flannel.conflist").is_symlink()
    assert real.read_bytes() == original
    assert not conflist.backup_path(real).exists()


@pytest.mark.parametrize(
    ("writer", "when"),
    [
        (write_by_rename, "before-check"),
        (write_in_place, "before-check"),
        (write_in_place, "after-check"),
    ],
    ids=["rename", "in-place", "in-place-as-we-rename"],
)
def test_concurrent_rewrite_by_the_main_cni_is_not_lost(
    tmp_path: Path,
    writer: Callable[[Path, bytes], None],
    when: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The main CNI rewrites its file after masq-cni read it: while masq-cni writes its own
    version (seen before the rename: read again), or in place just as masq-cni's rename goes
    in (seen after it, through the file masq-cni still holds open). Either way the file ends
    up with the main CNI's new content, chained, and that content is the backup."""
    path = tmp_path / "10-flannel.conflist"
    path.write_text(json.dumps(BRIDGE_CONFLIST))
    newer = {**BRIDGE_CONFLIST, "plugins": [{"type": "flannel", "delegate": {"v": 2}}]}
    raced: list[bool] = []
    if when == "before-check":
        real_write = conflist.atomic_write

        def racing_write(target: Path, *args: Any, **kwargs: Any) -> bool:
            if target == path and not raced:  # our temporary file is about to be written
                writer(path, json.dumps(newer).encode())
                raced.append(True)
            return real_write(target, *args, **kwargs)

        monkeypatch.setattr(conflist, "atomic_write", racing_write)
    else:
        real_unchanged = conflist.Snapshot.unchanged

        def unchanged_then_raced(self: conflist.Snapshot) -> bool:
            result = real_unchanged(self)
            if self.path == path and not raced:  # the last check passed; the rename is next
                writer(path, json.dumps(newer).encode())
                raced.append(True)
            return result

        monkeypatch.setattr(conflist.Snapshot, "unchanged", unchanged_then_raced)
    assert conflist.chain_file(path, {})
    assert raced
    assert json.loads(path.read_text()) == conflist.chained(newer, {})
    assert json.loads(conflist.backup_path(path).read_text()) == newer


# ---- the real conflists ----------------------------------------------------------------------


@pytest.mark.parametrize("case", cni_cases.case_names())
def test_real_conflist_is_chained_where_the_runtime_loads_and_restored_exactly(
    tmp_path: Path, dirs: tuple[Path, Path], case: str
) -> None:
    """Each real file under its node name, alone in the conf dir: the runtime's file ends up
    running every plugin it had, in order, then masq-cni (a file whose version has no chains
    is refused); uninstall leaves the directory byte for byte as it was."""
    bin_dir, _ = dirs
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    name = cni_cases.node_name(case)
    original = cni_cases.case_bytes(case)
    (conf_dir / name).write_bytes(original)
    before = snapshot(conf_dir)
    source = json.loads(original)
    bundle = make_bundle(tmp_path / "v1", "v1")
    if "cniVersion" not in source:  # Weave's 0.1.0 .conf: refused, see the test below
        assert install(bin_dir, bundle, "--chain", conf_dir=conf_dir) == 1
        assert snapshot(conf_dir) == before and not (bin_dir / "masq-cni").exists()
        return
    assert install(bin_dir, bundle, "--chain", conf_dir=conf_dir) == 0
    expected = source["plugins"] if name.endswith(".conflist") else [source]
    assert chain_in_effect(conf_dir) == [*expected, {"type": "masq-cni"}]
    loaded = runtime_loads(conf_dir)
    data = json.loads(loaded.read_text())
    assert data["name"] == source["name"] and data["cniVersion"] == source["cniVersion"]
    if name.endswith(".conf"):
        assert loaded.name == confdir.generated_name(name)
        assert (conf_dir / name).read_bytes() == original  # the main CNI's file is not touched
    else:
        assert {k: v for k, v in data.items() if k != "plugins"} == {
            k: v for k, v in source.items() if k != "plugins"
        }
    assert uninstall(bin_dir, conf_dir) == 0
    assert snapshot(conf_dir) == before


def test_conf_that_sorts_first_wins_over_a_later_conflist(
    tmp_path: Path, dirs: tuple[Path, Path]
) -> None:
    """Cilium <= 1.13's 05-cilium.conf left beside a newer 05-cilium.conflist: the runtime loads
    the .conf, so masq-cni is put in effect there (a generated list before it), not into the
    .conflist that the runtime never reads."""
    bin_dir, _ = dirs
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    for case in ("cilium-05-cilium.conf", "cilium-05-cilium.conflist"):
        (conf_dir / cni_cases.node_name(case)).write_bytes(cni_cases.case_bytes(case))
    conflist_bytes = (conf_dir / "05-cilium.conflist").read_bytes()
    assert install(bin_dir, make_bundle(tmp_path / "v1", "v1"), "--chain", conf_dir=conf_dir) == 0
    assert runtime_loads(conf_dir).name == "05-cilium-masq-cni.conflist"
    cilium = json.loads(cni_cases.case_bytes("cilium-05-cilium.conf"))
    assert chain_in_effect(conf_dir) == [cilium, {"type": "masq-cni"}]
    assert (conf_dir / "05-cilium.conflist").read_bytes() == conflist_bytes


def test_conf_without_a_chainable_version_is_refused_by_name(
    tmp_path: Path, dirs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Weave <= 2.4.0's 10-weave.conf has no cniVersion (0.1.0, before chained plugins existed)
    and sorts before its 10-weave.conflist: the runtime loads it, so masq-cni refuses, naming
    it, and installs nothing rather than chaining where the runtime never looks."""
    bin_dir, _ = dirs
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    for case in ("weave-10-weave.conf", "weave-10-weave.conflist"):
        (conf_dir / cni_cases.node_name(case)).write_bytes(cni_cases.case_bytes(case))
    before = snapshot(bin_dir, conf_dir)
    assert install(bin_dir, make_bundle(tmp_path / "v1", "v1"), "--chain", conf_dir=conf_dir) == 1
    err = capsys.readouterr().err
    assert "10-weave.conf" in err and "cniVersion" in err and "0.1.0" in err, err
    assert snapshot(bin_dir, conf_dir) == before


def test_generated_list_is_marked_and_named_to_sort_first() -> None:
    """The stand-in for 05-cilium.conf sorts right before it and names where it came from."""
    name = confdir.generated_name("05-cilium.conf")
    assert sorted([name, "05-cilium.conf", "05-cilium.conflist"])[0] == name
    listed = confdir.generated_list({"cniVersion": "0.3.1", "name": "cilium", "type": "x"}, "y")
    assert listed[confdir.GENERATED_FROM] == "y" and listed["name"] == "cilium"


# ---- --watch: staying chained --------------------------------------------------------------


class WatchProcess:
    """`masq-cni install --chain --watch` as the DaemonSet runs it (this checkout's code)."""

    def __init__(self, bin_dir: Path, conf_dir: Path, source: Path, *extra: str) -> None:
        argv = [sys.executable, "-m", "masqd.cni", "install", "--chain", "--watch"]
        argv += ["--bin-dir", str(bin_dir), "--conf-dir", str(conf_dir), "--source", str(source)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
        self.proc = subprocess.Popen(
            [*argv, *extra],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    def said(self, words: str) -> bool:
        return any(words in line for line in self.lines)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(10)
        self._reader.join(5)
        return code


@pytest.fixture
def watching(tmp_path: Path) -> Iterator[Callable[..., WatchProcess]]:
    started: list[WatchProcess] = []

    def start(bin_dir: Path, conf_dir: Path, *extra: str) -> WatchProcess:
        bundle = tmp_path / f"bundle{len(started)}"
        watcher = WatchProcess(bin_dir, conf_dir, make_bundle(bundle, "v1"), *extra)
        started.append(watcher)
        return watcher

    yield start
    for watcher in started:
        with contextlib.suppress(Exception):
            watcher.stop()


def eventually(condition: Callable[[], Any], within: float = RECHAIN_WITHIN) -> float:
    """Seconds until condition() holds; fails the test past `within`."""
    start = time.monotonic()
    last: Exception | None = None
    while time.monotonic() - start < within:
        try:
            if condition():
                return time.monotonic() - start
        except (OSError, ValueError, KeyError, IndexError, AssertionError) as e:
            last = e
        time.sleep(0.05)
    raise AssertionError(f"not within {within}s (last: {last!r})")


def is_chained_in_effect(conf_dir: Path) -> bool:
    try:
        chain_in_effect(conf_dir)
    except AssertionError:
        return False
    return True


def test_watch_waits_for_the_first_config_then_chains(
    tmp_path: Path, watching: Callable[..., WatchProcess]
) -> None:
    """No conf dir content yet: the watch stays up, says it waits, installs nothing; once
    flannel writes its conflist, the binary is installed and masq-cni chained within 5 s."""
    bin_dir, conf_dir = tmp_path / "bin", tmp_path / "net.d"
    bin_dir.mkdir()
    conf_dir.mkdir()
    watcher = watching(bin_dir, conf_dir)
    eventually(lambda: watcher.said("waiting for the main CNI"))
    time.sleep(1.5)
    assert watcher.proc.poll() is None, watcher.lines
    assert list(bin_dir.iterdir()) == []
    flannel = cni_cases.case_bytes("flannel-10-flannel.conflist")
    write_by_rename(conf_dir / "10-flannel.conflist", flannel)
    eventually(lambda: is_chained_in_effect(conf_dir))
    assert run_plugin(bin_dir / "masq-cni") == "v1"
    assert watcher.stop() == 0
    assert is_chained_in_effect(conf_dir), "SIGTERM leaves the chain in place"


@pytest.mark.parametrize("writer", [write_by_rename, write_in_place], ids=["rename", "in-place"])
@pytest.mark.parametrize(
    "case",
    [
        "cilium-05-cilium.conflist",
        "flannel-10-flannel.conflist",
        "aws-10-aws.conflist",
        "cce.vpc-route-veth-00-cce-cni.conflist",
        "kindnet-10-kindnet.conflist",
    ],
)
def test_watch_rechains_after_the_main_cni_rewrites_its_file(
    tmp_path: Path,
    watching: Callable[..., WatchProcess],
    case: str,
    writer: Callable[[Path, bytes], None],
) -> None:
    """The main CNI puts its own bytes back (on its restart, or every minute as CCE's agent
    does), by rename or in place: masq-cni is chained again within 5 s, and the backup holds
    the main CNI's latest bytes, which uninstall restores."""
    bin_dir, conf_dir = tmp_path / "bin", tmp_path / "net.d"
    bin_dir.mkdir()
    conf_dir.mkdir()
    path = conf_dir / cni_cases.node_name(case)
    original = cni_cases.case_bytes(case)
    path.write_bytes(original)
    watcher = watching(bin_dir, conf_dir)
    eventually(lambda: is_chained_in_effect(conf_dir))
    for round_ in range(2):
        rewritten = json.loads(original)
        rewritten["plugins"][0]["x-round"] = round_  # the main CNI's new version of its file
        new_bytes = json.dumps(rewritten, indent=2).encode()
        writer(path, new_bytes)
        took = eventually(lambda: is_chained_in_effect(conf_dir))
        assert took < RECHAIN_WITHIN
        assert plugins(path)[:-1] == rewritten["plugins"]
        assert conflist.backup_path(path).read_bytes() == new_bytes
    assert watcher.stop() == 0
    assert uninstall(bin_dir, conf_dir) == 0
    assert path.read_bytes() == new_bytes
    assert sorted(p.name for p in conf_dir.iterdir()) == [path.name]


def test_watch_follows_a_new_main_cni_that_sorts_first(
    tmp_path: Path, watching: Callable[..., WatchProcess]
) -> None:
    """flannel's 10-flannel.conflist is chained; Cilium arrives with 05-cilium.conflist: masq-cni
    moves there within 5 s and flannel's file gets its own bytes back."""
    bin_dir, conf_dir = tmp_path / "bin", tmp_path / "net.d"
    bin_dir.mkdir()
    conf_dir.mkdir()
    flannel = cni_cases.case_bytes("flannel-10-flannel.conflist")
    (conf_dir / "10-flannel.conflist").write_bytes(flannel)
    watcher = watching(bin_dir, conf_dir)
    eventually(lambda: types(conf_dir / "10-flannel.conflist")[-1] == "masq-cni")
    write_by_rename(
        conf_dir / "05-cilium.conflist", cni_cases.case_bytes("cilium-05-cilium.conflist")
    )
    eventually(lambda: runtime_loads(conf_dir).name == "05-cilium.conflist")
    eventually(lambda: is_chained_in_effect(conf_dir))
    eventually(lambda: (conf_dir / "10-flannel.conflist").read_bytes() == flannel)
    assert watcher.stop() == 0


def test_watch_keeps_a_bare_conf_chained_in_effect(
    tmp_path: Path, watching: Callable[..., WatchProcess]
) -> None:
    """Cilium <= 1.13's 05-cilium.conf: the generated list in front of it follows its rewrites,
    goes when the .conf goes (the next file is then chained), and uninstall removes it."""
    bin_dir, conf_dir = tmp_path / "bin", tmp_path / "net.d"
    bin_dir.mkdir()
    conf_dir.mkdir()
    conf = conf_dir / "05-cilium.conf"
    conf.write_bytes(cni_cases.case_bytes("cilium-05-cilium.conf"))
    (conf_dir / "10-flannel.conflist").write_bytes(
        cni_cases.case_bytes("flannel-10-flannel.conflist")
    )
    watcher = watching(bin_dir, conf_dir)
    generated = conf_dir / "05-cilium-masq-cni.conflist"
    eventually(lambda: runtime_loads(conf_dir) == generated and is_chained_in_effect(conf_dir))
    cilium = json.loads(conf.read_text())
    cilium["enable-debug"] = True
    write_by_rename(conf, json.dumps(cilium).encode())
    eventually(lambda: chain_in_effect(conf_dir)[0] == cilium)
    conf.unlink()
    eventually(lambda: not generated.exists())
    eventually(lambda: types(conf_dir / "10-flannel.conflist")[-1] == "masq-cni")
    assert watcher.stop() == 0
    assert uninstall(bin_dir, conf_dir) == 0
    assert types(conf_dir / "10-flannel.conflist") == ["flannel", "portmap"]


def test_watch_does_not_crash_on_a_binary_that_cannot_run(
    tmp_path: Path, watching: Callable[..., WatchProcess]
) -> None:
    """A build the host cannot run: the watch stays up, says why, and installs and chains
    nothing (exiting would only crash-loop the pod)."""
    bin_dir, conf_dir = tmp_path / "bin", tmp_path / "net.d"
    bin_dir.mkdir()
    conf_dir.mkdir()
    path = conf_dir / "10-flannel.conflist"
    original = cni_cases.case_bytes("flannel-10-flannel.conflist")
    path.write_bytes(original)
    bad = make_bundle(
        tmp_path / "bad", "bad", "#!/bin/sh\necho 'GLIBC_2.99 not found' >&2\nexit 1\n"
    )
    watcher = WatchProcess(bin_dir, conf_dir, bad)
    try:
        eventually(lambda: watcher.said("cannot run on this host"))
        time.sleep(1.5)
        assert watcher.proc.poll() is None
        assert watcher.said("GLIBC_2.99")
        assert list(bin_dir.iterdir()) == []
        assert path.read_bytes() == original
    finally:
        assert watcher.stop() == 0


def test_watch_needs_chain(dirs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    bin_dir, conf_dir = dirs
    with pytest.raises(SystemExit) as exited:
        cli(["install", "--bin-dir", str(bin_dir), "--conf-dir", str(conf_dir), "--watch"])
    assert exited.value.code == 2
    assert "--watch needs --chain" in capsys.readouterr().err


def test_plan_picks_libcni_order() -> None:
    """The planner follows libcni: .conf, .conflist and .json compete by name alone."""
    d = Path("/etc/cni/net.d")
    assert confdir.plan(["10-a.conflist", "05-b.json"], set(), d).source == "05-b.json"
    assert confdir.plan(["10-a.conflist", "20-b.conf", "x.bak"], set(), d).target == "10-a.conflist"
    waiting = confdir.plan(["a.conf.bak", "b.tmp"], set(), d)
    assert waiting.target is None and "waiting" in waiting.waiting
    moved = confdir.plan(["05-c.conflist", "10-a.conflist"], {"10-a.conflist"}, d)
    assert moved.target == "05-c.conflist" and moved.unchain == ["10-a.conflist"]
    stale = confdir.plan(["05-x-masq-cni.conflist", "10-a.conflist"], set(), d)
    assert stale.target == "10-a.conflist" and stale.remove == ["05-x-masq-cni.conflist"]
    assert chaining.current_plan(Path("/nonexistent-masq-cni")).target is None
