"""Domain objects to API messages. The only place that knows both shapes."""

from __future__ import annotations

import time
from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from masqd import __version__
from masqd.api.v1 import control_pb2 as pb
from masqd.core.model import Event, EventKind, Family, Reason, SyncResult
from masqd.core.rules import jump_rule
from masqd.engine.supervisor import Supervisor
from masqd.engine.worker import ReadOutcome

FAMILY = {Family.IPV4: pb.FAMILY_IPV4, Family.IPV6: pb.FAMILY_IPV6}
REASON = {
    Reason.STARTUP: pb.SYNC_REASON_STARTUP,
    Reason.INTERVAL: pb.SYNC_REASON_INTERVAL,
    Reason.CONFIG_CHANGE: pb.SYNC_REASON_CONFIG_CHANGE,
    Reason.API: pb.SYNC_REASON_API,
    Reason.CNI: pb.SYNC_REASON_CNI,
    Reason.DRIFT_REPAIR: pb.SYNC_REASON_DRIFT_REPAIR,
}
EVENT_KIND: dict[EventKind, Any] = {kind: pb.Event.Kind.Value(kind.name) for kind in EventKind}


def duration(seconds: float) -> Duration:
    d = Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def timestamp(wall: float) -> Timestamp:
    t = Timestamp()
    t.FromNanoseconds(round(wall * 1e9))
    return t


def sync_result(r: SyncResult) -> pb.SyncResult:
    return pb.SyncResult(
        family=FAMILY[r.family],
        ok=r.ok,
        error=r.error,
        changed=r.changed,
        duration=duration(r.duration),
        finished_at=timestamp(r.finished_at),
        reason=REASON[r.reason],
    )


def status(sup: Supervisor) -> pb.Status:
    cfg = sup.config_state
    config = pb.ConfigStatus(
        path=cfg.path,
        generation=cfg.generation,
        error=cfg.error,
        warnings=list(cfg.loaded.warnings) if cfg.loaded else [],
        using_defaults=bool(cfg.loaded and cfg.loaded.using_defaults),
    )
    if cfg.loaded_at:
        config.loaded_at.CopyFrom(timestamp(cfg.loaded_at))
    if cfg.error_at:
        config.error_at.CopyFrom(timestamp(cfg.error_at))

    effective, source, override = sup.interval()
    interval = pb.IntervalStatus(
        effective=duration(effective),
        configured=duration(sup.configured_interval()),
        source=source,
    )
    if override is not None:
        interval.override_expires_at.CopyFrom(timestamp(override.expires_at))

    families = []
    for family, runner in sup.runners.items():
        fs = pb.FamilyStatus(
            family=FAMILY[family],
            pid=runner.pid,
            state=runner.state,
            restarts=runner.restarts,
            in_sync=runner.in_sync,
            backend=sup.mode,
            sync_counts=[
                pb.SyncCount(reason=REASON[reason], count=runner.counts[reason])
                for reason in Reason
            ],
        )
        if runner.last_result is not None:
            fs.last_sync.CopyFrom(sync_result(runner.last_result))
        families.append(fs)
    return pb.Status(
        config=config,
        interval=interval,
        families=families,
        version=__version__,
        chain=sup.settings.render.chain,
    )


def family_rules(
    family: Family, chain: str, outcome: ReadOutcome, desired: list[str]
) -> pb.FamilyRules:
    msg = pb.FamilyRules(family=FAMILY[family], chain=chain, desired=desired, error=outcome.error)
    live = outcome.live
    if live is not None:
        msg.chain_exists = live.chain_exists
        msg.jump_present = jump_rule(chain) in live.jump_rules
        msg.in_sync = live.matches(desired, jump_rule(chain))
        msg.live.extend(
            pb.LiveRule(
                spec=r.spec,
                packets=r.packets,
                bytes=r.bytes,
                target=r.target,
                destination=r.destination,
                comment=r.comment,
            )
            for r in live.rules
        )
    return msg


def event(e: Event) -> pb.Event:
    msg = pb.Event(
        kind=EVENT_KIND[e.kind],
        time=timestamp(e.time or time.time()),
        family=FAMILY[e.family] if e.family else pb.FAMILY_UNSPECIFIED,
        message=e.message,
        config_generation=e.config_generation,
    )
    if e.result is not None:
        msg.result.CopyFrom(sync_result(e.result))
    return msg
