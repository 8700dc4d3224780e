"""`masq-cni install` / `uninstall` on temporary directories: the bundle lands in the CNI bin
directory behind an atomically swapped relative link, the conflist gains masq-cni as its last
plugin exactly once (atomically, with a backup), and uninstall puts everything back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from masqd.cni import conflist
from masqd.cni.install import cli

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


def make_bundle(path: Path, version: str) -> Path:
    """A stand-in for the one-folder build: an executable and its _internal folder."""
    (path / "_internal").mkdir(parents=True)
    (path / "_internal" / "payload").write_text(version)
    exe = path / "masq-cni"
    exe.write_text(f"#!/bin/sh\necho {version}\n")
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
    """A CNI bin dir with a plugin in it, and a conf dir with the node's network."""
    bin_dir, conf_dir = tmp_path / "opt/cni/bin", tmp_path / "etc/cni/net.d"
    bin_dir.mkdir(parents=True)
    conf_dir.mkdir(parents=True)
    (bin_dir / "bridge").write_text("#!/bin/sh\n")
    (conf_dir / "10-bridge.conflist").write_text(json.dumps(BRIDGE_CONFLIST, indent=4))
    (conf_dir / "10-bridge.conflist").chmod(0o600)
    (conf_dir / "20-other.conflist").write_text(json.dumps({**BRIDGE_CONFLIST, "name": "other"}))
    (conf_dir / "05-single.conf").write_text(json.dumps({"type": "bridge", "name": "single"}))
    return bin_dir, conf_dir


def install(bin_dir: Path, source: Path, *extra: str, conf_dir: Path | None = None) -> int:
    args = ["install", "--bin-dir", str(bin_dir), "--source", str(source)]
    if conf_dir is not None:
        args += ["--conf-dir", str(conf_dir)]
    return cli([*args, *extra])


def plugins(path: Path) -> list[dict[str, Any]]:
    return list(json.loads(path.read_text())["plugins"])


def run_plugin(path: Path) -> str:
    return subprocess.run([str(path)], capture_output=True, text=True, check=True).stdout.strip()


def test_install_places_bundle_behind_relative_link(
    tmp_path: Path, dirs: tuple[Path, Path]
) -> None:
    """BIN/masq-cni is a relative link into BIN/masq-cni.d, so it works wherever BIN is mounted
    (the init container's /host/opt/cni/bin is the host's /opt/cni/bin)."""
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
    payloads = {(bin_dir / "masq-cni.d" / b / "_internal/payload").read_text() for b in bundles}
    assert payloads == {"v2", "v3"}
    assert sorted(p.name for p in bin_dir.iterdir()) == ["bridge", "masq-cni", "masq-cni.d"]


