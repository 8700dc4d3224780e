"""What the supervisor reports: frozen snapshots of the config, the schedule and each family.

A snapshot is taken under the lock of whoever owns the state (the supervisor for the config,
the schedule, each runner for its family) and never changes afterwards, so the gRPC and HTTP
threads read it without any lock of their own. No I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from masqd.core.config import LoadedConfig
from masqd.core.errors import Kind
from masqd.core.merge import FileOutcome
from masqd.core.model import Family, Reason, SyncResult
from masqd.core.names import Answer


@dataclass(frozen=True)
class ConfigState:
    """The config in force and what happened to the file on disk."""

    path: str
    loaded: LoadedConfig | None = None
    """The last good config; None while none was ever loaded."""
    generation: int = 0
    """Bumps on every accepted change."""
    loaded_at: float = 0.0
    """Wall-clock time the config in force was loaded."""
    error: str = ""
    """Why the file on disk was last rejected; empty once a good one is in force. With
    --config-dir: every refused file's reason, while any is refused."""
    error_at: float = 0.0
    directory: bool = False
    """The path is a config directory (--config-dir)."""
    files: tuple[FileOutcome, ...] = ()
    """--config-dir: each file, in name order, and what became of it."""
    rendering_warnings: tuple[str, ...] = ()
    """What rendering the config in force found odd (nftables: an entry inside another)."""

    @property
    def warnings(self) -> tuple[str, ...]:
        """The file's warnings, then the rendering's."""
        return (self.loaded.warnings if self.loaded else ()) + self.rendering_warnings


@dataclass(frozen=True)
class Override:
    """A temporary resync interval."""

    interval: float
    expires_at: float
    """Wall-clock time."""


@dataclass(frozen=True)
class Interval:
    """The resync interval in force and where it comes from."""

    effective: float
    configured: float
    source: str
    """"config" or "override"."""
    override: Override | None = None


@dataclass(frozen=True)
class Trouble:
    """What keeps a family from being in sync, as far as its runner knows it now."""

    kind: Kind
    message: str
    since: float
    """Monotonic: when this trouble (of this kind) began."""
    attempts: int = 1
    """Failed attempts so far (the worker's retries and the runner's)."""


@dataclass(frozen=True)
class Fault:
    """An exception in a long-lived thread's loop (the thread went on after it)."""

    thread: str
    error: str
    at: float
    """Wall-clock time of the latest."""
    count: int
    ongoing: bool
    """No step of the loop has succeeded since."""


@dataclass(frozen=True)
class FamilyStatus:
    """One family's worker and syncs, as its runner last knew them."""

    family: Family
    pid: int
    """The worker's pid; 0 while none runs."""
    state: str
    """starting, idle, syncing, backoff, stopped, or blocked (the backend cannot work here)."""
    restarts: int
    in_sync: bool
    """The live chain was verified to hold the desired rules (read back, or nft: written with
    no other change in between), and the desired rules have not changed since."""
    last_result: SyncResult | None
    syncs: dict[Reason, int] = field(default_factory=dict)
    """Syncs that ran, by reason (drift checks only when they repaired something)."""
    requests: dict[Reason, int] = field(default_factory=dict)
    """Sync requests received, by reason."""
    checks: int = 0
    """Drift checks run."""
    restores: int = 0
    """Syncs that wrote the chain."""
    pending_since: float | None = None
    """Monotonic arrival of the oldest sync request not yet applied; None when none waits.
    A request is applied once a sync that started after it succeeded, or a drift check found
    the chain as desired."""
    trouble: Trouble | None = None
    """Why the family is not in sync, when it is known (a failed or retried sync, a hung
    worker, one that cannot be started); None once a sync succeeded."""
    fault: Fault | None = None
    """The runner loop's last exception, if it ever had one."""
    warnings: tuple[str, ...] = ()
    """What the node shows that the config may not expect (an snatToSource address it does
    not hold)."""


@dataclass(frozen=True)
class Status:
    """The whole of masqd at one moment."""

    config: ConfigState
    interval: Interval
    families: tuple[FamilyStatus, ...]
    mode: str
    """The data plane: legacy or nft (the iptables backend), or nftables."""
    chain: str
    names: tuple[Answer, ...] = ()
    """The DNS names of the config in force and what is known of each."""
    faults: tuple[Fault, ...] = ()
    """Exceptions in the config loop's thread (the runners' are in their families)."""
    table: str = ""
    """Our nftables table (the nftables backend); empty on the iptables backend."""
    backend_choice: str = ""
    """Why this backend, in a few words (`--backend auto` says what it saw)."""

    def family(self, family: Family) -> FamilyStatus | None:
        return next((f for f in self.families if f.family == family), None)
