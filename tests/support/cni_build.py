"""The standalone masq-cni and an old host root, built once per test run and shared by every
test module that needs them.

`make cni-bin`'s script builds into a directory of this run's own (the interpreter under it
is cached in build/cni across runs); the bullseye root (glibc 2.31, no Python) is debootstrap'd
once into build/cni/roots and reused.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.support.paths import ROOT


def _run(argv: list[str], what: str, timeout: float) -> str:
    start = time.monotonic()
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{what} failed:\n{proc.stdout}\n{proc.stderr}"
    print(f"\n{what}: {time.monotonic() - start:.1f}s", file=sys.stderr)
    return proc.stdout


@functools.cache
def standalone() -> Path:
    """dist/masq-cni as `make cni-bin` builds it: the link to the bundle's executable."""
    out = Path(tempfile.mkdtemp(prefix="masq-cni-dist-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    _run([str(ROOT / "scripts" / "build-cni.sh"), str(out)], "building masq-cni", 1800)
    return out / "masq-cni"


@functools.cache
def old_host_root() -> Path:
    """A Debian bullseye root filesystem: glibc 2.31, no Python."""
    out = _run([str(ROOT / "scripts" / "cni" / "old-host-root.sh")], "the bullseye root", 900)
    return Path(out.strip().splitlines()[-1])
