"""HPACK (RFC 7541), the header compression of HTTP/2: a decoder for what a gRPC server sends,
and the plain encoding a client may always use.

Standard library only, and none of the costly parts of it (no enum, re, typing or dataclasses
at import): this runs on every pod start inside masq-cni (see h2transport). Pure: bytes in,
headers out.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

Header = tuple[bytes, bytes]

# RFC 7541 Appendix A.
STATIC_TABLE: tuple[Header, ...] = tuple(
    (name.encode(), value.encode())
    for name, value in (
        (":authority", ""),
        (":method", "GET"),
        (":method", "POST"),
        (":path", "/"),
        (":path", "/index.html"),
        (":scheme", "http"),
        (":scheme", "https"),
        (":status", "200"),
        (":status", "204"),
        (":status", "206"),
        (":status", "304"),
        (":status", "400"),
        (":status", "404"),
        (":status", "500"),
        ("accept-charset", ""),
        ("accept-encoding", "gzip, deflate"),
        ("accept-language", ""),
        ("accept-ranges", ""),
        ("accept", ""),
        ("access-control-allow-origin", ""),
        ("age", ""),
        ("allow", ""),
        ("authorization", ""),
        ("cache-control", ""),
        ("content-disposition", ""),
        ("content-encoding", ""),
        ("content-language", ""),
        ("content-length", ""),
        ("content-location", ""),
        ("content-range", ""),
        ("content-type", ""),
        ("cookie", ""),
        ("date", ""),
        ("etag", ""),
        ("expect", ""),
        ("expires", ""),
        ("from", ""),
        ("host", ""),
        ("if-match", ""),
        ("if-modified-since", ""),
        ("if-none-match", ""),
        ("if-range", ""),
        ("if-unmodified-since", ""),
        ("last-modified", ""),
        ("link", ""),
        ("location", ""),
        ("max-forwards", ""),
        ("proxy-authenticate", ""),
        ("proxy-authorization", ""),
        ("range", ""),
        ("referer", ""),
        ("refresh", ""),
        ("retry-after", ""),
        ("server", ""),
        ("set-cookie", ""),
        ("strict-transport-security", ""),
        ("transfer-encoding", ""),
        ("user-agent", ""),
        ("vary", ""),
        ("via", ""),
        ("www-authenticate", ""),
    )
)

# RFC 7541 Appendix B: the bit length of each symbol's code (256 is EOS). The code is
# canonical (codes of one length are consecutive, in symbol order), so the lengths define it.
HUFFMAN_LENGTHS = (
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5,
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
    30,
)  # fmt: skip
EOS = 256
DEFAULT_TABLE_SIZE = 4096
"""SETTINGS_HEADER_TABLE_SIZE's initial value; a decoder that never changes it holds to it."""
_ENTRY_OVERHEAD = 32  # RFC 7541 4.1: an entry's size is its name, its value and 32 octets


class HpackError(Exception):
    """A header block that is not valid HPACK: a connection error (COMPRESSION_ERROR)."""


def huffman_codes() -> dict[tuple[int, int], int]:
    """(bit length, code) -> symbol, built from the canonical lengths."""
    order = sorted(range(len(HUFFMAN_LENGTHS)), key=lambda s: (HUFFMAN_LENGTHS[s], s))
    codes: dict[tuple[int, int], int] = {}
    code, length = -1, HUFFMAN_LENGTHS[order[0]]
    for symbol in order:
        code = (code + 1) << (HUFFMAN_LENGTHS[symbol] - length)
        length = HUFFMAN_LENGTHS[symbol]
        codes[length, code] = symbol
    return codes


_huffman: dict[tuple[int, int], int] = {}


def huffman_decode(data: bytes) -> bytes:
    """Decode a Huffman-coded string; the padding must be fewer than 8 one-bits (5.2)."""
    if not _huffman:  # built on first use: gRPC servers rarely Huffman-code what we read
        _huffman.update(huffman_codes())
    codes = _huffman
    out = bytearray()
    code = length = 0
    for byte in data:
        for shift in range(7, -1, -1):
            code = (code << 1) | ((byte >> shift) & 1)
            length += 1
            symbol = codes.get((length, code))
            if symbol is not None:
                if symbol == EOS:
                    raise HpackError("Huffman string holds EOS")
                out.append(symbol)
                code = length = 0
            elif length > 30:
                raise HpackError("invalid Huffman code")
    if length > 7 or code != (1 << length) - 1:
        raise HpackError("invalid Huffman padding")
    return bytes(out)


