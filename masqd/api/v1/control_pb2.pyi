import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Family(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAMILY_UNSPECIFIED: _ClassVar[Family]
    FAMILY_IPV4: _ClassVar[Family]
    FAMILY_IPV6: _ClassVar[Family]

class SyncReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SYNC_REASON_UNSPECIFIED: _ClassVar[SyncReason]
    SYNC_REASON_STARTUP: _ClassVar[SyncReason]
    SYNC_REASON_INTERVAL: _ClassVar[SyncReason]
    SYNC_REASON_CONFIG_CHANGE: _ClassVar[SyncReason]
    SYNC_REASON_API: _ClassVar[SyncReason]
    SYNC_REASON_CNI: _ClassVar[SyncReason]
    SYNC_REASON_DRIFT_REPAIR: _ClassVar[SyncReason]
    SYNC_REASON_DNS_CHANGE: _ClassVar[SyncReason]

class ErrorKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_KIND_UNSPECIFIED: _ClassVar[ErrorKind]
    ERROR_KIND_REJECTED: _ClassVar[ErrorKind]
    ERROR_KIND_LOCK: _ClassVar[ErrorKind]
    ERROR_KIND_TIMEOUT: _ClassVar[ErrorKind]
    ERROR_KIND_MISSING: _ClassVar[ErrorKind]
    ERROR_KIND_WORKER_GONE: _ClassVar[ErrorKind]
    ERROR_KIND_INTERNAL: _ClassVar[ErrorKind]
    ERROR_KIND_HUNG: _ClassVar[ErrorKind]
    ERROR_KIND_UNVERIFIED: _ClassVar[ErrorKind]
    ERROR_KIND_NO_CONFIG: _ClassVar[ErrorKind]
FAMILY_UNSPECIFIED: Family
FAMILY_IPV4: Family
FAMILY_IPV6: Family
SYNC_REASON_UNSPECIFIED: SyncReason
SYNC_REASON_STARTUP: SyncReason
SYNC_REASON_INTERVAL: SyncReason
SYNC_REASON_CONFIG_CHANGE: SyncReason
SYNC_REASON_API: SyncReason
SYNC_REASON_CNI: SyncReason
SYNC_REASON_DRIFT_REPAIR: SyncReason
SYNC_REASON_DNS_CHANGE: SyncReason
ERROR_KIND_UNSPECIFIED: ErrorKind
ERROR_KIND_REJECTED: ErrorKind
ERROR_KIND_LOCK: ErrorKind
ERROR_KIND_TIMEOUT: ErrorKind
ERROR_KIND_MISSING: ErrorKind
ERROR_KIND_WORKER_GONE: ErrorKind
ERROR_KIND_INTERNAL: ErrorKind
ERROR_KIND_HUNG: ErrorKind
ERROR_KIND_UNVERIFIED: ErrorKind
ERROR_KIND_NO_CONFIG: ErrorKind

class ResyncRequest(_message.Message):
    __slots__ = ("family", "no_wait", "reason")
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    NO_WAIT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    family: Family
    no_wait: bool
    reason: SyncReason
    def __init__(self, family: _Optional[_Union[Family, str]] = ..., no_wait: _Optional[bool] = ..., reason: _Optional[_Union[SyncReason, str]] = ...) -> None: ...

class SyncResult(_message.Message):
    __slots__ = ("family", "ok", "error", "changed", "duration", "finished_at", "reason", "error_kind")
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ERROR_KIND_FIELD_NUMBER: _ClassVar[int]
    family: Family
    ok: bool
    error: str
    changed: bool
    duration: _duration_pb2.Duration
    finished_at: _timestamp_pb2.Timestamp
    reason: SyncReason
    error_kind: ErrorKind
    def __init__(self, family: _Optional[_Union[Family, str]] = ..., ok: _Optional[bool] = ..., error: _Optional[str] = ..., changed: _Optional[bool] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[_Union[SyncReason, str]] = ..., error_kind: _Optional[_Union[ErrorKind, str]] = ...) -> None: ...

class ResyncResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SyncResult]
    def __init__(self, results: _Optional[_Iterable[_Union[SyncResult, _Mapping]]] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ConfigStatus(_message.Message):
    __slots__ = ("path", "generation", "loaded_at", "error", "error_at", "warnings", "using_defaults", "directory", "files")
    PATH_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    LOADED_AT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_AT_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    USING_DEFAULTS_FIELD_NUMBER: _ClassVar[int]
    DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    path: str
    generation: int
    loaded_at: _timestamp_pb2.Timestamp
    error: str
    error_at: _timestamp_pb2.Timestamp
    warnings: _containers.RepeatedScalarFieldContainer[str]
    using_defaults: bool
    directory: bool
    files: _containers.RepeatedCompositeFieldContainer[ConfigFile]
    def __init__(self, path: _Optional[str] = ..., generation: _Optional[int] = ..., loaded_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error: _Optional[str] = ..., error_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., warnings: _Optional[_Iterable[str]] = ..., using_defaults: _Optional[bool] = ..., directory: _Optional[bool] = ..., files: _Optional[_Iterable[_Union[ConfigFile, _Mapping]]] = ...) -> None: ...

class ConfigFile(_message.Message):
    __slots__ = ("name", "state", "error")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[ConfigFile.State]
        APPLIED: _ClassVar[ConfigFile.State]
        KEPT: _ClassVar[ConfigFile.State]
        IGNORED: _ClassVar[ConfigFile.State]
    STATE_UNSPECIFIED: ConfigFile.State
    APPLIED: ConfigFile.State
    KEPT: ConfigFile.State
    IGNORED: ConfigFile.State
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: ConfigFile.State
    error: str
    def __init__(self, name: _Optional[str] = ..., state: _Optional[_Union[ConfigFile.State, str]] = ..., error: _Optional[str] = ...) -> None: ...

class DnsName(_message.Message):
    __slots__ = ("name", "addresses", "resolved", "answered_at", "age", "ttl", "error", "error_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_AT_FIELD_NUMBER: _ClassVar[int]
    AGE_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    addresses: _containers.RepeatedScalarFieldContainer[str]
    resolved: bool
    answered_at: _timestamp_pb2.Timestamp
    age: _duration_pb2.Duration
    ttl: _duration_pb2.Duration
    error: str
    error_at: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., addresses: _Optional[_Iterable[str]] = ..., resolved: _Optional[bool] = ..., answered_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., age: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., error: _Optional[str] = ..., error_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class IntervalStatus(_message.Message):
    __slots__ = ("effective", "configured", "source", "override_expires_at")
    EFFECTIVE_FIELD_NUMBER: _ClassVar[int]
    CONFIGURED_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    OVERRIDE_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    effective: _duration_pb2.Duration
    configured: _duration_pb2.Duration
    source: str
    override_expires_at: _timestamp_pb2.Timestamp
    def __init__(self, effective: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., configured: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., source: _Optional[str] = ..., override_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SyncCount(_message.Message):
    __slots__ = ("reason", "count")
    REASON_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    reason: SyncReason
    count: int
    def __init__(self, reason: _Optional[_Union[SyncReason, str]] = ..., count: _Optional[int] = ...) -> None: ...

class Trouble(_message.Message):
    __slots__ = ("kind", "message", "lasted", "attempts")
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LASTED_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    kind: ErrorKind
    message: str
    lasted: _duration_pb2.Duration
    attempts: int
    def __init__(self, kind: _Optional[_Union[ErrorKind, str]] = ..., message: _Optional[str] = ..., lasted: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., attempts: _Optional[int] = ...) -> None: ...

class ThreadFault(_message.Message):
    __slots__ = ("thread", "error", "at", "count", "ongoing")
    THREAD_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    ONGOING_FIELD_NUMBER: _ClassVar[int]
    thread: str
    error: str
    at: _timestamp_pb2.Timestamp
    count: int
    ongoing: bool
    def __init__(self, thread: _Optional[str] = ..., error: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., count: _Optional[int] = ..., ongoing: _Optional[bool] = ...) -> None: ...

class FamilyStatus(_message.Message):
    __slots__ = ("family", "pid", "state", "restarts", "last_sync", "in_sync", "sync_counts", "backend", "healthy", "serving", "health", "trouble", "fault", "pending", "warnings")
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    LAST_SYNC_FIELD_NUMBER: _ClassVar[int]
    IN_SYNC_FIELD_NUMBER: _ClassVar[int]
    SYNC_COUNTS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    TROUBLE_FIELD_NUMBER: _ClassVar[int]
    FAULT_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    family: Family
    pid: int
    state: str
    restarts: int
    last_sync: SyncResult
    in_sync: bool
    sync_counts: _containers.RepeatedCompositeFieldContainer[SyncCount]
    backend: str
    healthy: bool
    serving: bool
    health: str
    trouble: Trouble
    fault: ThreadFault
    pending: _duration_pb2.Duration
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, family: _Optional[_Union[Family, str]] = ..., pid: _Optional[int] = ..., state: _Optional[str] = ..., restarts: _Optional[int] = ..., last_sync: _Optional[_Union[SyncResult, _Mapping]] = ..., in_sync: _Optional[bool] = ..., sync_counts: _Optional[_Iterable[_Union[SyncCount, _Mapping]]] = ..., backend: _Optional[str] = ..., healthy: _Optional[bool] = ..., serving: _Optional[bool] = ..., health: _Optional[str] = ..., trouble: _Optional[_Union[Trouble, _Mapping]] = ..., fault: _Optional[_Union[ThreadFault, _Mapping]] = ..., pending: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class Status(_message.Message):
    __slots__ = ("config", "interval", "families", "version", "chain", "names", "faults", "table", "backend_choice")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    FAMILIES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CHAIN_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    FAULTS_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    BACKEND_CHOICE_FIELD_NUMBER: _ClassVar[int]
    config: ConfigStatus
    interval: IntervalStatus
    families: _containers.RepeatedCompositeFieldContainer[FamilyStatus]
    version: str
    chain: str
    names: _containers.RepeatedCompositeFieldContainer[DnsName]
    faults: _containers.RepeatedCompositeFieldContainer[ThreadFault]
    table: str
    backend_choice: str
    def __init__(self, config: _Optional[_Union[ConfigStatus, _Mapping]] = ..., interval: _Optional[_Union[IntervalStatus, _Mapping]] = ..., families: _Optional[_Iterable[_Union[FamilyStatus, _Mapping]]] = ..., version: _Optional[str] = ..., chain: _Optional[str] = ..., names: _Optional[_Iterable[_Union[DnsName, _Mapping]]] = ..., faults: _Optional[_Iterable[_Union[ThreadFault, _Mapping]]] = ..., table: _Optional[str] = ..., backend_choice: _Optional[str] = ...) -> None: ...

class GetRulesRequest(_message.Message):
    __slots__ = ("family",)
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    family: Family
    def __init__(self, family: _Optional[_Union[Family, str]] = ...) -> None: ...

class LiveRule(_message.Message):
    __slots__ = ("spec", "packets", "bytes", "target", "destination", "comment", "origin")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    PACKETS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    spec: str
    packets: int
    bytes: int
    target: str
    destination: str
    comment: str
    origin: str
    def __init__(self, spec: _Optional[str] = ..., packets: _Optional[int] = ..., bytes: _Optional[int] = ..., target: _Optional[str] = ..., destination: _Optional[str] = ..., comment: _Optional[str] = ..., origin: _Optional[str] = ...) -> None: ...

class FamilyRules(_message.Message):
    __slots__ = ("family", "chain", "chain_exists", "jump_present", "live", "desired", "in_sync", "error", "table")
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    CHAIN_FIELD_NUMBER: _ClassVar[int]
    CHAIN_EXISTS_FIELD_NUMBER: _ClassVar[int]
    JUMP_PRESENT_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    IN_SYNC_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TABLE_FIELD_NUMBER: _ClassVar[int]
    family: Family
    chain: str
    chain_exists: bool
    jump_present: bool
    live: _containers.RepeatedCompositeFieldContainer[LiveRule]
    desired: _containers.RepeatedScalarFieldContainer[str]
    in_sync: bool
    error: str
    table: TableRules
    def __init__(self, family: _Optional[_Union[Family, str]] = ..., chain: _Optional[str] = ..., chain_exists: _Optional[bool] = ..., jump_present: _Optional[bool] = ..., live: _Optional[_Iterable[_Union[LiveRule, _Mapping]]] = ..., desired: _Optional[_Iterable[str]] = ..., in_sync: _Optional[bool] = ..., error: _Optional[str] = ..., table: _Optional[_Union[TableRules, _Mapping]] = ...) -> None: ...

class SetElement(_message.Message):
    __slots__ = ("set", "cidr", "comment", "packets", "bytes", "covers")
    SET_FIELD_NUMBER: _ClassVar[int]
    CIDR_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    PACKETS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    COVERS_FIELD_NUMBER: _ClassVar[int]
    set: str
    cidr: str
    comment: str
    packets: int
    bytes: int
    covers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, set: _Optional[str] = ..., cidr: _Optional[str] = ..., comment: _Optional[str] = ..., packets: _Optional[int] = ..., bytes: _Optional[int] = ..., covers: _Optional[_Iterable[str]] = ...) -> None: ...

class TableRule(_message.Message):
    __slots__ = ("chain", "rule", "packets", "bytes")
    CHAIN_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    PACKETS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    chain: str
    rule: str
    packets: int
    bytes: int
    def __init__(self, chain: _Optional[str] = ..., rule: _Optional[str] = ..., packets: _Optional[int] = ..., bytes: _Optional[int] = ...) -> None: ...

class TableRules(_message.Message):
    __slots__ = ("name", "exists", "elements", "rules", "listing", "desired", "pending")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXISTS_FIELD_NUMBER: _ClassVar[int]
    ELEMENTS_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    LISTING_FIELD_NUMBER: _ClassVar[int]
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    name: str
    exists: bool
    elements: _containers.RepeatedCompositeFieldContainer[SetElement]
    rules: _containers.RepeatedCompositeFieldContainer[TableRule]
    listing: str
    desired: str
    pending: str
    def __init__(self, name: _Optional[str] = ..., exists: _Optional[bool] = ..., elements: _Optional[_Iterable[_Union[SetElement, _Mapping]]] = ..., rules: _Optional[_Iterable[_Union[TableRule, _Mapping]]] = ..., listing: _Optional[str] = ..., desired: _Optional[str] = ..., pending: _Optional[str] = ...) -> None: ...

class GetRulesResponse(_message.Message):
    __slots__ = ("families",)
    FAMILIES_FIELD_NUMBER: _ClassVar[int]
    families: _containers.RepeatedCompositeFieldContainer[FamilyRules]
    def __init__(self, families: _Optional[_Iterable[_Union[FamilyRules, _Mapping]]] = ...) -> None: ...

class SetIntervalOverrideRequest(_message.Message):
    __slots__ = ("interval", "ttl")
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    interval: _duration_pb2.Duration
    ttl: _duration_pb2.Duration
    def __init__(self, interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ClearIntervalOverrideRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Event(_message.Message):
    __slots__ = ("kind", "time", "family", "message", "result", "config_generation")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[Event.Kind]
        CONFIG_LOADED: _ClassVar[Event.Kind]
        CONFIG_REJECTED: _ClassVar[Event.Kind]
        SYNC_STARTED: _ClassVar[Event.Kind]
        SYNC_FINISHED: _ClassVar[Event.Kind]
        SYNC_FAILED: _ClassVar[Event.Kind]
        WORKER_RESTARTED: _ClassVar[Event.Kind]
        OVERRIDE_SET: _ClassVar[Event.Kind]
        OVERRIDE_EXPIRED: _ClassVar[Event.Kind]
        OVERRIDE_CLEARED: _ClassVar[Event.Kind]
        SYNC_RETRYING: _ClassVar[Event.Kind]
    KIND_UNSPECIFIED: Event.Kind
    CONFIG_LOADED: Event.Kind
    CONFIG_REJECTED: Event.Kind
    SYNC_STARTED: Event.Kind
    SYNC_FINISHED: Event.Kind
    SYNC_FAILED: Event.Kind
    WORKER_RESTARTED: Event.Kind
    OVERRIDE_SET: Event.Kind
    OVERRIDE_EXPIRED: Event.Kind
    OVERRIDE_CLEARED: Event.Kind
    SYNC_RETRYING: Event.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    CONFIG_GENERATION_FIELD_NUMBER: _ClassVar[int]
    kind: Event.Kind
    time: _timestamp_pb2.Timestamp
    family: Family
    message: str
    result: SyncResult
    config_generation: int
    def __init__(self, kind: _Optional[_Union[Event.Kind, str]] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., family: _Optional[_Union[Family, str]] = ..., message: _Optional[str] = ..., result: _Optional[_Union[SyncResult, _Mapping]] = ..., config_generation: _Optional[int] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("destination", "source", "family")
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    destination: str
    source: str
    family: Family
    def __init__(self, destination: _Optional[str] = ..., source: _Optional[str] = ..., family: _Optional[_Union[Family, str]] = ...) -> None: ...

class ConfigEntry(_message.Message):
    __slots__ = ("key", "index", "value", "file", "resolved")
    KEY_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_FIELD_NUMBER: _ClassVar[int]
    key: str
    index: int
    value: str
    file: str
    resolved: str
    def __init__(self, key: _Optional[str] = ..., index: _Optional[int] = ..., value: _Optional[str] = ..., file: _Optional[str] = ..., resolved: _Optional[str] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("action", "decided_by", "rule", "owner", "snat_to", "entry")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    DECIDED_BY_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    SNAT_TO_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    action: str
    decided_by: str
    rule: str
    owner: str
    snat_to: str
    entry: ConfigEntry
    def __init__(self, action: _Optional[str] = ..., decided_by: _Optional[str] = ..., rule: _Optional[str] = ..., owner: _Optional[str] = ..., snat_to: _Optional[str] = ..., entry: _Optional[_Union[ConfigEntry, _Mapping]] = ...) -> None: ...

class Explanation(_message.Message):
    __slots__ = ("family", "destination", "source", "action", "decided_by", "rule", "owner", "snat_to", "entry", "masqd", "warnings", "notes", "position", "backend", "config")
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    DECIDED_BY_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    SNAT_TO_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    MASQD_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    family: Family
    destination: str
    source: str
    action: str
    decided_by: str
    rule: str
    owner: str
    snat_to: str
    entry: ConfigEntry
    masqd: Decision
    warnings: _containers.RepeatedScalarFieldContainer[str]
    notes: _containers.RepeatedScalarFieldContainer[str]
    position: str
    backend: str
    config: str
    def __init__(self, family: _Optional[_Union[Family, str]] = ..., destination: _Optional[str] = ..., source: _Optional[str] = ..., action: _Optional[str] = ..., decided_by: _Optional[str] = ..., rule: _Optional[str] = ..., owner: _Optional[str] = ..., snat_to: _Optional[str] = ..., entry: _Optional[_Union[ConfigEntry, _Mapping]] = ..., masqd: _Optional[_Union[Decision, _Mapping]] = ..., warnings: _Optional[_Iterable[str]] = ..., notes: _Optional[_Iterable[str]] = ..., position: _Optional[str] = ..., backend: _Optional[str] = ..., config: _Optional[str] = ...) -> None: ...
