"""The supervisor: owns the config and the schedule, and runs one FamilyRunner per family.

Threads, not asyncio: one config loop watches the file (or directory) and the schedule; each
family has a runner of its own, so a stuck or crashing IPv6 worker never holds up IPv4; the
resolver keeps the config's DNS names resolved on threads of its own. The config loop and the
runners are guarded (`guard`): an exception in one is logged and shown in status, and the loop
goes on. What the API needs is here and nothing deeper: `resync` returns futures, `status` a
frozen snapshot.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import select
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future

from masqd.core import choice
from masqd.core.config import LoadedConfig, ParseOptions
from masqd.core.desired import Desired
from masqd.core.entries import HostName, IPNetwork
from masqd.core.errors import RequestError
from masqd.core.explain import Explanation, unheld
from masqd.core.livestate import ReadOutcome
from masqd.core.merge import FileOutcome
from masqd.core.model import NFTABLES, Event, EventKind, Family, Reason, SyncResult
from masqd.core.names import Answer, expand, expansion
from masqd.core.natpath import Packet, PathOutcome
from masqd.core.nftrules import Table, desired_table
from masqd.core.origins import rule_origins
from masqd.core.rules import desired_rules
from masqd.core.settings import Settings
from masqd.core.status import ConfigState, Override, Status
from masqd.engine import explainer
from masqd.engine.configwatch import PREFIX, ConfigWatcher, DirectoryWatcher, Loaded, Rejected
from masqd.engine.events import EventBus
from masqd.engine.guard import Guard
from masqd.engine.process import Backoff, Launcher, fork_worker, spawn_worker
from masqd.engine.resolver import Resolver
from masqd.engine.runner import FamilyRunner
from masqd.engine.schedule import Schedule
from masqd.engine.worker import WorkerOptions
from masqd.host import heap, iptables, nodefacts
from masqd.host.filewatch import FileWatch
from masqd.host.probe import addresses

log = logging.getLogger("masqd.supervisor")

FILE_SETTLE = 0.05
"""Seconds the config file must be quiet after an inotify event before it is read."""
SAFETY_POLL = 10.0
"""Seconds between looks at the config file's identity while inotify watches it: for what
inotify cannot see (without inotify, Settings.file_poll_interval applies)."""


class Supervisor:
    """Loads the config, schedules syncs, and answers what the control API asks."""

    def __init__(
        self, settings: Settings, mode: str | None = None, launcher: Launcher = spawn_worker
    ) -> None:
        self.settings = settings
        if mode is not None:
            backend = NFTABLES if mode == NFTABLES else choice.IPTABLES
            self.choice = choice.Choice(backend, f"given: {mode}")
        else:
            self.choice = choose(settings)
        self.mode = mode or _mode(settings, self.choice)
        self.events = EventBus()
        self.schedule = Schedule()
        options = ParseOptions(settings.enable_ipv6, settings.all_reserved_ranges)
        self._watcher: ConfigWatcher | DirectoryWatcher = (
            DirectoryWatcher(settings.config_dir, options)
            if settings.config_dir
            else ConfigWatcher(settings.config_path, options)
        )
        self.resolver = Resolver(self._names_changed)
        self._lock = threading.Lock()  # the config in force and its rules, swapped together
        self._load_lock = threading.Lock()  # one load at a time (the loop, or reload())
        self._config = ConfigState(settings.config_source, directory=bool(settings.config_dir))
        self._desired: dict[Family, Desired] = {}
        self._node_warnings: dict[Family, tuple[str, ...]] = {}
        self._wake_fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._stopped = threading.Event()
        self._guard = Guard("the config loop", self._stopped)
        self._next_look = 0.0  # the loop's own: when it next looks at the file
        self._thread: threading.Thread | None = None
        self._syncs_at_trim = 0
        backoff = Backoff(maximum=settings.max_restart_backoff)
        self.runners = {
            family: FamilyRunner(
                WorkerOptions(
                    family=family,
                    mode=self.mode,
                    chain=settings.render.chain,
                    iptables_timeout=settings.iptables_timeout,
                    lock_wait=settings.lock_wait,
                    retry_deadline=settings.retry_deadline,
                    table=settings.render.table,
                    jump_first=settings.render.first,
                ),
                desired=lambda f=family: self.desired(f),  # type: ignore[misc]
                events=self.events,
                drift_check_interval=settings.drift_check_interval,
                backoff=backoff,
                launcher=launcher,
                refused=self.choice.refused,
            )
            for family in settings.families
        }

    # -- lifecycle -------------------------------------------------------------------------

    def fork_workers(self) -> None:
        """Start the workers by forking, while this process has no threads and no gRPC."""
        for runner in self.runners.values():
            runner.start_worker(fork_worker)

    def start(self) -> None:
        log.info(
            "masqd starting: config %s, backend %s (%s), families %s, %s",
            self.settings.config_source,
            self.mode,
            self.choice.why,
            ",".join(f.label for f in self.settings.families),
            f"table {self.settings.render.table}"
            if self.mode == NFTABLES
            else f"chain {self.settings.render.chain}",
        )
        if self.choice.refused:
            log.error("no rules are written: %s", self.choice.refused)
        self._load(Reason.STARTUP)
        for runner in self.runners.values():
            runner.start()
        self.resync(self.settings.families, Reason.STARTUP)
        self._thread = threading.Thread(target=self._loop, name="config-loop", daemon=True)
        self._thread.start()

    def stop(self, grace: float = 2.0) -> None:
        """Stop everything within about grace seconds; the rules stay in the kernel. Stopping
        twice is stopping once."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._wake()
        self.resolver.stop()
        for runner in self.runners.values():
            runner.stop(grace)
        self.events.close()
        if self._thread is not None:
            self._thread.join(grace)
        if self._thread is None or not self._thread.is_alive():
            os.close(self._wake_fd)

    # -- what the API asks -----------------------------------------------------------------

    def status(self) -> Status:
        with self._lock:
            config, node = self._config, dict(self._node_warnings)
        fault = self._guard.fault()
        families = tuple(
            dataclasses.replace(r.status(), warnings=node.get(f, ()))
            for f, r in self.runners.items()
        )
        answers = self.resolver.answers()
        return Status(
            config=config,
            interval=self.schedule.interval(),
            families=families,
            mode=self.mode,
            chain=self.settings.render.chain,
            names=tuple(answers[n] for n in sorted(answers)),
            faults=(fault,) if fault is not None else (),
            table=self.settings.render.table if self.mode == NFTABLES else "",
            backend_choice=self.choice.why,
        )

    @property
    def config_state(self) -> ConfigState:
        with self._lock:
            return self._config

    def desired(self, family: Family) -> Desired | None:
        """The rules our chain (nftables: our table) should hold, None while no good config
        was ever loaded."""
        with self._lock:
            return self._desired.get(family)

    def rule_origins(self, family: Family) -> dict[str, str]:
        """Which config entry (and file) each desired rule of the family comes from."""
        with self._lock:
            loaded = self._config.loaded
        if loaded is None:
            return {}
        return rule_origins(loaded, self.resolver.answers(), family, self.settings.render)

    def resync(
        self, families: tuple[Family, ...], reason: Reason
    ) -> dict[Family, Future[SyncResult]]:
        """Ask for a sync of each family; each future holds the result of a sync that started
        after this call (or the error that kept it from running)."""
        return {f: self.runners[f].queue.sync(reason) for f in families if f in self.runners}

    def read_live(self, family: Family) -> Future[ReadOutcome]:
        """The live chain with counters, read by the family's worker between syncs."""
        return self._runner(family).read_live()

    def explain(self, packet: Packet) -> Future[Explanation]:
        """What the kernel does now with a new connection like packet, and why: every owner's
        nat chains read by the family's worker, judged with the config in force."""
        family = Family(packet.destination.version)
        read = self._runner(family).read_path()
        judged: Future[Explanation] = Future()

        def judge(done: Future[PathOutcome]) -> None:
            try:
                judged.set_result(
                    explainer.answer(
                        done.result(),
                        packet,
                        settings=self.settings,
                        mode=self.mode,
                        config=self.config_state,
                        family=self.runners[family].status(),
                        answers=self.resolver.answers(),
                    )
                )
            except BaseException as e:  # the caller hears it, whatever it is
                judged.set_exception(e)

        read.add_done_callback(judge)
        return judged

    def _runner(self, family: Family) -> FamilyRunner:
        if family not in self.runners:
            raise RequestError(f"family {family.label} is not enabled (--enable-ipv6)")
        return self.runners[family]

    def reload(self) -> dict[Family, Future[SyncResult]]:
        """Read the file now, as a change to it would; returns the syncs it asked for (none when
        the config did not change or was rejected)."""
        return self._load(Reason.CONFIG_CHANGE)

    def set_override(self, interval: float, ttl: float) -> Override:
        """RequestError when either is out of bounds."""
        override = self.schedule.set_override(interval, ttl)
        log.info("resync interval overridden to %gs for %gs", interval, ttl)
        self._publish(EventKind.OVERRIDE_SET, f"interval {interval:g}s for {ttl:g}s")
        self._wake()
        return override

    def clear_override(self) -> None:
        if self.schedule.clear_override():
            log.info("resync interval override cleared")
            self._publish(EventKind.OVERRIDE_CLEARED, "override cleared")
            self._wake()

    # -- the config loop -------------------------------------------------------------------

    def _loop(self) -> None:
        """Wait for the schedule, the file (inotify, and a look every `poll` seconds for what
        it cannot see), or a wake-up (a new override, stop); each turn guarded."""
        # A config directory is watched as the directory of a file in it: its files' writes,
        # renames and the kubelet's ..data swap are all events there.
        watch = FileWatch(
            os.path.join(self.settings.config_dir, PREFIX)
            if self.settings.config_dir
            else self.settings.config_path
        )
        poll = SAFETY_POLL if watch.active else self.settings.file_poll_interval
        self._next_look = time.monotonic() + poll
        try:
            self._guard.run(lambda: self._tick(watch, poll))
        finally:
            watch.close()

    def _tick(self, watch: FileWatch, poll: float) -> None:
        """One turn of the config loop: wait, then do what is due."""
        waits = [self._wake_fd] + ([watch.fileno()] if watch.active else [])
        timeout = min(max(0.0, self._next_look - time.monotonic()), self.schedule.seconds_left())
        ready, _, _ = select.select(waits, [], [], timeout)
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._wake_fd)
        if self._stopped.is_set():
            return
        if watch.active and watch.fileno() in ready:
            watch.drain()
            # A file being written in place is an event per write: look once the writes have
            # stopped for a moment, never at half a file.
            self._next_look = time.monotonic() + FILE_SETTLE
        if self.schedule.expire() is not None:
            log.info("resync interval override expired")
            self._publish(EventKind.OVERRIDE_EXPIRED, "override expired")
        if self.schedule.due():
            self.schedule.ran()  # first: a load that fails must not make every turn due
            self._load(Reason.INTERVAL)
            self.resync(self.settings.families, Reason.INTERVAL)
            self._check_node()
        elif time.monotonic() >= self._next_look:
            self._next_look = time.monotonic() + poll  # first: a failing look waits its turn
            watch.rearm()  # the symlinks may point elsewhere now
            if self._watcher.changed():
                self._load(Reason.CONFIG_CHANGE)
        self._trim_after_activity()

    def _trim_after_activity(self) -> None:
        """Hand freed heap back after syncs ran, not on every tick of an idle loop."""
        syncs = sum(r.syncs_run for r in self.runners.values())
        if syncs != self._syncs_at_trim:
            heap.trim()
            self._syncs_at_trim = syncs

    def _load(self, reason: Reason) -> dict[Family, Future[SyncResult]]:
        """Read the file; a good change is put in force, a bad one reported and kept out."""
        with self._load_lock:
            outcome = self._watcher.load()
            if isinstance(outcome, Rejected):
                self._reject(outcome)
            elif isinstance(outcome, Loaded):
                return self._take(outcome, reason)
            return {}

    def _take(self, outcome: Loaded, reason: Reason) -> dict[Family, Future[SyncResult]]:
        loaded = outcome.loaded
        with self._lock:
            old = self._config
            changed = old.loaded is None or loaded != old.loaded
            previous = self._desired
            if changed:
                # Rendered once here, not on the apply path.
                self._desired = self._render_all(loaded)
            error = _refusals(outcome.files)
            rendering = tuple(
                w for d in self._desired.values() if isinstance(d, Table) for w in d.warnings
            )
            self._config = ConfigState(
                path=old.path,
                loaded=loaded,
                generation=old.generation + (1 if changed else 0),
                loaded_at=time.time() if changed else old.loaded_at,
                error=error,
                error_at=(old.error_at if error == old.error else time.time()) if error else 0.0,
                directory=old.directory,
                files=outcome.files,
                rendering_warnings=rendering,
            )
            generation = self._config.generation
            desired = self._desired
        source = self.settings.config_source
        self._report_refused(outcome.refused, kept=True)
        if outcome.missing:
            log.debug("no config at %s; using defaults", source)
        if not changed:
            return {}
        self._check_node()
        self.resolver.track(loaded.config.names(), loaded.config.resync_interval)
        for warning in loaded.warnings + self._config.rendering_warnings:
            log.warning("config %s: %s", source, warning)
        log.info(
            "config generation %d loaded from %s%s",
            generation,
            source,
            " (defaults)" if loaded.using_defaults else "",
        )
        self.schedule.configure(loaded.config.resync_interval)
        self._wake()
        self._publish(EventKind.CONFIG_LOADED, f"generation {generation}")
        # A family whose rules stay as they were (say, only resyncInterval changed) has
        # nothing to apply.
        affected = tuple(f for f in self.settings.families if desired[f] != previous.get(f))
        if reason == Reason.STARTUP or not affected:
            return {}
        return self.resync(affected, Reason.CONFIG_CHANGE)

    def _check_node(self) -> None:
        """What the node holds against what the config asks: an snatToSource address it does
        not hold is a warning (it may be added later), looked at each load and interval."""
        loaded = self.config_state.loaded
        found: dict[Family, tuple[str, ...]] = {}
        for family in self.settings.families:
            if loaded is None or loaded.config.snat_to(family) is None:
                continue
            try:
                found[family] = unheld(loaded.config, family, addresses.local(family))
            except OSError as e:
                found[family] = (f"the node's addresses could not be read: {e}",)
            for warning in found[family]:
                log.warning("%s: %s", family.label, warning)
        with self._lock:
            self._node_warnings = found

    def _render_all(self, loaded: LoadedConfig) -> dict[Family, Desired]:
        """Each family's rules (nftables: table), with the DNS names as they resolve now (the
        caller holds the lock, so a config and an answer arriving together render in one
        order)."""
        answers = self.resolver.answers()
        config = expand(loaded.config, answers)
        opts = self.settings.render
        if self.mode == NFTABLES:
            names = _names(loaded, answers)
            return {f: desired_table(config, f, opts, names) for f in self.settings.families}
        return {f: tuple(desired_rules(config, f, opts)) for f in self.settings.families}

    def _names_changed(self) -> None:
        """A name resolves to other addresses: sync the families whose rules moved."""
        with self._lock:
            loaded = self._config.loaded
            if loaded is None or self._stopped.is_set():
                return
            previous = self._desired
            self._desired = desired = self._render_all(loaded)
        affected = tuple(f for f in self.settings.families if desired[f] != previous.get(f))
        if affected:
            self.resync(affected, Reason.DNS_CHANGE)

    def _reject(self, outcome: Rejected) -> None:
        kept = self.config_state.loaded is not None  # loads run one at a time
        # Logged before status shows it: whoever sees the error there finds it in the log.
        if outcome.refused:
            self._log_refused(outcome.refused, kept=kept)
        elif outcome.new:  # once per distinct bad content
            log.error(
                "config %s rejected: %s; %s",
                self.settings.config_source,
                outcome.error,
                "the last good config stays in force" if kept else "no rules written",
            )
        with self._lock:
            self._config = dataclasses.replace(
                self._config,
                error=outcome.error,
                error_at=time.time(),
                files=outcome.files or self._config.files,
            )
        for file in outcome.refused:
            self._publish(EventKind.CONFIG_REJECTED, f"{file.name}: {file.error}")
        if not outcome.refused and outcome.new:
            self._publish(EventKind.CONFIG_REJECTED, outcome.error)

    def _report_refused(self, refused: tuple[FileOutcome, ...], *, kept: bool) -> None:
        self._log_refused(refused, kept=kept)
        for file in refused:
            self._publish(EventKind.CONFIG_REJECTED, f"{file.name}: {file.error}")

    def _log_refused(self, refused: tuple[FileOutcome, ...], *, kept: bool) -> None:
        """--config-dir: each file refused for a new reason, once."""
        for file in refused:
            fate = {
                "kept": "its last good content stays in force",
                "ignored": "it contributes nothing",
            }.get(file.state.value, "")
            if not kept:
                fate += "; no valid config at all yet, no rules written"
            path = f"{self.settings.config_source.rstrip('/')}/{file.name}"
            log.error("config %s rejected: %s; %s", path, file.error, fate)

    def _wake(self) -> None:
        """Have the config loop look again now (the schedule changed, or stop)."""
        os.eventfd_write(self._wake_fd, 1)

    def _publish(self, kind: EventKind, message: str) -> None:
        generation = self.config_state.generation
        self.events.publish(Event(kind, time.time(), message, None, None, generation))


