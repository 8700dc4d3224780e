"""Domain objects to API messages and back: the only place that knows both shapes (the family
numbers are masqd.api.families')."""

from __future__ import annotations

import time
from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from masqd import __version__
from masqd.api import families
from masqd.api.v1 import control_pb2 as pb
from masqd.core import nftlive
from masqd.core.desired import Desired
from masqd.core.errors import Kind, RequestError
from masqd.core.health import assess
from masqd.core.livestate import LiveChain, ReadOutcome
from masqd.core.merge import FileOutcome, FileState
from masqd.core.model import Event, EventKind, Family, Reason, SyncResult
from masqd.core.names import Answer
from masqd.core.nftrules import Table, table_block
from masqd.core.rules import jump_rule
from masqd.core.status import FamilyStatus, Fault, Status

FAMILY: dict[Family, Any] = families.VALUE
FAMILY_OF = families.OF_VALUE
REASON = {
    Reason.STARTUP: pb.SYNC_REASON_STARTUP,
    Reason.INTERVAL: pb.SYNC_REASON_INTERVAL,
    Reason.CONFIG_CHANGE: pb.SYNC_REASON_CONFIG_CHANGE,
    Reason.API: pb.SYNC_REASON_API,
    Reason.CNI: pb.SYNC_REASON_CNI,
    Reason.DRIFT_REPAIR: pb.SYNC_REASON_DRIFT_REPAIR,
    Reason.DNS_CHANGE: pb.SYNC_REASON_DNS_CHANGE,
}
FILE_STATE: dict[FileState, Any] = {s: pb.ConfigFile.State.Value(s.name) for s in FileState}
ERROR_KIND = {
    Kind.REJECTED: pb.ERROR_KIND_REJECTED,
    Kind.LOCK: pb.ERROR_KIND_LOCK,
    Kind.TIMEOUT: pb.ERROR_KIND_TIMEOUT,
    Kind.MISSING: pb.ERROR_KIND_MISSING,
    Kind.WORKER_GONE: pb.ERROR_KIND_WORKER_GONE,
    Kind.HUNG: pb.ERROR_KIND_HUNG,
    Kind.UNVERIFIED: pb.ERROR_KIND_UNVERIFIED,
    Kind.NO_CONFIG: pb.ERROR_KIND_NO_CONFIG,
}
EVENT_KIND: dict[EventKind, Any] = {kind: pb.Event.Kind.Value(kind.name) for kind in EventKind}


MAX_DURATION_SECONDS = 315_576_000_000
"""google.protobuf.Duration's range: about 10,000 years either way."""


def seconds_of(d: Duration, name: str) -> float:
    """A Duration's seconds, if it is one as protobuf defines it (seconds within the range,
    nanos within +-999,999,999 and of the seconds' sign); RequestError naming it otherwise."""
    if not -MAX_DURATION_SECONDS <= d.seconds <= MAX_DURATION_SECONDS:
        raise RequestError(
            f"{name}: {d.seconds} seconds is not a Duration (at most {MAX_DURATION_SECONDS})"
        )
    if not -999_999_999 <= d.nanos <= 999_999_999:
        raise RequestError(f"{name}: nanos {d.nanos} is not within -999999999..999999999")
    if (d.seconds > 0 and d.nanos < 0) or (d.seconds < 0 and d.nanos > 0):
        raise RequestError(f"{name}: seconds {d.seconds} and nanos {d.nanos} differ in sign")
    return (d.seconds * 1_000_000_000 + d.nanos) / 1e9


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
        error_kind=_error_kind(r.error_kind) if not r.ok else pb.ERROR_KIND_UNSPECIFIED,
    )


def _error_kind(kind: Kind | None) -> Any:
    return ERROR_KIND.get(kind, pb.ERROR_KIND_INTERNAL) if kind else pb.ERROR_KIND_INTERNAL


def status(s: Status, health_timeout: float, now: float | None = None) -> pb.Status:
    """The status message; each family's health judged against health_timeout at monotonic
    time `now` (default: now)."""
    now = time.monotonic() if now is None else now
    cfg = s.config
    config = pb.ConfigStatus(
        path=cfg.path,
        generation=cfg.generation,
        error=cfg.error,
        warnings=list(cfg.warnings),
        using_defaults=bool(cfg.loaded and cfg.loaded.using_defaults),
        directory=cfg.directory,
        files=[config_file(f) for f in cfg.files],
    )
    if cfg.loaded_at:
        config.loaded_at.CopyFrom(timestamp(cfg.loaded_at))
    if cfg.error_at:
        config.error_at.CopyFrom(timestamp(cfg.error_at))

    interval = pb.IntervalStatus(
        effective=duration(s.interval.effective),
        configured=duration(s.interval.configured),
        source=s.interval.source,
    )
    if s.interval.override is not None:
        interval.override_expires_at.CopyFrom(timestamp(s.interval.override.expires_at))
    return pb.Status(
        config=config,
        interval=interval,
        families=[family_status(f, s.mode, health_timeout, now) for f in s.families],
        version=__version__,
        chain=s.chain,
        names=[dns_name(a) for a in s.names],
        faults=[thread_fault(fault) for fault in s.faults],
        table=s.table,
        backend_choice=s.backend_choice,
    )


