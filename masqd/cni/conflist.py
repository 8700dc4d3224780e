"""Adding masq-cni as the last plugin of a node's .conflist, and taking it out again.

The JSON edits are plain functions; the files are only ever replaced whole (write a temporary
file next to the target, fsync, rename), so a runtime reading the directory never sees half a
file. Temporary and backup files end in .tmp and .bak, which runtimes do not load.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

PLUGIN_TYPE = "masq-cni"
BACKUP_SUFFIX = ".masq-cni.bak"


class ConflistError(Exception):
    """The conflist cannot be found, read or understood."""


def find_conflist(conf_dir: Path) -> Path:
    """The node's network: the lexically first *.conflist in conf_dir."""
    try:
        candidates = sorted(p for p in conf_dir.glob("*.conflist") if p.is_file())
    except OSError as e:
        raise ConflistError(f"cannot list {conf_dir}: {e}") from e
    if not candidates:
        raise ConflistError(
            f"no *.conflist in {conf_dir}: the node's main CNI plugin has not written its "
            "configuration yet (or pass --conflist)"
        )
    return candidates[0]


def chained(conflist: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """conflist with one masq-cni entry, last. An entry already there keeps the keys that
    settings does not override."""
    plugins = _plugins(conflist)
    existing = [p for p in plugins if p.get("type") == PLUGIN_TYPE]
    entry = {**(existing[-1] if existing else {"type": PLUGIN_TYPE}), **settings}
    others = [p for p in plugins if p.get("type") != PLUGIN_TYPE]
    return {**conflist, "plugins": [*others, entry]}


def unchained(conflist: dict[str, Any]) -> dict[str, Any]:
    """conflist without any masq-cni entry."""
    plugins = [p for p in _plugins(conflist) if p.get("type") != PLUGIN_TYPE]
    return {**conflist, "plugins": plugins}


def is_chained(conflist: dict[str, Any]) -> bool:
    return any(p.get("type") == PLUGIN_TYPE for p in _plugins(conflist))


def backup_path(path: Path) -> Path:
    return path.with_name(path.name + BACKUP_SUFFIX)


def chain_file(path: Path, settings: dict[str, Any]) -> bool:
    """Make masq-cni the last plugin of the conflist at path; False when it already was.

    Before the first change to a conflist without masq-cni, its content is kept next to it
    (`<name>.masq-cni.bak`), so the main plugin's own configuration can always be restored.
    """
    text, data = read(path)
    new = chained(data, settings)
    if new == data:
        return False
    mode = os.stat(path).st_mode & 0o7777
    if not is_chained(data):
        atomic_write(backup_path(path), text, mode)
    atomic_write(path, dump(new), mode)
    return True


def unchain_file(path: Path) -> bool:
    """Take masq-cni out of the conflist at path; False when it was not there. The backup goes
    too when it holds exactly what is left."""
    _, data = read(path)
    if not is_chained(data):
        return False
    new = unchained(data)
    atomic_write(path, dump(new), os.stat(path).st_mode & 0o7777)
    backup = backup_path(path)
    try:
        if json.loads(backup.read_text()) == new:
            backup.unlink()
    except (OSError, ValueError):
        pass
    return True


def read(path: Path) -> tuple[str, dict[str, Any]]:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConflistError(f"cannot read {path}: {e}") from e
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ConflistError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ConflistError(f"{path} is not a JSON object")
    _plugins(data, path)
    return text, data


def dump(conflist: dict[str, Any]) -> str:
    return json.dumps(conflist, indent=2) + "\n"


def atomic_write(path: Path, text: str, mode: int = 0o644) -> None:
    """Replace path with text in one rename, durable once this returns."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _plugins(conflist: dict[str, Any], path: Path | None = None) -> list[dict[str, Any]]:
    plugins = conflist.get("plugins")
    if not isinstance(plugins, list) or not all(isinstance(p, dict) for p in plugins):
        where = f"{path}: " if path else ""
        raise ConflistError(f'{where}a conflist needs a "plugins" list of objects')
    return plugins
