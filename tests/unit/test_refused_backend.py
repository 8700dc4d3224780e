"""The iptables backend asked for on a kernel without its xt modules: the supervisor (with
stand-in workers, the node's facts given) refuses it at start, says so once in the log, and
shows it in status and /readyz naming the nftables backend; requests fail at once, and
nothing is retried. A real kernel here has every module, so the facts are the test's."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from masqd.core.choice import NodeFacts
from masqd.core.errors import Kind
from masqd.core.model import Family, Reason
from masqd.core.settings import Settings
from masqd.engine import supervisor as supervisor_module
from masqd.engine.supervisor import Supervisor
from masqd.serve.health import HealthCheck
from tests.unit.test_runner import _answer, launcher


@pytest.fixture
def refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> Iterator[Supervisor]:
    monkeypatch.setattr(
        supervisor_module.nodefacts,
        "gather",
        lambda needed: NodeFacts(missing=("xt_comment", "xt_addrtype")),
    )
    config = tmp_path / "config"
    config.write_text("masqOutBound: true\n")
    settings = Settings(config_path=str(config), socket="", backend="iptables", iptables_mode="nft")
    sup = Supervisor(settings, launcher=launcher(_answer))
    caplog.set_level(logging.INFO, logger="masqd")
    sup.start()
    yield sup
    sup.stop(1.0)


def test_the_refusal_is_said_in_the_log_status_and_readyz(
    refused: Supervisor, caplog: pytest.LogCaptureFixture
) -> None:
    result = refused.resync((Family.IPV4,), Reason.API)[Family.IPV4].result(5)
    assert not result.ok and result.error_kind == Kind.MISSING
    assert "xt_comment, xt_addrtype" in result.error and "--backend nftables" in result.error
    started = caplog.get_records("setup")  # the supervisor started in the fixture
    logged = [r.getMessage() for r in started if r.levelno == logging.ERROR]
    assert any(m.startswith("no rules are written: the kernel lacks xt_comment") for m in logged)
    for family in refused.status().families:
        assert family.state == "blocked" and not family.in_sync
    ready = HealthCheck(refused).readyz()
    assert not ready.ok
    errors = ready.detail["errors"]
    assert isinstance(errors, dict) and "--backend nftables" in errors["ipv4"]


def test_nothing_is_retried(refused: Supervisor) -> None:
    """Requests fail at once; no drift check runs and no write is ever attempted."""
    for _ in range(3):
        assert not refused.resync((Family.IPV4,), Reason.CNI)[Family.IPV4].result(5).ok
    (ipv4,) = [f for f in refused.status().families if f.family == Family.IPV4]
    assert ipv4.checks == 0 and ipv4.restores == 0
