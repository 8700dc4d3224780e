"""`masq-cni install` and `masq-cni uninstall`: put the standalone plugin into the host's CNI
bin directory and, when asked, chain it into the file the runtime loads (and take both out).

The standalone build (scripts/build-cni.sh) is a folder: the executable `masq-cni` next to
`lib/`. It is installed as `BIN/masq-cni.d/<digest>/` with `BIN/masq-cni` a relative symlink to
the executable inside, so the link is valid both in the installer's container
(`/host/opt/cni/bin`) and on the host (`/opt/cni/bin`). A new version is copied beside the old
one and the link swapped in one rename: a pod start running the old version at that moment
finishes with it. A single-file source (any executable) is copied to `BIN/masq-cni` the same
way: written beside it, then renamed over it.

Nothing is chained that cannot run: before the link moves, the copy is run chrooted into the
host's root (masqd.cni.hostcheck), and only then is the conflist touched. With --chain, nothing
is installed unless the chain can be made (the file the runtime loads exists and parses); with
--watch, the installer waits for it and keeps the chain in place (masqd.cni.watch).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from masqd.cni import chaining, conflist, hostcheck, watch
from masqd.cni.config import parse_failure_policy, parse_socket, parse_timeout
from masqd.cni.spec import CniError

NAME = "masq-cni"
BUNDLES = "masq-cni.d"
BUILD_INFO = "masq-cni.build.json"


class InstallError(Exception):
    """Installing or uninstalling cannot go on; the message says why."""


def running_bundle() -> Path:
    """The standalone build this process runs from (scripts/build-cni.sh: the launcher sets
    sys.prefix to its folder, which holds BUILD_INFO)."""
    home = Path(sys.prefix)
    if not (home / BUILD_INFO).is_file() or not (home / NAME).is_file():
        raise InstallError(
            "this masq-cni runs from a Python installation, which the host may not have: "
            "run the standalone build (make cni-bin: dist/masq-cni) or pass --source"
        )
    return home


def install_binary(source: Path, bin_dir: Path, host_root: Path) -> bool:
    """Place source as BIN/masq-cni once it has been seen to run on the host; False when that
    exact build was already there (it is still run)."""
    if not source.exists():
        raise InstallError(f"{source} does not exist")
    bin_dir.mkdir(parents=True, exist_ok=True)
    target = bin_dir / NAME
    if source.is_dir():
        return _install_bundle(source, bin_dir, target, host_root)
    if target.is_file() and not target.is_symlink() and _same_file(source, target):
        _check(target, host_root)
        return False
    tmp = bin_dir / f".{NAME}.{os.getpid()}.tmp"
    try:
        shutil.copyfile(source, tmp)
        os.chmod(tmp, 0o755)
        _fsync_file(tmp)
        _check(tmp, host_root)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    conflist.fsync_dir(bin_dir)
    _prune(bin_dir / BUNDLES, keep=set())
    return True


def _check(executable: Path, host_root: Path) -> None:
    try:
        hostcheck.check_runs(executable, host_root)
    except hostcheck.CannotRun as e:
        raise InstallError(f"masq-cni cannot run on this host, so it is not installed: {e}") from e


def uninstall_binary(bin_dir: Path) -> bool:
    target = bin_dir / NAME
    removed = False
    if target.is_symlink() or target.exists():
        target.unlink()
        removed = True
    bundles = bin_dir / BUNDLES
    if bundles.exists():
        shutil.rmtree(bundles)
        removed = True
    return removed


def _install_bundle(source: Path, bin_dir: Path, target: Path, host_root: Path) -> bool:
    if not (source / NAME).is_file():
        raise InstallError(f"{source} is not a masq-cni bundle: {source / NAME} is missing")
    digest = _tree_digest(source)
    bundles = bin_dir / BUNDLES
    link = f"{BUNDLES}/{digest}/{NAME}"
    if target.is_symlink() and os.readlink(target) == link and (bundles / digest).is_dir():
        _check(bundles / digest / NAME, host_root)
        return False
    previous = _linked_bundle(target)
    bundles.mkdir(exist_ok=True)
    fresh = not (bundles / digest).is_dir()
    if fresh:
        staging = bundles / f".{digest}.{os.getpid()}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(source, staging, symlinks=True)
        os.replace(staging, bundles / digest)
        conflist.fsync_dir(bundles)
    try:
        _check(bundles / digest / NAME, host_root)
    except InstallError:
        if fresh:
            shutil.rmtree(bundles / digest, ignore_errors=True)
            with contextlib.suppress(OSError):
                bundles.rmdir()  # only when empty: nothing of ours is left
        raise
    tmp_link = bin_dir / f".{NAME}.{os.getpid()}.link.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp_link.unlink()
    os.symlink(link, tmp_link)
    os.replace(tmp_link, target)
    conflist.fsync_dir(bin_dir)
    _prune(bundles, keep={digest, previous} - {None})
    return True


def _linked_bundle(target: Path) -> str | None:
    """The bundle digest BIN/masq-cni points at now, if it is one of ours."""
    if not target.is_symlink():
        return None
    parts = Path(os.readlink(target)).parts
    return parts[1] if len(parts) == 3 and parts[0] == BUNDLES else None


def _prune(bundles: Path, keep: set[str | None]) -> None:
    """Remove bundles other than keep: the new one, and the one a running ADD may still use."""
    if not bundles.is_dir():
        return
    for entry in bundles.iterdir():
        if entry.name not in keep:
            shutil.rmtree(entry, ignore_errors=True)
    if not any(bundles.iterdir()):
        bundles.rmdir()


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            h.update(f"L {rel} {os.readlink(path)}\n".encode())
        elif path.is_file():
            h.update(f"F {rel} {path.stat().st_mode & 0o777:o}\n".encode())
            h.update(_file_digest(path))
    return h.hexdigest()[:16]


def _file_digest(path: Path) -> bytes:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").digest()


def _same_file(a: Path, b: Path) -> bool:
    return a.stat().st_size == b.stat().st_size and _file_digest(a) == _file_digest(b)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _explicit_conflist(args: argparse.Namespace) -> Path | None:
    if not args.conflist:
        return None
    path = Path(args.conflist)
    if not path.is_absolute() and path.parent == Path(".") and args.conf_dir:
        path = Path(args.conf_dir) / path
    return path


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The plugin keys given on the command line, checked as the plugin will check them."""
    settings: dict[str, Any] = {}
    if args.socket is not None:
        settings["socket"] = parse_socket(args.socket)
    if args.timeout is not None:
        try:
            value: float | str = float(args.timeout)
        except ValueError:
            value = args.timeout
        parse_timeout(value)
        settings["timeout"] = value
    if args.failure_policy is not None:
        settings["failurePolicy"] = parse_failure_policy(args.failure_policy)
    return settings