def _integer(data: bytes, pos: int, prefix: int) -> tuple[int, int]:
    """An integer with an N-bit prefix (5.1) starting at data[pos]; returns (value, next pos)."""
    limit = (1 << prefix) - 1
    value = data[pos] & limit
    pos += 1
    if value < limit:
        return value, pos
    shift = 0
    while True:
        if pos >= len(data):
            raise HpackError("truncated integer")
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos
        if shift > 28:
            raise HpackError("integer too large")


def _string(data: bytes, pos: int) -> tuple[bytes, int]:
    if pos >= len(data):
        raise HpackError("truncated string")
    huffman = data[pos] & 0x80
    length, pos = _integer(data, pos, 7)
    end = pos + length
    if end > len(data):
        raise HpackError("truncated string")
    raw = data[pos:end]
    return (huffman_decode(raw) if huffman else raw), end


class Decoder:
    """One connection's decoding context: the dynamic table lives across header blocks."""

    def __init__(self, max_table_size: int = DEFAULT_TABLE_SIZE) -> None:
        self.max_allowed = max_table_size
        """What our SETTINGS allow the peer; it may shrink the table below this."""
        self.max_size = max_table_size
        self.size = 0
        self.table: list[Header] = []
        """Newest first: index 62 is table[0]."""

    def decode(self, block: bytes) -> list[Header]:
        headers: list[Header] = []
        pos = 0
        while pos < len(block):
            first = block[pos]
            if first & 0x80:  # indexed header field (6.1)
                index, pos = _integer(block, pos, 7)
                headers.append(self._entry(index))
            elif first & 0x40:  # literal with incremental indexing (6.2.1)
                header, pos = self._literal(block, pos, 6)
                headers.append(header)
                self._add(header)
            elif first & 0x20:  # dynamic table size update (6.3)
                size, pos = _integer(block, pos, 5)
                if size > self.max_allowed:
                    raise HpackError(f"table size {size} above the {self.max_allowed} allowed")
                self.max_size = size
                self._evict()
            else:  # literal without indexing (6.2.2) or never indexed (6.2.3)
                header, pos = self._literal(block, pos, 4)
                headers.append(header)
        return headers

    def _literal(self, block: bytes, pos: int, prefix: int) -> tuple[Header, int]:
        index, pos = _integer(block, pos, prefix)
        if index:
            name = self._entry(index)[0]
        else:
            name, pos = _string(block, pos)
        value, pos = _string(block, pos)
        return (name, value), pos

    def _entry(self, index: int) -> Header:
        if 0 < index <= len(STATIC_TABLE):
            return STATIC_TABLE[index - 1]
        dynamic = index - len(STATIC_TABLE) - 1
        if index == 0 or dynamic >= len(self.table):
            raise HpackError(f"header index {index} is not in the table")
        return self.table[dynamic]

    def _add(self, header: Header) -> None:
        self.table.insert(0, header)
        self.size += len(header[0]) + len(header[1]) + _ENTRY_OVERHEAD
        self._evict()

    def _evict(self) -> None:
        while self.size > self.max_size and self.table:
            name, value = self.table.pop()
            self.size -= len(name) + len(value) + _ENTRY_OVERHEAD


def _encode_integer(value: int, prefix: int, flags: int) -> bytes:
    limit = (1 << prefix) - 1
    if value < limit:
        return bytes([flags | value])
    out = bytearray([flags | limit])
    value -= limit
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode(headers: Iterable[Header]) -> bytes:
    """Each header as a literal without indexing, with a literal name and no Huffman coding
    (6.2.2): valid for every decoder, and it leaves the peer's dynamic table alone."""
    out = bytearray()
    for name, value in headers:
        out += b"\x00" + _encode_integer(len(name), 7, 0) + name
        out += _encode_integer(len(value), 7, 0) + value
    return bytes(out)
