"""Gathering bursts of Resync requests at the API edge, before they reach the supervisor.

The runners coalesce requests that arrive while a sync runs, but a no-op sync takes a few
milliseconds while a burst of hundreds of callers trickles in over half a second, so that alone
still costs dozens of syncs. Here a request that arrives while no other is in flight goes to the
supervisor at once (no added latency for the usual lone caller); requests arriving while others
are in flight are gathered and handed over together, at most once every `spacing` seconds.
Once a burst has been gathered, it goes on being gathered until `spacing` passes with no
hand-over: a burst reaches the server in waves, and between two waves nothing may be in flight.

Every caller still gets a sync that started after its request: tickets are issued when the
batch is handed over, which is after each of its requests arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field

from masqd.core.model import Family, Reason

Submit = Callable[[tuple[Family, ...], Reason], dict[Family, int]]
"""Hands requests to the supervisor; returns each family's ticket (Supervisor.request_sync)."""

# A burst of hundreds of requests trickles through Python gRPC over a few hundred ms; 0.2 s
# hands it over in two or three batches, and adds at most 0.2 s for a caller that arrived
# while others were waiting (a lone caller goes at once).
DEFAULT_SPACING = 0.2


@dataclass
class _Batch:
    tickets: asyncio.Future[dict[Family, int]]
    families: dict[Reason, set[Family]] = field(default_factory=dict)

    def add(self, families: Iterable[Family], reason: Reason) -> None:
        self.families.setdefault(reason, set()).update(families)


class ResyncBatcher:
    """Admits Resync requests on one event loop; see the module docstring."""

    def __init__(self, submit: Submit, spacing: float = DEFAULT_SPACING) -> None:
        self._submit = submit
        self._spacing = spacing
        self._in_flight = 0
        self._batch: _Batch | None = None
        self._last_submit = float("-inf")
        self._gathering_until = float("-inf")  # a burst is being gathered until then
        self.submissions = 0
        """How many times requests were handed to the supervisor (for tests and metrics)."""

    @contextlib.asynccontextmanager
    async def admitted(
        self, families: tuple[Family, ...], reason: Reason
    ) -> AsyncIterator[dict[Family, int]]:
        """The tickets to wait on; the request counts as in flight until the block ends."""
        tickets = await self._admit(families, reason)
        self._in_flight += 1
        try:
            yield tickets
        finally:
            self._in_flight -= 1

    async def _admit(self, families: tuple[Family, ...], reason: Reason) -> dict[Family, int]:
        loop = asyncio.get_running_loop()
        idle = self._in_flight == 0 and self._batch is None
        if idle and loop.time() >= self._gathering_until:
            self._last_submit = loop.time()
            self.submissions += 1
            return self._submit(families, reason)
        batch = self._batch
        if batch is None:
            batch = self._batch = _Batch(loop.create_future())
            delay = max(0.0, self._last_submit + self._spacing - loop.time())
            loop.call_later(delay, self._flush)
        batch.add(families, reason)
        # Shielded: a caller giving up must not cancel the batch for the others.
        tickets = await asyncio.shield(batch.tickets)
        return {f: tickets[f] for f in families if f in tickets}

    def _flush(self) -> None:
        batch, self._batch = self._batch, None
        if batch is None:
            return
        self._last_submit = asyncio.get_running_loop().time()
        self._gathering_until = self._last_submit + self._spacing
        self.submissions += 1
        tickets: dict[Family, int] = {}
        try:
            for reason, families in batch.families.items():
                for family, ticket in self._submit(tuple(sorted(families)), reason).items():
                    tickets[family] = max(tickets.get(family, 0), ticket)
        except Exception as e:
            batch.tickets.set_exception(e)
            return
        batch.tickets.set_result(tickets)
