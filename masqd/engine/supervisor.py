"""The supervisor: owns the config and the schedule, runs one FamilyRunner per family.

Threads, not asyncio: the gRPC server is thread-based, and every thread here spends its life
waiting on a condition. One loop watches the file and the interval; each family has its own
runner, so a stuck or crashing IPv6 worker never holds up IPv4.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass, field

from masqd.core.config import (
    MAX_RESYNC_INTERVAL,
    MIN_RESYNC_INTERVAL,
    ConfigError,
    LoadedConfig,
    ParseOptions,
    parse_config,
)
from masqd.core.model import Event, EventKind, Family, Reason
from masqd.core.rules import desired_rules
from masqd.core.settings import Settings
from masqd.engine.events import EventBus
from masqd.engine.runner import FamilyRunner, Launcher, fork_worker, spawn_worker
from masqd.engine.worker import ReadOutcome, WorkerOptions
from masqd.host import configfile, heap, iptables

log = logging.getLogger("masqd.engine.supervisor")

MAX_OVERRIDE_TTL = 24 * 3600.0


class RequestError(ValueError):
    """A request the supervisor refuses; the message says why (INVALID_ARGUMENT at the API)."""


@dataclass(frozen=True)
class ConfigState:
    """The config in force and what happened to the file on disk."""

    path: str
    loaded: LoadedConfig | None = None
    generation: int = 0
    loaded_at: float = 0.0
    error: str = ""
    error_at: float = 0.0


@dataclass(frozen=True)
class Override:
    interval: float
    expires_at: float  # wall clock


@dataclass
class _Schedule:
    next_interval_at: float = 0.0  # monotonic
    override: Override | None = None
    rejected_digest: str = ""
    applied_digest: str | None = None
    file_identity: configfile.FileIdentity | None = field(default=None)
    trimmed_after: int = 0  # syncs done when the heap was last trimmed


class Supervisor:
    """Loads the config, schedules syncs, and answers the control API."""

    def __init__(
        self, settings: Settings, mode: str | None = None, launcher: Launcher = spawn_worker
    ) -> None:
        self.settings = settings
        self.mode = mode or (
            iptables.detect_mode() if settings.iptables_mode == "auto" else settings.iptables_mode
        )
        self.events = EventBus()
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._config = ConfigState(settings.config_path)
        self._desired_cache: dict[Family, tuple[int, list[str]]] = {}
        self._schedule = _Schedule()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.runners = {
            family: FamilyRunner(
                WorkerOptions(
                    family=family,
                    mode=self.mode,
                    chain=settings.render.chain,
                    iptables_timeout=settings.iptables_timeout,
                    lock_wait=settings.lock_wait,
                    retry_deadline=settings.retry_deadline,
                ),
                desired=lambda f=family: self.desired(f),  # type: ignore[misc]
                events=self.events,
                drift_check_interval=settings.drift_check_interval,
                max_restart_backoff=settings.max_restart_backoff,
                launcher=launcher,
            )
            for family in settings.families
        }

    # -- lifecycle -------------------------------------------------------------------------

    def fork_workers(self) -> None:
        """Start the workers by forking, before gRPC is imported (see runner.fork_worker)."""
        for runner in self.runners.values():
            runner.start_worker(fork_worker)

    def start(self) -> None:
        log.info(
            "masqd starting: config %s, iptables mode %s, families %s, chain %s",
            self.settings.config_path,
            self.mode,
            ",".join(f.label for f in self.settings.families),
            self.settings.render.chain,
        )
        self._reload(Reason.STARTUP, force=True)
        for runner in self.runners.values():
            runner.start()
            runner.request(Reason.STARTUP)
        self._thread = threading.Thread(target=self._loop, name="config-loop", daemon=True)
        self._thread.start()

    def stop(self, grace: float = 2.0) -> None:
        """Stop everything within about grace seconds; the rules stay in the kernel."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        for runner in self.runners.values():
            runner.stop(grace)
        self.events.close()

    # -- the config and the schedule -------------------------------------------------------

    @property
    def config_state(self) -> ConfigState:
        return self._config

    def desired(self, family: Family) -> list[str] | None:
        """The rules our chain should hold, None while no good config was ever loaded."""
        state = self._config
        if state.loaded is None:
            return None
        cached = self._desired_cache.get(family)
        if cached is None or cached[0] != state.generation:
            rules = desired_rules(state.loaded.config, family, self.settings.render)
            cached = (state.generation, rules)
            self._desired_cache[family] = cached
        return cached[1]

    def interval(self) -> tuple[float, str, Override | None]:
        """The effective resync interval, where it comes from, and the override if any."""
        override = self._schedule.override
        if override is not None and override.expires_at > time.time():
            return override.interval, "override", override
        return self.configured_interval(), "config", None

    def configured_interval(self) -> float:
        """The config's resyncInterval (60s until a config was loaded)."""
        loaded = self._config.loaded
        return loaded.config.resync_interval if loaded else 60.0

    def _loop(self) -> None:
        sched = self._schedule
        sched.next_interval_at = time.monotonic() + self.interval()[0]
        while True:
            with self._wake:
                if self._stopping:
                    return
                wait = min(
                    self.settings.file_poll_interval, sched.next_interval_at - time.monotonic()
                )
                self._wake.wait(max(wait, 0.0))
                if self._stopping:
                    return
            self._expire_override()
            now = time.monotonic()
            if now >= sched.next_interval_at:
                self._reload(Reason.INTERVAL, force=True)
                self.request_sync(self.settings.families, Reason.INTERVAL)
                sched.next_interval_at = time.monotonic() + self.interval()[0]
            elif configfile.identity(self.settings.config_path) != sched.file_identity:
                self._reload(Reason.CONFIG_CHANGE)
            syncs = sum(sum(r.counts.values()) for r in self.runners.values())
            if syncs != sched.trimmed_after:  # after activity, not every tick of an idle loop
                heap.trim()
                sched.trimmed_after = syncs

    def reload(self) -> dict[Family, int]:
        """Read the file now, as a change to it would; returns the tickets of the syncs it
        requested (none when the config did not change or was rejected)."""
        return self._reload(Reason.CONFIG_CHANGE)

    def _reload(self, reason: Reason, *, force: bool = False) -> dict[Family, int]:
        """Read and parse the file; a good change is applied, a bad one is reported and kept out."""
        with self._reload_lock:
            return self._reload_locked(reason, force)

    def _reload_locked(self, reason: Reason, force: bool) -> dict[Family, int]:
        path = self.settings.config_path
        sched = self._schedule
        sched.file_identity = configfile.identity(path)
        try:
            data = configfile.read(path)
        except ConfigError as e:
            self._reject(str(e), f"unreadable: {e}")
            return {}
        digest = hashlib.sha256(data if data is not None else b"\0missing").hexdigest()
        if digest == sched.applied_digest and not force:
            return {}
        try:
            loaded = parse_config(
                data or b"",
                ParseOptions(self.settings.enable_ipv6, self.settings.all_reserved_ranges),
            )
        except ConfigError as e:
            self._reject(str(e), digest)
            return {}
        if data is None:
            log.debug("no config file at %s; using defaults", path)
        changed = self._config.loaded is None or loaded != self._config.loaded
        previous = {f: self.desired(f) for f in self.settings.families}
        with self._lock:
            self._config = ConfigState(
                path=path,
                loaded=loaded,
                generation=self._config.generation + (1 if changed else 0),
                loaded_at=time.time() if changed else self._config.loaded_at,
            )
        sched.applied_digest = digest
        sched.rejected_digest = ""
        if not changed:
            return {}
        for warning in loaded.warnings:
            log.warning("config %s: %s", path, warning)
        log.info(
            "config generation %d loaded from %s%s",
            self._config.generation,
            path,
            " (defaults)" if loaded.using_defaults else "",
        )
        # Rendered once here, not on the apply path; a family whose rules stay as they were
        # (say, only resyncInterval changed) has nothing to apply.
        affected = tuple(f for f in self.settings.families if self.desired(f) != previous[f])
        self._publish(EventKind.CONFIG_LOADED, f"generation {self._config.generation}")
        self._reschedule()
        if reason == Reason.STARTUP or not affected:
            return {}
        return self.request_sync(affected, Reason.CONFIG_CHANGE)

    def _reject(self, error: str, digest: str) -> None:
        sched = self._schedule
        with self._lock:
            self._config = ConfigState(
                path=self._config.path,
                loaded=self._config.loaded,
                generation=self._config.generation,
                loaded_at=self._config.loaded_at,
                error=error,
                error_at=time.time(),
            )
        sched.applied_digest = None  # a good file with the old content must be taken again
        if digest != sched.rejected_digest:  # once per distinct bad content
            sched.rejected_digest = digest
            kept = (
                "the last good config stays in force" if self._config.loaded else "no rules written"
            )
            log.error("config %s rejected: %s; %s", self.settings.config_path, error, kept)
            self._publish(EventKind.CONFIG_REJECTED, error)

    def _reschedule(self) -> None:
        """After the interval changed: the next interval sync comes no later than the new one."""
        sched = self._schedule
        sched.next_interval_at = min(
            sched.next_interval_at or float("inf"), time.monotonic() + self.interval()[0]
        )
        with self._wake:
            self._wake.notify_all()

    # -- what the API asks -----------------------------------------------------------------

    def request_sync(self, families: tuple[Family, ...], reason: Reason) -> dict[Family, int]:
        return {f: self.runners[f].request(reason) for f in families if f in self.runners}

    def read_live(self, family: Family) -> ReadOutcome:
        if family not in self.runners:
            raise RequestError(f"family {family.label} is not enabled (--enable-ipv6)")
        return self.runners[family].read_live()

    def set_override(self, interval: float, ttl: float) -> Override:
        if not MIN_RESYNC_INTERVAL <= interval <= MAX_RESYNC_INTERVAL:
            raise RequestError(f"interval {interval:g}s is out of bounds: it must be 1s to 24h")
        if not 0 < ttl <= MAX_OVERRIDE_TTL:
            raise RequestError(
                f"ttl {ttl:g}s is out of bounds: it must be more than 0 and up to 24h"
            )
        override = Override(interval, time.time() + ttl)
        self._schedule.override = override
        log.info("resync interval overridden to %gs for %gs", interval, ttl)
        self._publish(EventKind.OVERRIDE_SET, f"interval {interval:g}s for {ttl:g}s")
        self._schedule.next_interval_at = time.monotonic() + interval
        self._reschedule()
        return override

    def clear_override(self) -> None:
        if self._schedule.override is not None:
            self._schedule.override = None
            log.info("resync interval override cleared")
            self._publish(EventKind.OVERRIDE_CLEARED, "override cleared")
            self._reschedule()

    def _expire_override(self) -> None:
        override = self._schedule.override
        if override is not None and override.expires_at <= time.time():
            self._schedule.override = None
            log.info("resync interval override expired")
            self._publish(EventKind.OVERRIDE_EXPIRED, "override expired")
            self._schedule.next_interval_at = time.monotonic() + self.interval()[0]

    def _publish(self, kind: EventKind, message: str) -> None:
        self.events.publish(Event(kind, time.time(), message, None, None, self._config.generation))
