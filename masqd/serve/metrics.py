"""Prometheus metrics: counted from the supervisor's events, or read from its state when scraped.

Nothing here calls into the sync path. Event metrics (syncs, durations, config loads) are
updated by an EventBus listener on the publisher's thread, which only bumps a counter. State
metrics (rules, in-sync, restarts, requests, interval) come from the supervisor's status
snapshot at scrape time, and the live per-rule counters from one `iptables-save -c` per family
(nftables: one `nft list table`, whose set elements count each CIDR), cached for a second so
that concurrent scrapes do not multiply them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import threading
import time
from collections.abc import Iterable, Iterator

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from masqd.core import nftlive
from masqd.core.desired import Live, size
from masqd.core.errors import Kind, MasqdError
from masqd.core.health import assess
from masqd.core.merge import FileOutcome, FileState
from masqd.core.model import Event, EventKind, Family, Reason
from masqd.core.names import Answer
from masqd.engine.supervisor import Supervisor

LIVE_CACHE_SECONDS = 1.0
"""Scrapes within this long of a read reuse its counters."""
LIVE_READ_TIMEOUT = 2.0
"""How long a scrape waits for a worker busy with a sync before leaving its counters out."""
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
RESULTS = ("changed", "unchanged", "failed")
FAILURE_KINDS = (
    Kind.REJECTED,
    Kind.LOCK,
    Kind.TIMEOUT,
    Kind.MISSING,
    Kind.WORKER_GONE,
    Kind.HUNG,
    Kind.UNVERIFIED,
    Kind.INTERNAL,
)


def source(reason: Reason) -> str:
    """The `source` label of a resync request: the reason, with drift repairs as "drift"."""
    return "drift" if reason == Reason.DRIFT_REPAIR else reason.value


class Metrics:
    """masqd's registry: event counters plus a collector of the supervisor's state."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.sup = supervisor
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series
        self.registry = CollectorRegistry()
        for standard in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(standard)
        families = [f.label for f in supervisor.settings.families]
        self.syncs = Counter(
            "masqd_syncs",
            "Syncs of a family's chain, by why they ran and what they did "
            "(changed, unchanged, failed). Drift checks that found nothing are not counted.",
            ["family", "reason", "result"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "masqd_sync_duration_seconds",
            "Time a sync took on the worker, retries included.",
            ["family"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.last_success = Gauge(
            "masqd_last_successful_sync_timestamp_seconds",
            "Unix time the last successful sync of the family finished (0: none yet).",
            ["family"],
            registry=self.registry,
        )
        self.failures = Counter(
            "masqd_sync_failures",
            "Syncs that failed, by the kind of failure (hung: the worker did not answer and "
            "was replaced; unverified: a write exited 0 but did not take; rejected, lock, "
            "timeout, missing, worker_gone, internal).",
            ["family", "kind"],
            registry=self.registry,
        )
        self.config_loads = Counter(
            "masqd_config_loads",
            "Config files taken (success: a new config is in force) or rejected (failure: "
            "counted once per distinct bad content, the last good config stays in force).",
            ["result"],
            registry=self.registry,
        )
        for family in families:
            self.duration.labels(family)
            self.last_success.labels(family)
            for reason in Reason:
                for result in RESULTS:
                    self.syncs.labels(family, reason.value, result)
            for kind in FAILURE_KINDS:
                self.failures.labels(family, kind.value)
        for result in ("success", "failure"):
            self.config_loads.labels(result)
        self.registry.register(StateCollector(supervisor))
        self._unsubscribe = supervisor.events.subscribe(self._on_event)

    def _on_event(self, event: Event | None) -> None:
        if event is None:
            return
        if event.kind == EventKind.CONFIG_LOADED:
            self.config_loads.labels("success").inc()
        elif event.kind == EventKind.CONFIG_REJECTED:
            self.config_loads.labels("failure").inc()
        elif event.result is not None:
            r = event.result
            result = "failed" if not r.ok else "changed" if r.changed else "unchanged"
            self.syncs.labels(r.family.label, r.reason.value, result).inc()
            if not r.ok:
                kind = r.error_kind.value if r.error_kind is not None else "internal"
                self.failures.labels(r.family.label, kind).inc()
            self.duration.labels(r.family.label).observe(r.duration)
            if r.ok:
                self.last_success.labels(r.family.label).set(r.finished_at)

    def close(self) -> None:
        self._unsubscribe()


class StateCollector:
    """Metrics read from the supervisor at scrape time."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.sup = supervisor
        self.live = LiveCounters(supervisor)

    def collect(self) -> Iterator[Metric]:
        status = self.sup.status()
        config = status.config
        yield _gauge(
            "masqd_config_generation", "Generation of the config in force.", config.generation
        )
        yield _gauge(
            "masqd_config_rejected",
            "1 while the file on disk is rejected (the last good config stays in force).",
            1 if config.error else 0,
        )
        yield _gauge(
            "masqd_resync_interval_seconds", "Effective resync interval.", status.interval.effective
        )
        yield _gauge(
            "masqd_resync_interval_override",
            "1 while a temporary resync interval override is in force.",
            1 if status.interval.override is not None else 0,
        )

        rules = GaugeMetricFamily(
            "masqd_rules",
            "Rules our chain should hold (desired); nftables: rules and set elements.",
            labels=["family"],
        )
        in_sync = GaugeMetricFamily(
            "masqd_in_sync",
            "1 when the live chain was verified to hold the desired rules.",
            labels=["family"],
        )
        pending = GaugeMetricFamily(
            "masqd_sync_pending_seconds",
            "Age of the oldest sync request not yet applied (0: none); /healthz fails past "
            "--health-timeout.",
            labels=["family"],
        )
        healthy = GaugeMetricFamily(
            "masqd_healthy",
            "1 when the family is healthy (what /healthz says for it).",
            labels=["family"],
        )
        trouble = GaugeMetricFamily(
            "masqd_trouble",
            "1 for the kind of trouble that keeps the family from being in sync now (none: "
            "no series).",
            labels=["family", "kind"],
        )
        restarts = CounterMetricFamily(
            "masqd_worker_restarts",
            "Times the family's worker process was restarted.",
            labels=["family"],
        )
        requests = CounterMetricFamily(
            "masqd_resync_requests",
            "Sync requests queued for the family, by source: api, cni, interval, "
            "config_change, dns_change (a DNS name of the config resolves to other addresses), "
            "startup, and drift (our chain found changed by someone else).",
            labels=["family", "source"],
        )
        now = time.monotonic()
        for f in status.families:
            label = f.family.label
            desired = self.sup.desired(f.family)
            rules.add_metric([label], size(desired) if desired is not None else 0)
            in_sync.add_metric([label], 1 if f.in_sync else 0)
            verdict = assess(f, now, self.sup.settings.health_timeout)
            healthy.add_metric([label], 1 if verdict.healthy else 0)
            if f.trouble is not None:
                trouble.add_metric([label, f.trouble.kind.value], 1)
            since = f.pending_since
            pending.add_metric([label], 0.0 if since is None else max(0.0, now - since))
            restarts.add_metric([label], f.restarts)
            for reason in Reason:
                count = (
                    f.syncs.get(reason, 0)
                    if reason == Reason.DRIFT_REPAIR
                    else f.requests.get(reason, 0)
                )
                requests.add_metric([label, source(reason)], count)
        yield from (rules, in_sync, healthy, trouble, pending, restarts, requests)
        yield from _config_files(status.config.files)
        yield from _names(status.names, time.time())
        yield from self.live.collect()


class LiveCounters:
    """Per-rule packet and byte counters of our live chains, read at most once a second."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.sup = supervisor
        self._lock = threading.Lock()
        self._read_at = -LIVE_CACHE_SECONDS
        self._chains: dict[Family, Live] = {}

    def chains(self) -> dict[Family, Live]:
        with self._lock:
            if time.monotonic() - self._read_at >= LIVE_CACHE_SECONDS:
                chains = {}
                reads = {f: self.sup.read_live(f) for f in self.sup.settings.families}
                for family, read in reads.items():
                    with contextlib.suppress(TimeoutError, MasqdError):
                        live = read.result(LIVE_READ_TIMEOUT).live
                        if live is not None:
                            chains[family] = live
                self._chains = chains
                self._read_at = time.monotonic()
            return self._chains

    def collect(self) -> Iterable[Metric]:
        packets = CounterMetricFamily(
            "masqd_rule_packets",
            "Packets that matched a rule of our live chain, or (nftables) an element of our "
            "sets (rules with the same target and destination are summed; cidr 0.0.0.0/0 or "
            "::/0 is the catch-all).",
            labels=["family", "target", "cidr"],
        )
        nbytes = CounterMetricFamily(
            "masqd_rule_bytes",
            "Bytes that matched a rule of our live chain (labelled as masqd_rule_packets).",
            labels=["family", "target", "cidr"],
        )
        for family, live in self.chains().items():
            totals: dict[tuple[str, str], tuple[int, int]] = {}
            for target, destination, packets_, bytes_ in _counters(live):
                key = (target, _cidr(destination, family))
                p, b = totals.get(key, (0, 0))
                totals[key] = (p + packets_, b + bytes_)
            for (target, cidr), (p, b) in totals.items():
                packets.add_metric([family.label, target, cidr], p)
                nbytes.add_metric([family.label, target, cidr], b)
        return (packets, nbytes)


def _counters(live: Live) -> Iterator[tuple[str, str, int, int]]:
    """(target, destination, packets, bytes) of each rule of our chain, or of each set
    element and counted rule of our table."""
    if isinstance(live, nftlive.LiveTable):
        for c in nftlive.counted(live):
            yield c.target, c.destination, c.packets, c.bytes
        return
    for rule in live.rules:
        yield rule.target, rule.destination, rule.packets, rule.bytes


def _config_files(files: Iterable[FileOutcome]) -> Iterator[Metric]:
    state = GaugeMetricFamily(
        "masqd_config_file_state",
        "--config-dir: 1 for each file's state (applied; kept: refused, its last good content "
        "in force; ignored: refused, contributes nothing).",
        labels=["file", "state"],
    )
    for f in files:
        for s in FileState:
            state.add_metric([f.name, s.value], 1 if f.state == s else 0)
    yield state


def _names(answers: Iterable[Answer], now: float) -> Iterator[Metric]:
    resolved = GaugeMetricFamily(
        "masqd_dns_name_resolved",
        "1 when the DNS name has an answer in force (0: never resolved, it renders no rule).",
        labels=["name"],
    )
    addresses = GaugeMetricFamily(
        "masqd_dns_name_addresses",
        "Addresses (A and AAAA) of the answer in force for the name.",
        labels=["name"],
    )
    age = GaugeMetricFamily(
        "masqd_dns_answer_age_seconds",
        "Age of the answer in force for the name (only names that resolved).",
        labels=["name"],
    )
    failing = GaugeMetricFamily(
        "masqd_dns_lookup_failing",
        "1 while the name's last look-up failed (its last good answer, if any, stays in force).",
        labels=["name"],
    )
    for a in answers:
        resolved.add_metric([a.name], 1 if a.resolved else 0)
        addresses.add_metric([a.name], len(a.addresses))
        failing.add_metric([a.name], 1 if a.error else 0)
        if a.answered_at is not None:
            age.add_metric([a.name], max(0.0, now - a.answered_at))
    yield from (resolved, addresses, age, failing)


def _cidr(destination: str, family: Family) -> str:
    if not destination:
        return "0.0.0.0/0" if family == Family.IPV4 else "::/0"
    try:
        return str(ipaddress.ip_network(destination, strict=False))
    except ValueError:
        return destination


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)