def test_install_single_file(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    """A single-file source is copied to BIN/masq-cni (mode 0755), replacing a bundle link."""
    bin_dir, _ = dirs
    assert install(bin_dir, make_bundle(tmp_path / "v1", "v1")) == 0
    single = tmp_path / "single"
    single.write_text("#!/bin/sh\necho single\n")
    assert install(bin_dir, single) == 0
    target = bin_dir / "masq-cni"
    assert not target.is_symlink() and target.stat().st_mode & 0o777 == 0o755
    assert run_plugin(target) == "single"
    assert not (bin_dir / "masq-cni.d").exists()
    inode = target.stat().st_ino
    assert install(bin_dir, single) == 0
    assert target.stat().st_ino == inode


def test_chain_appends_last_once_with_backup(
    tmp_path: Path, dirs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """--chain: masq-cni (with the given settings) becomes the last plugin of the lexically first
    .conflist; the original is kept as .masq-cni.bak; a second run rewrites nothing."""
    bin_dir, conf_dir = dirs
    target = conf_dir / "10-bridge.conflist"
    original = target.read_text()
    flags = ["--chain", "--socket", "/run/m.sock", "--timeout", "3s", "--failure-policy", "fail"]
    assert install(bin_dir, make_bundle(tmp_path / "v1", "v1"), *flags, conf_dir=conf_dir) == 0
    entry = {"type": "masq-cni", "socket": "/run/m.sock", "timeout": "3s", "failurePolicy": "fail"}
    assert plugins(target) == [*BRIDGE_CONFLIST["plugins"], entry]
    assert json.loads(target.read_text())["name"] == "k8s-pod-network"
    assert conflist.backup_path(target).read_text() == original
    assert target.stat().st_mode & 0o777 == 0o600
    assert json.loads((conf_dir / "20-other.conflist").read_text())["plugins"][-1]["type"] == (
        "portmap"
    )
    before, inode = snapshot(conf_dir), target.stat().st_ino
    capsys.readouterr()
    assert install(bin_dir, tmp_path / "v1", *flags, conf_dir=conf_dir) == 0
    assert "already chained" in capsys.readouterr().out
    assert snapshot(conf_dir) == before and target.stat().st_ino == inode
    # Nothing a runtime would load was added: only the backup, which ends in .bak.
    assert sorted(p.name for p in conf_dir.iterdir()) == [
        "05-single.conf",
        "10-bridge.conflist",
        "10-bridge.conflist.masq-cni.bak",
        "20-other.conflist",
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
    assert [p["type"] for p in plugins(target)] == ["bridge", "tuning", "masq-cni"]
    assert plugins(target)[-1] == {"type": "masq-cni", "timeout": "5s", "socket": "/y.sock"}
    assert not conflist.backup_path(target).exists()  # it was chained already: no new backup


def test_chain_explicit_conflist(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    """--conflist NAME picks that file in --conf-dir instead of the first one."""
    bin_dir, conf_dir = dirs
    bundle = make_bundle(tmp_path / "v1", "v1")
    assert install(bin_dir, bundle, "--chain", "--conflist", "20-other.conflist") == 1
    assert (
        install(bin_dir, bundle, "--chain", "--conflist", "20-other.conflist", conf_dir=conf_dir)
        == 0
    )
    assert plugins(conf_dir / "20-other.conflist")[-1] == {"type": "masq-cni"}
    assert plugins(conf_dir / "10-bridge.conflist") == BRIDGE_CONFLIST["plugins"]


def test_chain_without_conflist_fails(
    tmp_path: Path, dirs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """No .conflist yet (the main plugin has not written it): exit 1 and say so."""
    bin_dir, _ = dirs
    empty = tmp_path / "empty"
    empty.mkdir()
    assert install(bin_dir, make_bundle(tmp_path / "v1", "v1"), "--chain", conf_dir=empty) == 1
    assert "no *.conflist" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text", ["{not json", '["a"]', '{"name": "x"}', '{"plugins": [1]}'], ids=str
)
def test_malformed_conflist_is_left_alone(
    tmp_path: Path, dirs: tuple[Path, Path], text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bin_dir, conf_dir = dirs
    target = conf_dir / "10-bridge.conflist"
    target.write_text(text)
    assert install(bin_dir, make_bundle(tmp_path / "v1", "v1"), "--chain", conf_dir=conf_dir) == 1
    assert target.read_text() == text
    assert "10-bridge.conflist" in capsys.readouterr().err


def test_failed_write_leaves_conflist_intact(
    tmp_path: Path, dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails before its rename leaves the original and no temporary file."""
    bin_dir, conf_dir = dirs
    bundle = make_bundle(tmp_path / "v1", "v1")
    assert install(bin_dir, bundle) == 0  # the binary is in place: only the conflist is written
    before = snapshot(conf_dir)

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    assert install(bin_dir, bundle, "--chain", conf_dir=conf_dir) == 1
    assert snapshot(conf_dir) == before


def test_uninstall_reverses_install(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    """install --chain then uninstall leaves both directories exactly as they were."""
    bin_dir, conf_dir = dirs
    before = snapshot(bin_dir, conf_dir)
    bundle = make_bundle(tmp_path / "v1", "v1")
    assert install(bin_dir, bundle, "--chain", "--timeout", "1.5", conf_dir=conf_dir) == 0
    assert plugins(conf_dir / "10-bridge.conflist")[-1] == {"type": "masq-cni", "timeout": 1.5}
    args = ["uninstall", "--bin-dir", str(bin_dir), "--conf-dir", str(conf_dir)]
    assert cli(args) == 0
    after = snapshot(bin_dir, conf_dir)
    # The JSON is rewritten in a standard layout; its content is the original's.
    name = str(conf_dir / "10-bridge.conflist")
    assert json.loads(after.pop(name)[1]) == json.loads(before.pop(name)[1])
    assert after == before
    assert cli(args) == 0  # again: nothing to do, still fine


def test_uninstall_keeps_backup_when_conflist_changed(
    tmp_path: Path, dirs: tuple[Path, Path]
) -> None:
    """When the main plugin changed its conflist since, uninstall only takes masq-cni out and
    keeps the backup (it no longer matches)."""
    bin_dir, conf_dir = dirs
    target = conf_dir / "10-bridge.conflist"
    assert install(bin_dir, make_bundle(tmp_path / "v1", "v1"), "--chain", conf_dir=conf_dir) == 0
    data = json.loads(target.read_text())
    data["plugins"].insert(1, {"type": "bandwidth"})
    target.write_text(json.dumps(data))
    assert cli(["uninstall", "--bin-dir", str(bin_dir), "--conflist", str(target)]) == 0
    assert [p["type"] for p in plugins(target)] == ["bridge", "bandwidth", "portmap"]
    assert conflist.backup_path(target).exists()


@pytest.mark.parametrize(
    ("flag", "value", "word"),
    [("--timeout", "soon", "timeout"), ("--failure-policy", "maybe", "failurePolicy")],
)
def test_bad_settings_are_usage_errors(
    tmp_path: Path,
    dirs: tuple[Path, Path],
    flag: str,
    value: str,
    word: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Settings are checked as the plugin will check them, before anything is written."""
    bin_dir, conf_dir = dirs
    before = snapshot(bin_dir, conf_dir)
    bundle = make_bundle(tmp_path / "v1", "v1")
    assert install(bin_dir, bundle, "--chain", flag, value, conf_dir=conf_dir) == 2
    assert word in capsys.readouterr().err
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
