"""Logs an operator can follow: JSON that parses line by line, one line per change and per
error, and a problem repeated every interval logged once and again only after a change."""

from __future__ import annotations

import io
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from masqd.logs import JsonFormatter, RepeatFilter
from tests.support import netns
from tests.support.daemon import Masqd, wait_until
from tests.support.observability import IptablesWrapper, scrape

GOOD = "masqOutBound: true\nresyncInterval: 1s\n"
nft_only = pytest.mark.parametrize("backend", ["nft"])


@pytest.fixture
def capture() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger of its own writing through RepeatFilter into a buffer."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    handler.addFilter(RepeatFilter())
    log = logging.getLogger("masqd.test-logs")
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.DEBUG)
    yield log, out
    log.handlers.clear()


def test_repeated_warning_is_logged_once(capture: tuple[logging.Logger, io.StringIO]) -> None:
    """The same error twice is one line; a different one is logged; both stay quiet after."""
    log, out = capture
    for _ in range(5):
        log.error("sync %s failed: %s", "ipv4", "exit 1")
        log.error("sync %s failed: %s", "ipv6", "exit 1")
    log.error("sync %s failed: %s", "ipv4", "exit 2")
    assert out.getvalue().splitlines() == [
        "ERROR masqd.test-logs sync ipv4 failed: exit 1",
        "ERROR masqd.test-logs sync ipv6 failed: exit 1",
        "ERROR masqd.test-logs sync ipv4 failed: exit 2",
    ]


def test_info_line_lets_a_returning_problem_be_logged_again(
    capture: tuple[logging.Logger, io.StringIO],
) -> None:
    """After an info line (progress) the same error is news again; debug lines are not."""
    log, out = capture
    log.warning("chain changed")
    log.debug("sync unchanged")
    log.warning("chain changed")
    log.info("sync changed")
    log.warning("chain changed")
    other = logging.getLogger("masqd.test-logs.other")
    other.info("unrelated progress")
    log.warning("chain changed")
    assert [line.split(" ", 2)[2] for line in out.getvalue().splitlines()] == [
        "chain changed",
        "sync unchanged",
        "sync changed",
        "chain changed",
        "unrelated progress",
    ]


def test_json_formatter_writes_one_object_a_line() -> None:
    """Each record is one JSON object with time, level, logger and message (and exc)."""
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        record = logging.LogRecord(
            "masqd.x", logging.ERROR, __file__, 1, "failed %s", ("here",), exc_info=True
        )
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "error"
    assert entry["logger"] == "masqd.x"
    assert entry["msg"] == "failed here"
    assert "ValueError: boom" in entry["exc"]
    assert entry["time"].endswith("Z")


def _entries(daemon: Masqd) -> list[dict[str, str]]:
    """masqd's log as JSON objects; every line must parse."""
    entries = []
    for line in daemon.log().splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line in masqd's log: {line!r}")
    return entries


@nft_only
def test_json_logs_parse_line_by_line(
    topo: netns.Topology, start_masqd: Callable[..., Masqd]
) -> None:
    """--log-format json at debug: every line parses, the startup sync is an info line,
    and a sync that changed nothing is a debug line only."""
    daemon = start_masqd(GOOD, "--log-format", "json", "--log-level", "debug")
    wait_until(
        lambda: (
            scrape(topo.node).value(
                "masqd_syncs_total", family="ipv4", reason="interval", result="unchanged"
            )
            >= 2
        )
    )
    entries = _entries(daemon)
    assert {"time", "level", "logger", "msg"} <= set(entries[0])
    changed = [e for e in entries if e["msg"].startswith("sync ipv4 reason=startup changed")]
    assert [e["level"] for e in changed] == ["info"]
    unchanged = [e for e in entries if e["msg"].startswith("sync ipv4 reason=interval unchanged")]
    assert len(unchanged) >= 2
    assert {e["level"] for e in unchanged} == {"debug"}


@nft_only
def test_config_rejected_ten_times_logs_one_error(
    topo: netns.Topology, start_masqd: Callable[..., Masqd]
) -> None:
    """The same bad content read 10 times is one error line; other bad content is another.
    No-op interval syncs leave no line at the default level."""
    daemon = start_masqd(GOOD, "--log-format", "json")
    seen: set[float] = set()
    for _ in range(10):
        _replace(daemon.config, "masqOutBound: maybe\n")
        # Each rewrite is read again: the rejection time moves on.
        seen.add(wait_until(lambda: _new_error_time(daemon, seen)))
    assert len(seen) == 10
    _replace(daemon.config, "resyncInterval: 5\n")
    wait_until(lambda: "resyncInterval" in daemon.status().config.error)
    time.sleep(0.5)
    errors = [e for e in _entries(daemon) if e["level"] == "error"]
    assert len(errors) == 2, errors
    assert "masqOutBound" in errors[0]["msg"]
    assert "resyncInterval" in errors[1]["msg"]
    assert not [e for e in _entries(daemon) if "unchanged" in e["msg"]]
    assert scrape(topo.node).value("masqd_config_loads_total", result="failure") == 2


@nft_only
def test_failing_sync_is_logged_once_until_it_recovers(
    tmp_path: Path,
    topo: netns.Topology,
    monkeypatch: pytest.MonkeyPatch,
    start_masqd: Callable[..., Masqd],
) -> None:
    """iptables-restore failing at every drift check logs each distinct error once; after a
    repair the same failure is news again and is logged again."""
    wrapper = IptablesWrapper.create(tmp_path / "bin", topo.backend)
    monkeypatch.setenv("PATH", wrapper.environ_path())
    daemon = start_masqd("masqOutBound: true\n")
    wrapper.fail_marker.touch()
    topo.iptables(4, "-t", "nat", "-F", "IP-MASQ-AGENT")

    def failed_repairs() -> float:
        return scrape(topo.node).value(
            "masqd_syncs_total", family="ipv4", reason="drift_repair", result="failed"
        )

    wait_until(lambda: failed_repairs() >= 4, timeout=15)
    lines = [line for line in daemon.log().splitlines() if "ipv4" in line]
    failures = [line for line in lines if "reason=drift_repair failed" in line]
    assert len(failures) == 1, lines
    assert "line 3 failed" in failures[0]
    assert len([line for line in lines if "changed by someone else" in line]) == 1
    wrapper.fail_marker.unlink()
    wait_until(lambda: scrape(topo.node).value("masqd_in_sync", family="ipv4") == 1)
    wrapper.fail_marker.touch()
    topo.iptables(4, "-t", "nat", "-F", "IP-MASQ-AGENT")
    before = failed_repairs()
    wait_until(lambda: failed_repairs() >= before + 2, timeout=15)
    failures = [
        line for line in daemon.log().splitlines() if "ipv4 reason=drift_repair failed" in line
    ]
    assert len(failures) == 2


def _replace(path: Path, text: str) -> None:
    """Write the file anew (new inode), as a ConfigMap update does."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _new_error_time(daemon: Masqd, seen: set[float]) -> float | None:
    config = daemon.status().config
    at = config.error_at.ToDatetime().timestamp() if config.error else 0.0
    return at if at and at not in seen else None
