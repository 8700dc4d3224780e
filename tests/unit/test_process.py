"""masqd.engine.process: the restart backoff. The first death after a healthy spell is replaced at
once; deaths in a row, each soon after its start, wait ever longer, up to a ceiling."""

from __future__ import annotations

from multiprocessing.connection import Connection

import pytest

from masqd.core.model import Family
from masqd.engine.process import Backoff, WorkerProcess
from masqd.engine.worker import WorkerOptions

OPTS = WorkerOptions(Family.IPV4, "nft", "IP-MASQ-AGENT", 1.0, 1, 1.0)


def test_the_first_death_is_replaced_at_once_then_the_wait_doubles_to_a_ceiling() -> None:
    backoff = Backoff(base=0.2, maximum=3.0)
    assert [backoff.delay(n) for n in range(1, 8)] == [0.0, 0.4, 0.8, 1.6, 3.0, 3.0, 3.0]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class DeadProcess:
    """A process that has already exited."""

    pid = 4242
    exitcode = -9
    sentinel = -1

    def is_alive(self) -> bool:
        return False

    def join(self, timeout: float | None = None) -> None:
        return None

    def kill(self) -> None:
        return None


class ClosedConn:
    def send(self, obj: object) -> None:
        raise OSError("closed")

    def close(self) -> None:
        return None


def launcher(opts: WorkerOptions) -> tuple[DeadProcess, Connection]:
    return DeadProcess(), ClosedConn()  # type: ignore[return-value]


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_deaths_soon_after_start_count_up_and_a_healthy_spell_resets_them(clock: Clock) -> None:
    process = WorkerProcess(OPTS, launcher, Backoff(base=0.2, healthy_after=60.0), clock)  # type: ignore[arg-type]
    delays = []
    for lived in (5.0, 1.0, 1.0):
        process.start()
        clock.now += lived
        delays.append(process.buried())
    assert delays == [0.0, 0.4, 0.8]
    process.start()
    clock.now += 61.0  # a healthy spell
    assert process.buried() == 0.0
    assert process.quick_deaths == 1
