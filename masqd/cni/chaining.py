"""Carrying out a confdir.Plan: masq-cni into the file the runtime loads, out of the others.

Every step is idempotent and writes only what differs, so running it again and again (the
watch does, every second) costs a few small reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from masqd.cni import confdir, conflist
from masqd.cni.spec import SUPPORTED_VERSIONS


def current_plan(conf_dir: Path, explicit: Path | None = None) -> confdir.Plan:
    """Where masq-cni belongs now; explicit: the conflist given with --conflist."""
    if explicit is not None:
        return confdir.Plan(str(explicit))
    try:
        names = [p.name for p in conf_dir.iterdir() if p.is_file()]
    except FileNotFoundError:
        return confdir.Plan(None, waiting=f"{conf_dir} does not exist yet")
    except OSError as e:
        raise conflist.ConflistError(f"cannot list {conf_dir}: {e}") from e
    return confdir.plan(names, confdir.chained_with_backup(conf_dir, names), conf_dir)


def check(conf_dir: Path, plan: confdir.Plan) -> None:
    """Raise ConflistError now if carrying the plan out would fail on what the files hold, so
    nothing is installed for a chain that cannot be made."""
    if plan.target is None:
        raise conflist.ConflistError(plan.waiting)
    if plan.source is not None:
        path = conf_dir / plan.source
        _, data = confdir.read_single(path)
    else:
        path = conf_dir / plan.target
        data = conflist.parse(conflist.Snapshot(path).text, path)
    version = data.get("cniVersion") or ""
    if version not in SUPPORTED_VERSIONS:
        # The runtime would hand masq-cni this version, which it refuses (error 1, whatever
        # its failurePolicy): every pod start would fail. Versions before 0.3.0 have no chains.
        shown = repr(version) if version else "missing (that is 0.1.0)"
        raise conflist.ConflistError(
            f"{path} is what the runtime loads, and its cniVersion is {shown}: masq-cni cannot "
            f"be chained there (it supports {', '.join(SUPPORTED_VERSIONS)}; chained plugins "
            "need 0.3.0 or later)"
        )


def apply(conf_dir: Path, plan: confdir.Plan, settings: dict[str, Any]) -> list[str]:
    """Make the directory match the plan; returns what was changed, one line each."""
    done = []
    if plan.target is not None:
        target = conf_dir / plan.target
        if plan.source is not None:
            if write_generated(target, conf_dir / plan.source, settings):
                done.append(f"chained: wrote {target} from {conf_dir / plan.source}")
        elif conflist.chain_file(target, settings):
            done.append(f"chained into: {target}")
    for name in plan.remove:
        if conflist.remove(conf_dir / name):
            done.append(f"removed {conf_dir / name} (its .conf is gone or no longer first)")
    for name in plan.unchain:
        if conflist.unchain_file(conf_dir / name):
            done.append(f"unchained from: {conf_dir / name} (the runtime no longer loads it)")
    return done


def write_generated(target: Path, source: Path, settings: dict[str, Any]) -> bool:
    """The conflist standing in for the bare config at source (see masqd.cni.confdir)."""
    _, single = confdir.read_single(source)

    def edit(snapshot: conflist.Snapshot | None) -> bytes | None:
        base = confdir.generated_list(single, source.name)
        old: dict[str, Any] | None = None
        if snapshot is not None:
            try:
                old = conflist.parse(snapshot.text, target)
            except conflist.ConflistError:
                old = None
        if old is not None:  # keep the settings of the entry we wrote before
            mine = [p for p in conflist.plugins_of(old) if p.get("type") == conflist.PLUGIN_TYPE]
            base["plugins"] += mine[-1:]
        new = conflist.chained(base, settings)
        return None if new == old else conflist.dump(new).encode()

    written, _ = conflist.replace(target, edit, create_mode=source.stat().st_mode & 0o7777)
    return written


def unchain_all(conf_dir: Path, only: Path | None = None) -> list[str]:
    """Take masq-cni out of every conflist here (or only one), and our generated lists."""
    done = []
    if only is not None:
        paths = [only]
    else:
        try:
            paths = sorted(p for p in conf_dir.iterdir() if p.suffix == ".conflist")
        except FileNotFoundError:
            paths = []
    for path in paths:
        if confdir.is_generated(path.name):
            if conflist.remove(path):
                done.append(f"removed: {path}")
        elif conflist.unchain_file(path):
            done.append(f"unchained from: {path}")
    return done
