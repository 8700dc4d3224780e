"""What masqd has loaded when it forks its workers: everything before the fork is in their
pages too, and everything the first sync waits for is start-up time."""

from __future__ import annotations

import subprocess
import sys

from tests.support.paths import ROOT

SERVING = ("grpc", "google", "prometheus_client", "masqd.api", "asyncio", "http", "tenacity")


def loaded_after(code: str) -> list[str]:
    probe = (
        f"import sys\n{code}\nprint(sorted(m for m in sys.modules if m.startswith({SERVING!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return eval(out.stdout)  # a list literal printed by the child


def test_parsing_the_command_line_loads_nothing_that_serves() -> None:
    """The flags' defaults are checked (the metrics address too) without importing the HTTP
    endpoint, prometheus_client or gRPC."""
    assert loaded_after("from masqd.cli import build_parser; build_parser().parse_args([])") == []


def test_the_engine_loads_nothing_that_serves_nor_the_retry_library() -> None:
    """What the daemon imports before forking (its engine, the workers' code) pulls in none of
    the serving side, and no tenacity: a worker loads it the first time a sync must retry."""
    assert loaded_after("import masqd.daemon, masqd.engine.supervisor") == []
