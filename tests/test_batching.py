"""The Resync batcher at the API edge: lone callers go at once, bursts are gathered."""

from __future__ import annotations

import asyncio

from masqd.core.model import Family, Reason
from masqd.serve.batching import ResyncBatcher

SPACING = 0.2


class Supervisor:
    """Records when each hand-over happened; the n-th hand-over's ticket is n."""

    def __init__(self) -> None:
        self.at: list[float] = []

    def submit(self, families: tuple[Family, ...], reason: Reason) -> dict[Family, int]:
        self.at.append(asyncio.get_running_loop().time())
        return {f: len(self.at) for f in families}


async def _call(batcher: ResyncBatcher, hold: float, start: float = 0.0) -> tuple[float, int]:
    """One Resync: arrives after `start`, is in flight for `hold` (its sync); returns when it
    arrived and its ticket."""
    await asyncio.sleep(start)
    arrived = asyncio.get_running_loop().time()
    async with batcher.admitted((Family.IPV4,), Reason.API) as tickets:
        await asyncio.sleep(hold)
    return arrived, tickets[Family.IPV4]


def test_lone_callers_one_after_another_each_go_at_once() -> None:
    """A caller that finds nothing in flight and no burst being gathered waits for nobody."""

    async def scenario() -> None:
        sup = Supervisor()
        batcher = ResyncBatcher(sup.submit, spacing=SPACING)
        for n in range(1, 6):
            arrived, ticket = await _call(batcher, 0.01)
            assert ticket == n
            assert sup.at[-1] - arrived < SPACING / 4

    asyncio.run(scenario())


def test_a_burst_arriving_in_waves_is_gathered_until_it_goes_quiet() -> None:
    """A first, alone: at once. B, while A is in flight: gathered. C arrives after A and B were
    answered, still within the burst: gathered too, not sent at once. D, after a quiet
    spacing: at once again."""

    async def scenario() -> None:
        sup = Supervisor()
        batcher = ResyncBatcher(sup.submit, spacing=SPACING)
        a = asyncio.create_task(_call(batcher, 0.25))
        b = asyncio.create_task(_call(batcher, 0.01, start=0.05))
        c = asyncio.create_task(_call(batcher, 0.01, start=0.3))
        (_, ta), (_, tb), (c_arrived, tc) = await asyncio.gather(a, b, c)
        assert (ta, tb, tc) == (1, 2, 3)
        assert sup.at[2] - c_arrived > SPACING / 4  # C waited for the spacing
        assert sup.at[2] - sup.at[1] >= SPACING * 0.95
        await asyncio.sleep(SPACING * 1.5)
        d_arrived, td = await _call(batcher, 0.01)
        assert td == 4
        assert sup.at[3] - d_arrived < SPACING / 4

    asyncio.run(scenario())
