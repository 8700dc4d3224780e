"""Legacy (x_tables) mode: our chain and jump read straight from the kernel, without an exec.

`iptables-legacy-save` gets the nat table from the kernel as one binary blob (two getsockopt
calls) and prints it. A worker only needs to know whether its part of that blob changed, so it
asks for the blob itself: no exec, and no text to parse beside a kube-proxy-sized table.

The blob is a sequence of entries (struct ipt_entry / ip6t_entry, each followed by its matches
and target). A user chain starts with an entry whose target is "ERROR" carrying the chain's
name and ends with a RETURN entry; a jump to a user chain is a standard target whose verdict is
the byte offset of the chain's first entry. Counters are cleared before hashing, and jump
verdicts are replaced by a marker, so the digests change when rules change and only then.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import os
import socket
import struct
from dataclasses import dataclass

from masqd.core.fingerprint import Fingerprint, jump_place
from masqd.core.model import Family

_SO_GET_INFO = 64  # IPT_SO_GET_INFO / IP6T_SO_GET_INFO
_SO_GET_ENTRIES = 65
_NF_INET_POST_ROUTING = 4
_TABLE_NAME_LEN = 32
_GETINFO = struct.Struct("=32sI5I5III")  # name, valid_hooks, hook_entry, underflow, num, size
_GET_ENTRIES_HEAD = 40  # name[32], size, padding to the 8-byte aligned entry table
_TARGET_NAME_LEN = 29
_TARGET_HEAD = struct.Struct("=H29sB")  # target_size, name, revision
_VERDICT = struct.Struct("=i")
_OFFSETS = struct.Struct("=HH")  # target_offset, next_offset
_JUMP_MARKER = b"\xff\xff\xff\x7f"


@dataclass(frozen=True)
class _Layout:
    """Where a family's entry header keeps what we read or clear."""

    level: int
    sock_family: int
    offsets: int  # target_offset (u16), next_offset (u16)
    volatile: tuple[int, int]  # comefrom (set by the kernel) up to the end of the counters
    entry_size: int  # sizeof the entry header: where matches (or the target) begin


_LAYOUTS = {
    # struct ipt_ip is 84 bytes; struct ip6t_ip6 is 136; both entries align counters to 8.
    Family.IPV4: _Layout(socket.IPPROTO_IP, socket.AF_INET, 88, (92, 112), 112),
    Family.IPV6: _Layout(socket.IPPROTO_IPV6, socket.AF_INET6, 140, (144, 168), 168),
}

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.getsockopt.argtypes = [
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_void_p,
    ctypes.POINTER(ctypes.c_uint32),
]


def read(family: Family, chain: str) -> Fingerprint:
    """Digests of our chain and of the POSTROUTING rules jumping to it; OSError if unreadable."""
    hooks, underflows, buf = _nat_blob(family)
    hook, underflow = hooks[_NF_INET_POST_ROUTING], underflows[_NF_INET_POST_ROUTING]
    return digest(family, buf, hook, underflow, chain, base=_GET_ENTRIES_HEAD)


def shape(family: Family) -> bytes:
    """The nat table's shape: its size, number of entries and hook offsets (IPT_SO_GET_INFO,
    no blob copied). Every change of the table changes it, but a rewrite that keeps every
    entry's size (a rule replaced by one of the same length); OSError if unreadable."""
    layout = _LAYOUTS[family]
    with socket.socket(layout.sock_family, socket.SOCK_RAW, socket.IPPROTO_RAW) as sock:
        info = bytearray(b"nat".ljust(_GETINFO.size, b"\0"))
        _getsockopt(sock, layout.level, _SO_GET_INFO, info)
    return bytes(info[_TABLE_NAME_LEN:])


# One buffer per family, kept between reads: beside a kube-proxy-sized table the blob is
# megabytes, and a fresh buffer every drift check costs more in page faults than the copy
# the kernel makes into it.
_buffers: dict[Family, bytearray] = {}


def _nat_blob(family: Family) -> tuple[tuple[int, ...], tuple[int, ...], bytearray]:
    """The hooks, underflows and a buffer holding struct ipt_get_entries (the entry table
    starts at _GET_ENTRIES_HEAD)."""
    layout = _LAYOUTS[family]
    with socket.socket(layout.sock_family, socket.SOCK_RAW, socket.IPPROTO_RAW) as sock:
        name = b"nat".ljust(_TABLE_NAME_LEN, b"\0")
        info = bytearray(name.ljust(_GETINFO.size, b"\0"))
        _getsockopt(sock, layout.level, _SO_GET_INFO, info)
        fields = _GETINFO.unpack(info)
        hooks, underflows, size = fields[2:7], fields[7:12], fields[13]
        buf = _buffers.get(family)
        if buf is None or len(buf) != _GET_ENTRIES_HEAD + size:
            buf = _buffers[family] = bytearray(_GET_ENTRIES_HEAD + size)
        buf[: _TABLE_NAME_LEN + 4] = name + struct.pack("=I", size)
        _getsockopt(sock, layout.level, _SO_GET_ENTRIES, buf)
    return hooks, underflows, buf


