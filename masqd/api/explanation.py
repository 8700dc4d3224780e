"""`masqd.core.explain.Explanation` as the API's message: the one conversion, shared by the
server (Explain) and masqctl's offline `config explain`, so both print the same fields."""

from __future__ import annotations

from typing import Any

from masqd.api import families
from masqd.api.v1 import control_pb2 as pb
from masqd.core.attribution import Decision
from masqd.core.explain import Explanation


def message(e: Explanation, backend: str, config: str) -> pb.Explanation:
    return pb.Explanation(
        family=families.VALUE[e.family],  # type: ignore[arg-type]
        destination=e.destination,
        source=e.source,
        **_decision(e.fate),
        masqd=pb.Decision(**_decision(e.masqd)),
        warnings=list(e.warnings),
        notes=list(e.notes),
        position=e.position,
        backend=backend,
        config=config,
    )


def _decision(d: Decision) -> dict[str, Any]:
    """A decision's fields, which Decision and Explanation (for the fate) share."""
    entry = d.entry
    return {
        "action": d.action,
        "decided_by": d.decided_by,
        "rule": d.rule,
        "owner": d.owner,
        "snat_to": d.snat_to,
        "entry": None
        if entry is None
        else pb.ConfigEntry(
            key=entry.key,
            index=entry.index,
            value=entry.value,
            file=entry.file,
            resolved=entry.resolved,
        ),
    }
