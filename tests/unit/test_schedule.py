"""masqd.engine.schedule: the interval sync comes every resyncInterval, an override replaces it
for its time to live and then the configured interval returns; bounds are enforced."""

from __future__ import annotations

import pytest

from masqd.core.errors import RequestError
from masqd.engine.schedule import DEFAULT_INTERVAL, Schedule


class Clocks:
    """A monotonic and a wall clock that move together."""

    def __init__(self) -> None:
        self.now = 1000.0

    def mono(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now + 1_700_000_000.0


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


@pytest.fixture
def schedule(clocks: Clocks) -> Schedule:
    return Schedule(clocks.mono, clocks.wall)


def test_the_first_interval_sync_is_due_one_default_interval_after_start(
    clocks: Clocks, schedule: Schedule
) -> None:
    assert schedule.interval().effective == DEFAULT_INTERVAL
    assert schedule.seconds_left() == DEFAULT_INTERVAL
    clocks.now += DEFAULT_INTERVAL - 0.1
    assert not schedule.due()
    clocks.now += 0.1
    assert schedule.due()


def test_a_shorter_configured_interval_pulls_the_next_sync_in(
    clocks: Clocks, schedule: Schedule
) -> None:
    """configure(5): due 5 s from now, not at the old 60 s mark; then every 5 s."""
    clocks.now += 10
    schedule.configure(5.0)
    assert schedule.seconds_left() == 5.0
    clocks.now += 5
    assert schedule.due()
    schedule.ran()
    assert not schedule.due() and schedule.seconds_left() == 5.0


def test_a_longer_configured_interval_keeps_the_sync_already_due(
    clocks: Clocks, schedule: Schedule
) -> None:
    """The next sync comes no later than the new interval, and no later than planned."""
    schedule.configure(600.0)
    assert schedule.seconds_left() == DEFAULT_INTERVAL
    assert schedule.interval().configured == 600.0


def test_an_override_replaces_the_interval_until_its_ttl(
    clocks: Clocks, schedule: Schedule
) -> None:
    override = schedule.set_override(2.0, ttl=10.0)
    assert override.expires_at == clocks.wall() + 10.0
    interval = schedule.interval()
    assert (interval.effective, interval.source, interval.override) == (2.0, "override", override)
    assert schedule.seconds_left() == 2.0
    clocks.now += 9.9
    assert schedule.expire() is None
    clocks.now += 0.1
    assert schedule.expire() == override
    assert schedule.expire() is None
    interval = schedule.interval()
    assert (interval.effective, interval.source, interval.override) == (60.0, "config", None)
    assert schedule.seconds_left() == 60.0


def test_the_wait_ends_when_the_override_does(clocks: Clocks, schedule: Schedule) -> None:
    """An override of 30 s living 5 s: the loop wakes after 5 s to expire it."""
    schedule.set_override(30.0, ttl=5.0)
    assert schedule.seconds_left() == 5.0


def test_clearing_an_override_restores_the_configured_interval(
    clocks: Clocks, schedule: Schedule
) -> None:
    schedule.configure(20.0)
    schedule.set_override(3600.0, ttl=7200.0)
    assert schedule.seconds_left() == 3600.0
    assert schedule.clear_override()
    assert not schedule.clear_override()
    assert schedule.interval().source == "config"
    assert schedule.seconds_left() == 20.0


@pytest.mark.parametrize(
    ("interval", "ttl", "words"),
    [
        (0.5, 60.0, "interval 0.5s is out of bounds"),
        (86401.0, 60.0, "out of bounds"),
        (5.0, 0.0, "ttl 0s is out of bounds"),
        (5.0, 86401.0, "ttl 86401s is out of bounds"),
    ],
)
def test_override_bounds(schedule: Schedule, interval: float, ttl: float, words: str) -> None:
    with pytest.raises(RequestError, match=words):
        schedule.set_override(interval, ttl)
    assert schedule.interval().source == "config"