def thread_fault(f: Fault) -> pb.ThreadFault:
    return pb.ThreadFault(
        thread=f.thread, error=f.error, at=timestamp(f.at), count=f.count, ongoing=f.ongoing
    )


def config_file(f: FileOutcome) -> pb.ConfigFile:
    return pb.ConfigFile(name=f.name, state=FILE_STATE[f.state], error=f.error)


def dns_name(a: Answer, now: float | None = None) -> pb.DnsName:
    msg = pb.DnsName(
        name=a.name,
        addresses=[str(n) for n in a.addresses],
        resolved=a.resolved,
        error=a.error,
    )
    if a.answered_at is not None:
        msg.answered_at.CopyFrom(timestamp(a.answered_at))
        msg.age.CopyFrom(duration(max(0.0, (now or time.time()) - a.answered_at)))
    if a.ttl is not None:
        msg.ttl.CopyFrom(duration(a.ttl))
    if a.error_at is not None:
        msg.error_at.CopyFrom(timestamp(a.error_at))
    return msg


def family_status(f: FamilyStatus, mode: str, health_timeout: float, now: float) -> pb.FamilyStatus:
    verdict = assess(f, now, health_timeout)
    msg = pb.FamilyStatus(
        family=FAMILY[f.family],
        pid=f.pid,
        state=f.state,
        restarts=f.restarts,
        in_sync=f.in_sync,
        backend=mode,
        warnings=list(f.warnings),
        sync_counts=[
            pb.SyncCount(reason=REASON[reason], count=f.syncs.get(reason, 0)) for reason in Reason
        ],
        healthy=verdict.healthy,
        serving=verdict.serving,
        health=verdict.reason,
    )
    if f.last_result is not None:
        msg.last_sync.CopyFrom(sync_result(f.last_result))
    if f.trouble is not None:
        msg.trouble.CopyFrom(
            pb.Trouble(
                kind=_error_kind(f.trouble.kind),
                message=f.trouble.message,
                lasted=duration(max(0.0, now - f.trouble.since)),
                attempts=f.trouble.attempts,
            )
        )
    if f.fault is not None:
        msg.fault.CopyFrom(thread_fault(f.fault))
    if f.pending_since is not None:
        msg.pending.CopyFrom(duration(max(0.0, now - f.pending_since)))
    return msg


def family_rules(
    family: Family,
    chain: str,
    outcome: ReadOutcome,
    desired: Desired | None,
    origins: dict[str, str] | None = None,
    *,
    first: bool = False,
) -> pb.FamilyRules:
    """A family's live rules against the desired ones: our chain (iptables) or table."""
    if isinstance(desired, Table) or isinstance(outcome.live, nftlive.LiveTable):
        return _table_rules(family, outcome, desired if isinstance(desired, Table) else None)
    wanted = list(desired or ())
    msg = pb.FamilyRules(family=FAMILY[family], chain=chain, desired=wanted, error=outcome.error)
    live = outcome.live
    if isinstance(live, LiveChain):
        msg.chain_exists = live.chain_exists
        msg.jump_present = live.jump_in_place(jump_rule(chain), first)
        msg.in_sync = live.matches(wanted, jump_rule(chain), first)
        msg.live.extend(
            pb.LiveRule(
                spec=r.spec,
                packets=r.packets,
                bytes=r.bytes,
                target=r.target,
                destination=r.destination,
                comment=r.comment,
                origin=(origins or {}).get(r.spec, ""),
            )
            for r in live.rules
        )
    return msg


def _table_rules(family: Family, outcome: ReadOutcome, desired: Table | None) -> pb.FamilyRules:
    """Our table: each set element and rule with its counter, and what a sync would write."""
    live = outcome.live if isinstance(outcome.live, nftlive.LiveTable) else None
    named = desired or live
    msg = pb.FamilyRules(
        family=FAMILY[family], chain=named.name if named else "", error=outcome.error
    )
    table = pb.TableRules()
    if desired is not None:
        table.name, table.desired = desired.spec, table_block(desired)
    if live is not None:
        covers: dict[tuple[str, str], list[str]] = {}
        for set_name, entry, outer in desired.covered if desired is not None else ():
            covers.setdefault((set_name, outer), []).append(entry)
        table.exists, table.listing = live.exists, live.listing
        table.elements.extend(
            pb.SetElement(
                set=s.name,
                cidr=e.key,
                comment=e.comment,
                packets=e.packets,
                bytes=e.bytes,
                covers=covers.get((s.name, e.key), []),
            )
            for s in live.sets
            for e in s.elements
        )
        table.rules.extend(
            pb.TableRule(chain=c.name, rule=r.text, packets=r.packets, bytes=r.bytes)
            for c in live.chains
            for r in c.rules
        )
        if desired is not None:
            pending = nftlive.change(live, desired)
            table.pending = pending or ""
            msg.in_sync = pending is None
        msg.chain_exists = live.exists
    msg.table.CopyFrom(table)
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
