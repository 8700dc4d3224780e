"""Shared fixtures: namespaces, a topology per backend, and a masqd running in the node."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import netns
from tests.support.daemon import Masqd

BACKENDS = ("nft", "legacy")
IN_CI = os.environ.get("CI") == "true"


def require_root() -> None:
    """Tests on the real kernel need root; outside CI they skip, in CI they fail."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        message = "needs root and iproute2 to create network namespaces"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def topo(backend: str) -> Iterator[netns.Topology]:
    require_root()
    with netns.topology(backend) as t:
        yield t


@pytest.fixture
def ns() -> Iterator[str]:
    """A bare network namespace."""
    require_root()
    with netns.namespace("bare") as name:
        yield name


@pytest.fixture
def start_masqd(tmp_path: Path, topo: netns.Topology) -> Iterator[Callable[..., Masqd]]:
    """Start masqd in the topology's node namespace: start_masqd(config_text, *flags)."""
    daemons: list[Masqd] = []

    def start(config: str | None = None, *flags: str, wait_synced: bool = True) -> Masqd:
        workdir = tmp_path / f"masqd{len(daemons)}"
        workdir.mkdir()
        path = workdir / "ip-masq-agent"
        if config is not None:
            path.write_text(config)
        daemon = Masqd(
            topo.node,
            workdir,
            path,
            "--iptables-mode",
            topo.backend,
            "--drift-check-interval",
            "1",
            *flags,
        )
        daemons.append(daemon)
        return daemon.start(wait_synced)

    yield start
    for daemon in daemons:
        daemon.stop()


# Modules whose tests run the standalone masq-cni (and those that also need the old host root).
_NEEDS_PLUGIN = {"test_cni.py", "test_cni_artifact.py", "test_cni_cri.py", "test_image.py"}
_NEEDS_OLD_ROOT = {"test_cni_artifact.py", "test_image.py"}


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the standalone masq-cni (and debootstrap the old host root) before the first test
    that needs them: from an empty cache that takes minutes, which belong to no test's timeout.
    Only when such a test was selected; cni_build caches both for the run."""
    modules = {Path(str(item.fspath)).name for item in session.items}
    if modules & _NEEDS_PLUGIN and os.geteuid() == 0:
        from tests.support import cni_build

        cni_build.standalone()
        if modules & _NEEDS_OLD_ROOT:
            cni_build.old_host_root()
