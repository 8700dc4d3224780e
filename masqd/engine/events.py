"""Fan-out of events to listeners (Watch streams, health, metrics).

Listeners are called on the publisher's thread and must return at once (e.g. hand the event to
an event loop with call_soon_threadsafe); a failing listener is dropped, never the publisher.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from masqd.core.model import Event

log = logging.getLogger("masqd.events")

Listener = Callable[[Event | None], None]
"""Called with each event, and with None once the bus closes."""


class EventBus:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Add a listener; returns the function that removes it."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def publish(self, event: Event | None) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(event)
            except Exception:
                log.exception("event listener failed; removing it")
                with self._lock:
                    if listener in self._listeners:
                        self._listeners.remove(listener)

    def close(self) -> None:
        self.publish(None)
        with self._lock:
            self._listeners.clear()
