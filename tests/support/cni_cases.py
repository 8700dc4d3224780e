"""Real CNI configuration files, as 10 CNIs write them on nodes, from the project's shared
material (`<repo>/../shared/cases/conflists`, or $MASQD_SHARED/cases/conflists); SOURCES.md
there says where each comes from. Read at run time, never copied into the repository.

Missing material skips a test locally and fails it in CI.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.support.paths import SHARED

IN_CI = os.environ.get("CI") == "true"


def shared_dir() -> Path:
    return SHARED


def conflists_dir() -> Path:
    path = shared_dir() / "cases" / "conflists"
    if not path.is_dir():
        message = f"the shared conflists are missing: {path} (set MASQD_SHARED)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def case_names() -> list[str]:
    """The case files (for parametrizing; empty when the material is missing, which the
    test using conflists_dir() then reports)."""
    path = shared_dir() / "cases" / "conflists"
    if not path.is_dir():
        return ["missing"]
    return sorted(p.name for p in path.iterdir() if Path(p.name).suffix in (".conf", ".conflist"))


def node_name(case: str) -> str:
    """The name the file has on a node: the part after the first `-NN-` boundary."""
    match = re.search(r"-(\d\d-.+)$", case)
    assert match, case
    return match.group(1)


def case_bytes(case: str) -> bytes:
    return (conflists_dir() / case).read_bytes()
