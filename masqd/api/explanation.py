"""`masqd.core.explain.Explanation` as the API's message: the one conversion, shared by the
server (Explain) and masqctl's offline `config explain`, so both print the same fields."""

from __future__ import annotations

from masqd.api import families
from masqd.api.v1 import control_pb2 as pb
from masqd.core.attribution import Decision, Entry
from masqd.core.explain import Explanation


def message(e: Explanation, backend: str, config: str) -> pb.Explanation:
    mine = decision(e.masqd)
    return pb.Explanation(
        family=families.VALUE[e.family],  # type: ignore[arg-type]
        destination=e.destination,
        source=e.source,
        action=e.action,
        decided_by=e.decided_by,
        rule=e.rule,
        owner=e.owner,
        snat_to=e.snat_to,
        entry=entry(e.entry),
        masqd=mine,
        warnings=list(e.warnings),
        notes=list(e.notes),
        position=e.position,
        backend=backend,
        config=config,
    )


def decision(d: Decision) -> pb.Decision:
    return pb.Decision(
        action=d.action,
        decided_by=d.decided_by,
        rule=d.rule,
        owner=d.owner,
        snat_to=d.snat_to,
        entry=entry(d.entry),
    )


def entry(e: Entry | None) -> pb.ConfigEntry | None:
    if e is None:
        return None
    return pb.ConfigEntry(key=e.key, index=e.index, value=e.value, file=e.file)
