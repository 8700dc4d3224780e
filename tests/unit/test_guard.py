"""masqd.engine.guard: a loop step that raises is a fault in status, not the end of the
thread; the pause between failing steps doubles; a step that succeeds ends the fault."""

from __future__ import annotations

import itertools
import threading
import time

from masqd.engine import guard
from masqd.engine.guard import Guard


def test_a_failing_step_is_recorded_and_the_loop_goes_on() -> None:
    stop = threading.Event()
    g = Guard("the test loop", stop)
    steps: list[float] = []
    seen = []

    def step() -> None:
        steps.append(time.monotonic())
        seen.append(g.fault())
        if len(steps) <= 3:
            raise OSError(24, "Too many open files")
        if len(steps) == 5:
            stop.set()

    g.run(step)
    during = seen[3]
    assert during is not None and during.ongoing and during.count == 3
    fault = g.fault()
    assert fault is not None and not fault.ongoing and fault.count == 3
    assert fault.thread == "the test loop"
    assert fault.error == "OSError: [Errno 24] Too many open files"
    pauses = [b - a for a, b in itertools.pairwise(steps[:4])]
    assert guard.FIRST_PAUSE <= pauses[0] < pauses[1] < pauses[2]


def test_the_pause_never_passes_the_longest() -> None:
    stop = threading.Event()
    g = Guard("the test loop", stop)
    count = {"n": 0}
    original = guard.LONGEST_PAUSE
    try:
        guard.LONGEST_PAUSE = 0.3
        started = time.monotonic()

        def step() -> None:
            count["n"] += 1
            if time.monotonic() - started > 1.5:
                stop.set()
            raise RuntimeError("always")

        g.run(step)
    finally:
        guard.LONGEST_PAUSE = original
    # 0.1, 0.2, 0.3, 0.3, 0.3, ...: about eight steps in 1.5 s, not two (no unbounded growth).
    assert 6 <= count["n"] <= 11
    fault = g.fault()
    assert fault is not None and fault.ongoing and fault.count == count["n"]


def test_a_stop_ends_the_pause_at_once() -> None:
    stop = threading.Event()
    g = Guard("the test loop", stop)

    def step() -> None:
        threading.Timer(0.05, stop.set).start()
        raise RuntimeError("then stop")

    original = guard.FIRST_PAUSE
    guard.FIRST_PAUSE = 10.0
    try:
        started = time.monotonic()
        g.run(step)
    finally:
        guard.FIRST_PAUSE = original
    assert time.monotonic() - started < 1.0