def _getsockopt(sock: socket.socket, level: int, option: int, buf: bytearray) -> None:
    """getsockopt with an input buffer (which Python's socket.getsockopt cannot pass): the
    kernel reads the request from buf and writes its answer over it."""
    length = ctypes.c_uint32(len(buf))
    view = (ctypes.c_char * len(buf)).from_buffer(buf)
    try:
        if _libc.getsockopt(sock.fileno(), level, option, view, ctypes.byref(length)) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))
    finally:
        del view  # release the export, or buf could never be freed
    if length.value != len(buf):
        raise OSError(f"the kernel answered {length.value} bytes, not {len(buf)}")


Blob = bytes | bytearray


def digest(
    family: Family, blob: Blob, hook: int, underflow: int, chain: str, base: int = 0
) -> Fingerprint:
    """The fingerprint of our chain and jump in a nat table blob whose entry table starts at
    base (hook and underflow, like jump verdicts, count from there). Pure.

    Only two short stretches of the blob are walked: POSTROUTING, whose bounds the kernel
    gives, and our chain, whose head entry is found by a byte search for its ERROR target.
    """
    layout = _LAYOUTS[family]
    first_rule = _chain_start(blob, layout, chain, base)
    if first_rule is None:
        return Fingerprint(None, b"")
    # Our chain in one piece, its entries' volatile fields cleared: one hash update, however
    # many thousand rules it holds.
    starts, end = _entries(blob, layout, first_rule, len(blob))
    if end >= len(blob):  # the table ends with an ERROR entry, so every chain ends before
        raise OSError("malformed x_tables blob: a chain without an end")
    rules = bytearray(blob[first_rule:end])
    low, high = layout.volatile
    blank = bytes(high - low)
    for start in starts:
        at = start - first_rule
        rules[at + low : at + high] = blank
    chain_hash = hashlib.blake2b(rules, digest_size=16)
    jump_hash = hashlib.blake2b(digest_size=16)
    jumps = 0
    postrouting, _ = _entries(blob, layout, base + hook, base + underflow)
    for index, start in enumerate(postrouting):
        target_offset, next_offset = _OFFSETS.unpack_from(blob, start + layout.offsets)
        target = start + target_offset
        data = target + _TARGET_HEAD.size
        standard = blob[target + 2] == 0  # an empty target name
        if standard and _VERDICT.unpack_from(blob, data)[0] == first_rule - base:
            jump_hash.update(_cleared(blob, start, start + next_offset, layout, data))
            jump_hash.update(jump_place(index))
            jumps += 1
    return Fingerprint(chain_hash.digest(), jump_hash.digest() if jumps else b"")


def _chain_start(blob: Blob, layout: _Layout, chain: str, base: int) -> int | None:
    """The offset of our chain's first rule: just past the ERROR entry that names it."""
    # The ERROR target: name "ERROR" padded to 29 bytes, revision 0, then the chain's name.
    pattern = b"ERROR".ljust(_TARGET_NAME_LEN + 1, b"\0") + chain.encode() + b"\0"
    found = blob.find(pattern, base)
    while found >= 0:
        target = found - 2  # the u16 target_size comes before the name
        start = target - layout.entry_size  # an ERROR entry has no matches
        if start >= base:
            target_offset, next_offset = _OFFSETS.unpack_from(blob, start + layout.offsets)
            if target_offset == layout.entry_size and start + next_offset <= len(blob):
                return int(start + next_offset)
        found = blob.find(pattern, found + 1)
    return None


def _entries(blob: Blob, layout: _Layout, start: int, stop: int) -> tuple[list[int], int]:
    """The offsets of the entries from start until stop or the next ERROR entry (the head of
    the next chain), and where they end. A plain loop: a chain can hold thousands of rules."""
    unpack, where, size = _OFFSETS.unpack_from, layout.offsets, len(blob)
    starts: list[int] = []
    offset = start
    while offset < stop:
        target_offset, next_offset = unpack(blob, offset + where)
        too_short = next_offset == 0 or target_offset + _TARGET_HEAD.size > next_offset
        if too_short or offset + next_offset > size:
            raise OSError("malformed x_tables blob")
        if blob.startswith(b"ERROR\0", offset + target_offset + 2):
            break
        starts.append(offset)
        offset += next_offset
    return starts, offset


def _cleared(blob: Blob, start: int, end: int, layout: _Layout, verdict_at: int) -> bytes:
    """A jump entry's bytes: counters and comefrom cleared, the verdict (an offset) masked."""
    entry = bytearray(blob[start:end])
    low, high = layout.volatile
    entry[low:high] = bytes(high - low)
    at = verdict_at - start
    entry[at : at + 4] = _JUMP_MARKER
    return bytes(entry)
