"""Which file of a CNI configuration directory the runtime loads, and how to put masq-cni in it.

Runtimes find their network with libcni (`ConfFiles(dir, [".conf", ".conflist", ".json"])`,
sorted): containerd, CRI-O and the kubelet take the lexically first of those files. So masq-cni
must be in that file, whatever the main CNI calls it:

- the first file is a `.conflist`: masq-cni is appended to its plugins;
- it is a bare `.conf` or `.json` (one plugin, as Cilium <= 1.13 and Weave <= 2.4.0 write):
  a list cannot be made of it in place, because the main CNI owns that file and rewrites it.
  Instead masq-cni writes `<stem>-masq-cni.conflist` beside it, which sorts just before it
  ("-" < "."), holding that plugin and then masq-cni, as libcni's ConfListFromConf would list
  it. The runtime then loads the generated list; it is rewritten whenever the .conf changes
  and removed when the .conf goes away or stops being first (and on uninstall).

`plan` decides from the directory's listing and contents alone (pure); `masqd.cni.chaining`
carries its decision out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from masqd.cni import conflist

EXTENSIONS = (".conf", ".conflist", ".json")
GENERATED_SUFFIX = "-masq-cni.conflist"
GENERATED_FROM = "masqCniGeneratedFrom"
"""The key that marks a conflist masq-cni generated, naming the .conf it was made from."""


def config_names(names: list[str]) -> list[str]:
    """The names libcni considers, in the order it tries them."""
    return sorted(n for n in names if Path(n).suffix in EXTENSIONS)


def is_generated(name: str) -> bool:
    return name.endswith(GENERATED_SUFFIX)


def generated_name(single: str) -> str:
    """The conflist standing in for a bare .conf/.json: sorts right before it."""
    return Path(single).stem + GENERATED_SUFFIX


def generated_list(single: dict[str, Any], source: str) -> dict[str, Any]:
    """The list libcni makes of a one-plugin config (ConfListFromConf), marked as ours."""
    return {
        "cniVersion": single.get("cniVersion", ""),
        "name": single.get("name", ""),
        GENERATED_FROM: source,
        "plugins": [single],
    }


class Plan:
    """What the directory needs so that the file the runtime loads chains masq-cni.

    `target` is that file (None: nothing to chain yet, `waiting` says why); `source` is the
    bare .conf a generated target is made from; `remove` are our generated lists that must go;
    `unchain` are other conflists holding a masq-cni entry we added (we hold their backup)."""

    def __init__(
        self,
        target: str | None,
        *,
        source: str | None = None,
        remove: list[str] | None = None,
        unchain: list[str] | None = None,
        waiting: str = "",
    ) -> None:
        self.target = target
        self.source = source
        self.remove = remove or []
        self.unchain = unchain or []
        self.waiting = waiting

    def __repr__(self) -> str:
        return (
            f"Plan(target={self.target!r}, source={self.source!r}, remove={self.remove!r}, "
            f"unchain={self.unchain!r}, waiting={self.waiting!r})"
        )


def plan(names: list[str], chained_with_backup: set[str], conf_dir: Path) -> Plan:
    """Decide from the directory's file names (and which of them carry our entry with a backup
    of theirs) where masq-cni belongs."""
    configs = config_names(names)
    generated = [n for n in configs if is_generated(n)]
    main = [n for n in configs if not is_generated(n)]
    if not main:
        return Plan(
            None,
            remove=generated,
            waiting=f"no CNI configuration in {conf_dir} yet: waiting for the main CNI plugin "
            f"to write its {' or '.join(EXTENSIONS)} file",
        )
    first = main[0]
    others = sorted(chained_with_backup - {first})
    if first.endswith(".conflist"):
        return Plan(first, remove=generated, unchain=others)
    # ours sorts before first ("-" < "."), and first before every other main file: the
    # runtime loads ours once every other generated list (from an earlier main file) is gone.
    ours = generated_name(first)
    return Plan(ours, source=first, remove=[n for n in generated if n != ours], unchain=others)


def read_single(path: Path) -> tuple[bytes, dict[str, Any]]:
    snapshot = conflist.Snapshot(path)
    return snapshot.data, conflist.parse(snapshot.text, path, single=True)


def chained_with_backup(conf_dir: Path, names: list[str]) -> set[str]:
    """The conflists here that hold a masq-cni entry and a backup we made of them."""
    found = set()
    for name in config_names(names):
        if not name.endswith(".conflist") or is_generated(name):
            continue
        path = conf_dir / name
        if not conflist.backup_path(conflist.real_path(path)).exists():
            continue
        try:
            data = json.loads(path.read_text())
            if isinstance(data, Mapping) and conflist.is_chained(dict(data)):
                found.add(name)
        except (OSError, ValueError, conflist.ConflistError):
            continue
    return found
