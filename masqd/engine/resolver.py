"""The config's DNS names, kept resolved off the sync path.

One scheduling thread looks each name up when it is due (core.names.refresh_in: min(TTL,
resyncInterval), sooner after a failure), every look-up on a daemon thread of its own with its
own timeout (host/dns.py), so a name whose server never answers delays no other name, no sync
and no config load. When a name's addresses change, `on_change` is called (the supervisor
renders the rules again and syncs the families that moved); the answers themselves are handed
out as a snapshot. Each change is logged once: new addresses, a failure, a recovery.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from masqd.core.entries import HostName
from masqd.core.names import Answer, Lookup, refresh_in, settle
from masqd.host import dns

log = logging.getLogger("masqd.resolver")

LookupFn = Callable[[str], Lookup]


class Resolver:
    """Keeps an Answer for every name of the config in force."""

    def __init__(
        self,
        on_change: Callable[[], None],
        *,
        lookup: LookupFn = dns.lookup,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._on_change = on_change
        self._lookup = lookup
        self._clock = clock
        self._wall = wall
        self._cond = threading.Condition()
        self._answers: dict[str, Answer] = {}
        self._due: dict[str, float] = {}
        self._in_flight: set[str] = set()
        self._interval = 60.0
        self._stopping = False
        self._thread: threading.Thread | None = None

    def track(self, names: Iterable[HostName], interval: float) -> None:
        """The names of the config now in force: new ones are looked up at once, gone ones
        forgotten. Never waits for a look-up."""
        wanted = {n.name for n in names}
        with self._cond:
            self._interval = interval
            now = self._clock()
            for name in list(self._answers):
                if name not in wanted:
                    del self._answers[name]
                    self._due.pop(name, None)
            for name in wanted:
                if name not in self._answers:
                    self._answers[name] = Answer(name)
                    self._due[name] = now
                else:  # a shorter interval takes effect now, not after the longer one
                    self._due[name] = min(self._due[name], now + interval)
            self._cond.notify()
        if wanted and self._thread is None:
            self.start()

    def answers(self) -> dict[str, Answer]:
        """What is known of each name now (a snapshot)."""
        with self._cond:
            return dict(self._answers)

    def start(self) -> None:
        with self._cond:
            if self._thread is not None or self._stopping:
                return
            self._thread = threading.Thread(target=self._loop, name="resolver", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop scheduling; a look-up in flight ends on its own timeout, unheard."""
        with self._cond:
            self._stopping = True
            self._cond.notify()

    # -- the loop --------------------------------------------------------------------------

    def _loop(self) -> None:
        with self._cond:
            while not self._stopping:
                now = self._clock()
                for name, due in self._due.items():
                    if due <= now and name not in self._in_flight:
                        self._in_flight.add(name)
                        threading.Thread(
                            target=self._resolve, args=(name,), name=f"lookup-{name}", daemon=True
                        ).start()
                waiting = [d for n, d in self._due.items() if n not in self._in_flight]
                self._cond.wait(max(0.0, min(waiting) - now) if waiting else None)

    def _resolve(self, name: str) -> None:
        try:
            lookup = self._lookup(name)
        except Exception as e:  # a bug in the look-up must not silence the name for good
            log.exception("looking up %s failed", name)
            lookup = Lookup(None, None, error=f"internal error: {e}")
        with self._cond:
            self._in_flight.discard(name)
            previous = self._answers.get(name)
            if previous is None or self._stopping:  # no longer in the config
                return
            answer = settle(previous, lookup, self._wall())
            self._answers[name] = answer
            self._due[name] = self._clock() + refresh_in(answer, self._interval)
            self._cond.notify()
        _log_change(previous, answer)
        if answer.addresses != previous.addresses:
            self._on_change()


def _log_change(previous: Answer, answer: Answer) -> None:
    """One line per change of what is known of a name, none for the same answer again."""
    name = answer.name
    if answer.error:
        if answer.error != previous.error:
            kept = (
                f"keeping its last answer ({_show(answer)})"
                if answer.resolved
                else "it contributes no rule until it resolves"
            )
            log.warning("cannot resolve %s: %s; %s", name, answer.error, kept)
        return
    if answer.addresses != previous.addresses:
        log.info("%s resolves to %s", name, _show(answer))
    elif previous.error:
        log.info("%s resolves again, to the same addresses (%s)", name, _show(answer))


def _show(answer: Answer) -> str:
    return ", ".join(str(n.network_address) for n in answer.addresses) or "no address"
