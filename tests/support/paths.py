"""Where the tests find the repository, their golden files and the shared real-world cases."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository."""
GOLDEN = ROOT / "tests" / "golden"
SHARED = Path(os.environ.get("MASQD_SHARED", ROOT.parent / "shared"))
"""Real-world material beside the repository (../shared): read at run time, never copied."""
