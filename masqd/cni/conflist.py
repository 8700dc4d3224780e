"""masq-cni's entry in a network configuration list, and the files that hold one.

The JSON edits are plain functions. Files are only ever replaced whole (a temporary file next
to the target, fsync, rename), so a runtime reading the directory never sees half a file;
temporary and backup files end in .tmp and .bak, which runtimes do not load. A conflist that is
a symlink is written through to its target, and the link stays. A file that changes between
our reading it and our replacing it (the main CNI rewriting it at that moment) is read again
and the edit redone, so its new content is never lost under ours.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

PLUGIN_TYPE = "masq-cni"
BACKUP_SUFFIX = ".masq-cni.bak"
RETRIES = 20
"""How often a file that keeps changing under us is read again before we give up."""


class ConflistError(Exception):
    """The conflist cannot be found, read or understood."""


class ChangedUnderUs(ConflistError):
    """The file kept changing while we tried to replace it."""


# ---- the JSON -----------------------------------------------------------------------------


def chained(conflist: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """conflist with one masq-cni entry, last. An entry already there keeps the keys that
    settings does not override."""
    plugins = plugins_of(conflist)
    existing = [p for p in plugins if p.get("type") == PLUGIN_TYPE]
    entry = {**(existing[-1] if existing else {"type": PLUGIN_TYPE}), **settings}
    others = [p for p in plugins if p.get("type") != PLUGIN_TYPE]
    return {**conflist, "plugins": [*others, entry]}


def unchained(conflist: dict[str, Any]) -> dict[str, Any]:
    """conflist without any masq-cni entry."""
    plugins = [p for p in plugins_of(conflist) if p.get("type") != PLUGIN_TYPE]
    return {**conflist, "plugins": plugins}


def is_chained(conflist: dict[str, Any]) -> bool:
    return any(p.get("type") == PLUGIN_TYPE for p in plugins_of(conflist))


def plugins_of(conflist: dict[str, Any], path: Path | None = None) -> list[dict[str, Any]]:
    plugins = conflist.get("plugins")
    if not isinstance(plugins, list) or not all(isinstance(p, dict) for p in plugins):
        where = f"{path}: " if path else ""
        raise ConflistError(f'{where}a conflist needs a "plugins" list of objects')
    return plugins


def parse(text: str, path: Path, *, single: bool = False) -> dict[str, Any]:
    """A conflist (or, single, a one-plugin .conf/.json) as libcni would accept it."""
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ConflistError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ConflistError(f"{path} is not a JSON object")
    if single:
        if not isinstance(data.get("type"), str) or not data["type"]:
            raise ConflistError(f'{path}: a network configuration needs a "type"')
    else:
        plugins_of(data, path)
    return data


def dump(conflist: dict[str, Any]) -> str:
    return json.dumps(conflist, indent=2) + "\n"


# ---- the files ----------------------------------------------------------------------------


class Snapshot:
    """A file's bytes as read, and what tells whether it changed since."""

    __slots__ = ("data", "mode", "path", "stamp")

    def __init__(self, path: Path, fd: int | None = None) -> None:
        """Read path, or (fd) the file open at fd, which may no longer be at path."""
        self.path = path
        try:
            if fd is not None:
                st = os.fstat(fd)
                self.data = os.pread(fd, st.st_size + 1, 0)
            else:
                with open(path, "rb") as f:
                    st = os.fstat(f.fileno())
                    self.data = f.read()
        except OSError as e:
            raise ConflistError(f"cannot read {path}: {e}") from e
        self.mode = st.st_mode & 0o7777
        self.stamp = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    @property
    def text(self) -> str:
        try:
            return self.data.decode()
        except UnicodeDecodeError as e:
            raise ConflistError(f"{self.path} is not UTF-8: {e}") from e

    def unchanged(self) -> bool:
        """The file at path is still this one, with these bytes."""
        try:
            return Snapshot(self.path).same(self)
        except ConflistError:
            return False

    def same(self, other: Snapshot) -> bool:
        return self.stamp == other.stamp and self.data == other.data


def real_path(path: Path) -> Path:
    """Where writing path lands: a symlinked conflist is replaced at its target."""
    return Path(os.path.realpath(path))


