"""The few masqd.api.v1 messages masq-cni exchanges, in protobuf's wire format, without the
protobuf runtime (which alone costs more start-up than an ADD may take).

Field numbers are those of protos/masqd/api/v1/control.proto; tests/unit/test_client_light.py checks
every one against the generated descriptors and round-trips the messages through the generated
classes, so this cannot drift from the contract silently. Pure: bytes in, values out.
"""

from __future__ import annotations

# enum Family, enum SyncReason
FAMILY_NAMES = {0: "unspecified", 1: "ipv4", 2: "ipv6"}
SYNC_REASON_CNI = 5

# Wire types.
VARINT, I64, LEN, I32 = 0, 1, 2, 5


class DecodeError(ValueError):
    """Bytes that are not the message they should be."""


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int32/int64 values take ten bytes, as protobuf writes them
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise DecodeError("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def fields(data: bytes) -> dict[int, list[int | bytes]]:
    """Every field of a message: number -> values in order (varints as int, length-delimited
    as bytes; fixed-width fields, which none of ours use, are skipped)."""
    out: dict[int, list[int | bytes]] = {}
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == VARINT:
            value, pos = _read_varint(data, pos)
        elif wire == LEN:
            length, pos = _read_varint(data, pos)
            if pos + length > len(data):
                raise DecodeError(f"field {number} runs past the end")
            value, pos = data[pos : pos + length], pos + length
        elif wire == I64:
            pos += 8
            continue
        elif wire == I32:
            pos += 4
            continue
        else:
            raise DecodeError(f"field {number} has wire type {wire}")
        if number == 0 or pos > len(data):
            raise DecodeError("malformed message")
        out.setdefault(number, []).append(value)
    return out


def _last_int(values: dict[int, list[int | bytes]], number: int) -> int:
    found = [v for v in values.get(number, ()) if isinstance(v, int)]
    return found[-1] if found else 0  # proto3: the last value wins, absent is 0


def _last_str(values: dict[int, list[int | bytes]], number: int) -> str:
    found = [v for v in values.get(number, ()) if isinstance(v, bytes)]
    return found[-1].decode("utf-8", "replace") if found else ""


def _messages(values: dict[int, list[int | bytes]], number: int) -> list[bytes]:
    return [v for v in values.get(number, ()) if isinstance(v, bytes)]


def family_name(value: int) -> str:
    return FAMILY_NAMES.get(value, f"family {value}")


# ---- ResyncRequest {Family family = 1; bool no_wait = 2; SyncReason reason = 3;} -----------


def resync_request(reason: int, no_wait: bool = False, family: int = 0) -> bytes:
    out = b""
    if family:
        out += b"\x08" + _varint(family)
    if no_wait:
        out += b"\x10\x01"
    if reason:
        out += b"\x18" + _varint(reason)
    return out


class SyncResult:
    """SyncResult {Family family = 1; bool ok = 2; string error = 3; ...}"""

    __slots__ = ("error", "family", "ok")

    def __init__(self, family: str, ok: bool, error: str) -> None:
        self.family = family
        self.ok = ok
        self.error = error


def resync_response(data: bytes) -> list[SyncResult]:
    """ResyncResponse {repeated SyncResult results = 1;}"""
    results = []
    for raw in _messages(fields(data), 1):
        f = fields(raw)
        results.append(
            SyncResult(family_name(_last_int(f, 1)), bool(_last_int(f, 2)), _last_str(f, 3))
        )
    return results


# ---- GetRulesRequest {Family family = 1;} -> GetRulesResponse --------------------------------


class FamilyRules:
    """FamilyRules {Family family = 1; string chain = 2; bool chain_exists = 3; bool
    jump_present = 4; repeated LiveRule live = 5; repeated string desired = 6; bool in_sync = 7;
    string error = 8;} (the rules themselves only counted)."""

    __slots__ = (
        "chain", "chain_exists", "desired", "error", "family", "in_sync", "jump_present", "live",
    )  # fmt: skip

    def __init__(self, raw: bytes) -> None:
        f = fields(raw)
        self.family = family_name(_last_int(f, 1))
        self.chain = _last_str(f, 2)
        self.chain_exists = bool(_last_int(f, 3))
        self.jump_present = bool(_last_int(f, 4))
        self.live = len(_messages(f, 5))
        self.desired = len(_messages(f, 6))
        self.in_sync = bool(_last_int(f, 7))
        self.error = _last_str(f, 8)


def get_rules_response(data: bytes) -> list[FamilyRules]:
    """GetRulesResponse {repeated FamilyRules families = 1;}"""
    return [FamilyRules(raw) for raw in _messages(fields(data), 1)]


GET_RULES_REQUEST = b""  # every enabled family
GET_STATUS_REQUEST = b""  # GetStatusRequest {}
