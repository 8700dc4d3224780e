"""A long-lived thread's loop, supervised: an exception in one step is logged, reported, and
the loop goes on after a pause; the thread never dies of it.

masqd's threads (the config loop, each family's runner) each run one step after another
until masqd stops. A step that raises (a bug, or the node out of descriptors: `OSError: [Errno
24]`) used to end its thread for good, silently: no more config changes applied, or a family
left without a worker. Here each fault is logged with its traceback once per distinct error,
counted, shown in status (`Fault`) as ongoing until a step succeeds again, and the next step
comes after a pause that doubles while the faults go on, so a persistent one never spins.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

from masqd.core.status import Fault

log = logging.getLogger("masqd.guard")

FIRST_PAUSE = 0.1
LONGEST_PAUSE = 5.0


class Guard:
    """Runs `step` until `stop` is set; each exception a reported fault, never the end."""

    def __init__(
        self,
        name: str,
        stop: threading.Event,
        *,
        on_fault: Callable[[Fault], None] = lambda _f: None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self._stop = stop
        self._on_fault = on_fault
        self._wall = wall
        self._lock = threading.Lock()
        self._fault: Fault | None = None
        self._last_logged = ""

    def run(self, step: Callable[[], None]) -> None:
        pause, failing = FIRST_PAUSE, False
        while not self._stop.is_set():
            try:
                step()
            except Exception as e:
                self._record(e)
                failing = True
                self._stop.wait(pause)
                pause = min(LONGEST_PAUSE, pause * 2)
            else:
                if failing:
                    self._recovered()
                    pause, failing = FIRST_PAUSE, False

    def fault(self) -> Fault | None:
        """The last fault, if any (ongoing until a step succeeded after it)."""
        with self._lock:
            return self._fault

    def _record(self, e: Exception) -> None:
        error = f"{type(e).__name__}: {e}"
        with self._lock:
            count = (self._fault.count if self._fault is not None else 0) + 1
            fault = self._fault = Fault(self.name, error, self._wall(), count, ongoing=True)
        if error != self._last_logged:
            log.exception("%s failed (%s); it goes on after a pause", self.name, error)
            self._last_logged = error
        else:
            log.debug("%s failed again: %s", self.name, error)
        self._on_fault(fault)

    def _recovered(self) -> None:
        with self._lock:
            fault = self._fault
            if fault is not None:
                self._fault = dataclasses.replace(fault, ongoing=False)
        if fault is not None:
            log.info("%s works again after %d faults", self.name, fault.count)
        self._last_logged = ""