def replace(
    path: Path, edit: Callable[[Snapshot | None], bytes | None], *, create_mode: int = 0o644
) -> tuple[bool, Snapshot | None]:
    """Rewrite path with edit(snapshot) -> new bytes (None: leave it), never over a version of
    the file the edit was not made from. Returns (written, the snapshot the edit was made
    from). A missing file is edited from None, and created.

    The main CNI may rewrite its file while we do: by rename before ours (seen just before our
    rename: the file is read again and the edit redone), or in place into the file we are
    replacing (seen just after, through the descriptor we hold on it: its new content is
    edited and written again, not lost with the replaced file)."""
    target = real_path(path)
    base: Snapshot | None = None
    """The main CNI's content written in place as ours went in: what to edit next."""
    for _ in range(RETRIES):
        current = Snapshot(target) if target.exists() else None
        source = base if base is not None else current
        new = edit(source)
        if new is None:
            if base is None:
                return False, current
            new = base.data  # it needs nothing of ours: it goes back as the main CNI wrote it
        mode = current.mode if current else create_mode
        written, raced = _replace_unless_changed(target, new, mode, current)
        if written and raced is None:
            return True, source
        base = raced
    raise ChangedUnderUs(f"{path} kept changing while masq-cni tried to update it")


def _replace_unless_changed(
    path: Path, data: bytes, mode: int, expect: Snapshot | None
) -> tuple[bool, Snapshot | None]:
    """atomic_write, unless path is no longer as expect read it just before the rename
    (False, None). After the rename, (True, the replaced file) if it was written in place in
    the meantime, else (True, None)."""
    held = os.open(path, os.O_RDONLY) if expect is not None else None
    try:
        if held is not None and expect is not None and not Snapshot(path, held).same(expect):
            return False, None
        replaced = atomic_write(path, data, mode, expect=expect)
        if not replaced:
            return False, None
        if held is not None and expect is not None:
            after = Snapshot(path, held)
            if not after.same(expect):
                return True, after
        return True, None
    finally:
        if held is not None:
            os.close(held)


def atomic_write(
    path: Path, data: bytes | str, mode: int = 0o644, expect: Snapshot | None = None
) -> bool:
    """Replace path with data in one rename, durable once this returns. With expect, the file
    must still be as expect read it just before the rename; if not, nothing is replaced and
    False is returned."""
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        if expect is not None and not expect.unchanged():
            os.unlink(tmp)
            return False
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    return True


def remove(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    fsync_dir(path.parent)
    return True


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def backup_path(path: Path) -> Path:
    return path.with_name(path.name + BACKUP_SUFFIX)


def chain_file(path: Path, settings: dict[str, Any]) -> bool:
    """Make masq-cni the last plugin of the conflist at path; False when it already was.

    The file's bytes before a change that adds masq-cni (the main CNI's own, latest version)
    are kept next to it as `<name>.masq-cni.bak`, so uninstall can put them back exactly.
    """
    target = real_path(path)

    def edit(snapshot: Snapshot | None) -> bytes | None:
        if snapshot is None:
            raise ConflistError(f"{path} does not exist")
        data = parse(snapshot.text, path)
        new = chained(data, settings)
        if new == data:
            return None
        if not is_chained(data):
            atomic_write(backup_path(target), snapshot.data, snapshot.mode)
        return dump(new).encode()

    written, _ = replace(path, edit)
    return written


def unchain_file(path: Path) -> bool:
    """Take masq-cni out of the conflist at path; False when it was not there. When what is
    left is what the backup holds, the backup's bytes are put back exactly and the backup goes;
    otherwise (the main CNI changed its file since) the JSON without masq-cni is written and
    the backup is kept."""
    target = real_path(path)
    backup = backup_path(target)

    def edit(snapshot: Snapshot | None) -> bytes | None:
        if snapshot is None:
            return None
        data = parse(snapshot.text, path)
        if not is_chained(data):
            return None
        new = unchained(data)
        try:
            original = backup.read_bytes()
            if json.loads(original) == new:
                return original
        except (OSError, ValueError):
            pass
        return dump(new).encode()

    written, _ = replace(path, edit)
    if written:
        with contextlib.suppress(OSError, ValueError):
            if backup.read_bytes() == target.read_bytes():
                remove(backup)
    return written