def _refusals(files: tuple[FileOutcome, ...]) -> str:
    """Every refused file's reason, as one status line ("" when none is refused)."""
    return "; ".join(f"{f.name}: {f.error}" for f in files if f.error)


def _names(loaded: LoadedConfig, answers: Mapping[str, Answer]) -> dict[IPNetwork, str]:
    """The DNS name each resolved address stands for, so an element's comment names the
    config entry it is (the first name, where two resolve to one address)."""
    config = loaded.config
    names: dict[IPNetwork, str] = {}
    for entries in (config.masquerade_cidrs, config.non_masquerade_cidrs):
        for network, entry in expansion(entries, answers):
            if isinstance(entry, HostName):
                names.setdefault(network, entry.name)
    return names


def _mode(settings: Settings, chosen: choice.Choice) -> str:
    """nftables, or the iptables backend's mode (auto: the one the node uses)."""
    if chosen.backend == NFTABLES:
        return NFTABLES
    if settings.iptables_mode == "auto":
        return iptables.detect_mode()
    return settings.iptables_mode


def choose(settings: Settings) -> choice.Choice:
    """The backend for these settings, from what the node shows (`--backend auto`) or as
    asked; the iptables backend asked for where it cannot work comes back refused."""
    needed = dict(choice.EXTENSIONS)
    if settings.render.to_ports:
        needed |= choice.PORT_EXTENSIONS
    facts = choice.NodeFacts() if settings.backend == NFTABLES else nodefacts.gather(needed)
    return choice.choose_backend(settings.backend, facts)