def install(args: argparse.Namespace) -> int:
    settings = _settings(args)
    source = Path(args.source) if args.source else running_bundle()
    bin_dir, host_root = Path(args.bin_dir), Path(args.host_root)
    explicit = _explicit_conflist(args)
    if args.chain and not (args.conf_dir or explicit):
        raise InstallError("--chain needs --conf-dir or --conflist")
    conf_dir = Path(args.conf_dir) if args.conf_dir else (explicit or Path(".")).parent

    def put_binary() -> None:
        changed = install_binary(source, bin_dir, host_root)
        print(f"{'installed' if changed else 'already installed'}: {bin_dir / NAME}", flush=True)

    if not args.chain:
        put_binary()
        return 0
    if args.watch:
        return watch.Watch(conf_dir, settings, put_binary, explicit=explicit).run()
    plan = chaining.current_plan(conf_dir, explicit)
    chaining.check(conf_dir, plan)  # before anything is installed
    had_binary = (bin_dir / NAME).exists()
    put_binary()
    try:
        done = chaining.apply(conf_dir, plan, settings)
    except BaseException:
        if not had_binary:  # the binary goes in only with its chain
            uninstall_binary(bin_dir)
        raise
    for line in done:
        print(line)
    if not done:
        print(f"already chained in: {conf_dir / str(plan.target)}")
    return 0


def uninstall(args: argparse.Namespace) -> int:
    explicit = _explicit_conflist(args)
    if explicit is not None or args.conf_dir:
        conf_dir = Path(args.conf_dir) if args.conf_dir else Path(".")
        for line in chaining.unchain_all(conf_dir, explicit):
            print(line)
    bin_dir = Path(args.bin_dir)
    removed = uninstall_binary(bin_dir)
    print(f"{'removed' if removed else 'not installed'}: {bin_dir / NAME}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=NAME,
        description="With CNI_COMMAND set, masq-cni is a chained CNI plugin that asks masqd to "
        "resync after pod network setup. Without it, it installs or uninstalls itself.",
    )
    sub = p.add_subparsers(dest="action", required=True)
    inst = sub.add_parser("install", help="copy this masq-cni into the CNI bin directory")
    inst.add_argument("--bin-dir", required=True, help="the host's CNI bin directory")
    inst.add_argument("--conf-dir", help="the host's CNI configuration directory")
    inst.add_argument(
        "--chain",
        action="store_true",
        help="chain masq-cni into the file the runtime loads (the lexically first .conf, "
        ".conflist or .json in --conf-dir)",
    )
    inst.add_argument(
        "--watch",
        action="store_true",
        help="with --chain: wait for the main CNI's configuration and keep masq-cni chained "
        "when it is rewritten; runs until SIGTERM",
    )
    inst.add_argument(
        "--host-root",
        default="/",
        help="the host's root filesystem (read-only is enough): the installed plugin is run "
        "chrooted there before it is chained (default /: this is the host)",
    )
    inst.add_argument(
        "--conflist",
        help="chain into this conflist instead (a bare name is looked up in --conf-dir)",
    )
    inst.add_argument("--socket", help="masqd's socket, for the conflist entry")
    inst.add_argument("--timeout", help="how long ADD waits for masqd (2s, 500ms, or seconds)")
    inst.add_argument("--failure-policy", help="ignore or fail, for the conflist entry")
    inst.add_argument(
        "--source", help="the build to install (default: the running standalone masq-cni)"
    )
    inst.set_defaults(func=install)
    uninst = sub.add_parser("uninstall", help="take masq-cni out of the conflist and bin dir")
    uninst.add_argument("--bin-dir", required=True, help="the host's CNI bin directory")
    uninst.add_argument(
        "--conf-dir", help="remove masq-cni from every .conflist here (and the lists it made)"
    )
    uninst.add_argument("--conflist", help="only from this conflist")
    uninst.set_defaults(func=uninstall)
    return p


def cli(argv: list[str]) -> int:
    """0 done, 1 failed (the message says why), 2 usage error."""
    args = parser().parse_args(argv)
    if args.action == "install" and args.watch and not args.chain:
        parser().error("--watch needs --chain")
    try:
        return int(args.func(args))
    except CniError as e:
        print(f"{NAME}: {e.msg}" + (f" ({e.details})" if e.details else ""), file=sys.stderr)
        return 2
    except (InstallError, conflist.ConflistError, OSError) as e:
        print(f"{NAME}: {args.action} failed: {e}", file=sys.stderr)
        return 1
