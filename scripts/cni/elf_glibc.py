"""The newest GLIBC symbol version each ELF file in a tree needs, read from its version-needs
section (.gnu.version_r): what the host's C library must provide for the file to load.

    python scripts/cni/elf_glibc.py [--max 2.28] DIR_OR_FILE...

Prints one line per ELF file ("<newest>  <path>", "-" when it needs no GLIBC version) and exits
1 when --max is given and a file needs a newer version. No binutils needed: the ELF64
little-endian headers are read here (the only kind masq-cni ships).
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

SHT_GNU_VERNEED = 0x6FFFFFFE
SHT_DYNSYM = 11


def is_elf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def needed_versions(path: Path) -> list[str]:
    """Every version name (GLIBC_2.17, GLIBCXX_3.4...) the file's version-needs section asks."""
    data = path.read_bytes()
    if data[4] != 2 or data[5] != 1:
        raise ValueError(f"{path}: not a little-endian ELF64 file")
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [
        struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)
    ]
    names: list[str] = []
    for _name, kind, _flags, _addr, offset, _size, link, info, _align, _entsize in sections:
        if kind != SHT_GNU_VERNEED:
            continue
        strtab = sections[link][4]
        entry = offset
        for _ in range(info):  # sh_info: the number of Verneed entries
            _version, count, _file, aux, following = struct.unpack_from("<HHIII", data, entry)
            at = entry + aux
            for _ in range(count):
                _hash, _flags2, _other, name, next_aux = struct.unpack_from("<IHHII", data, at)
                end = data.index(b"\0", strtab + name)
                names.append(data[strtab + name : end].decode())
                at += next_aux
            entry += following
    return names


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def newest_glibc(path: Path) -> str | None:
    """The newest x.y of the GLIBC_x.y versions the file needs; None when it needs none."""
    versions = [v.removeprefix("GLIBC_") for v in needed_versions(path) if v.startswith("GLIBC_")]
    versions = [v for v in versions if v.replace(".", "").isdigit()]
    return max(versions, key=version_key) if versions else None


def elf_files(roots: list[Path]) -> Iterator[Path]:
    for root in roots:
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in paths:
            if not path.is_symlink() and is_elf(path):
                yield path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="+", type=Path)
    parser.add_argument("--max", help="fail when a file needs a newer GLIBC version than this")
    args = parser.parse_args(argv)
    too_new = []
    found = 0
    for path in elf_files(args.roots):
        found += 1
        newest = newest_glibc(path)
        shown = os.path.relpath(path, args.roots[0]) if args.roots[0].is_dir() else path
        print(f"GLIBC {newest or '-':6}  {shown}")
        if args.max and newest and version_key(newest) > version_key(args.max):
            too_new.append(f"{path} needs GLIBC_{newest}")
    if not found:
        print(f"no ELF file in {' '.join(map(str, args.roots))}", file=sys.stderr)
        return 1
    if too_new:
        print(f"newer than GLIBC_{args.max}: " + "; ".join(too_new), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
