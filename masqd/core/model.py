"""The domain's words: address families, sync reasons and results, events. No I/O."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from masqd.core.errors import Kind

NFTABLES = "nftables"
"""The data plane a worker writes, besides the iptables backend's two modes (legacy, nft):
the nftables backend, with a table of its own per family."""


class Family(enum.IntEnum):
    """An address family; the value is the IP version."""

    IPV4 = 4
    IPV6 = 6

    @property
    def label(self) -> str:
        return f"ipv{self.value}"


class Reason(enum.Enum):
    """Why a sync ran; the order is the priority when one sync serves several reasons."""

    STARTUP = "startup"
    CONFIG_CHANGE = "config_change"
    DNS_CHANGE = "dns_change"
    """A DNS name of the config resolves to other addresses."""
    CNI = "cni"
    API = "api"
    INTERVAL = "interval"
    DRIFT_REPAIR = "drift_repair"


@dataclass(frozen=True)
class SyncResult:
    """The outcome of one sync of one family."""

    family: Family
    ok: bool
    changed: bool
    duration: float
    finished_at: float
    """Wall-clock time (time.time())."""
    reason: Reason
    error: str = ""
    in_sync: bool = False
    error_kind: Kind | None = None
    """What kind of failure `error` is; None when ok."""


class EventKind(enum.Enum):
    CONFIG_LOADED = "config_loaded"
    CONFIG_REJECTED = "config_rejected"
    SYNC_STARTED = "sync_started"
    SYNC_FINISHED = "sync_finished"
    SYNC_FAILED = "sync_failed"
    WORKER_RESTARTED = "worker_restarted"
    OVERRIDE_SET = "override_set"
    OVERRIDE_EXPIRED = "override_expired"
    OVERRIDE_CLEARED = "override_cleared"
    SYNC_RETRYING = "sync_retrying"


@dataclass(frozen=True)
class Event:
    kind: EventKind
    time: float
    message: str = ""
    family: Family | None = None
    result: SyncResult | None = None
    config_generation: int = 0
