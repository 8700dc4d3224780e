"""One gRPC unary call over HTTP/2 on a unix socket, with nothing but the standard library.

    response = unary_call("/run/masqd/masqd.sock", "/masqd.api.v1.Control/Resync",
                          request_bytes, deadline=time.monotonic() + 2)

This is the transport of masq-cni, which runs on every pod start: grpcio takes longer to import
than the whole call may take, and so does the h2 library (bench/cni_add.py measures both
against the bridge plugin). What it speaks is plain gRPC (PROTOCOL-HTTP2.md of grpc/grpc):
prior-knowledge HTTP/2 without TLS, one stream, a length-prefixed message each way, the status
in the trailers. Any gRPC server answers it; masqd's grpcio server is the one it is tested with.

Narrow on purpose: serialized messages in, serialized message out, failures as CallError with
the gRPC status code. It connects, sends one request, reads one answer, and closes; flow control
is settled once at the start by opening both windows wide (an answer is small), no compression
is offered, and anything unexpected from the peer ends the call with a clear error.

Imports only what costs nothing at start-up (no socket.py, enum, re, typing or dataclasses).
"""

from __future__ import annotations

import _socket
import os
import stat
import time

from masqd.client import hpack

# gRPC status codes (grpc/grpc doc/statuscodes.md).
OK = 0
CANCELLED = 1
UNKNOWN = 2
DEADLINE_EXCEEDED = 4
UNIMPLEMENTED = 12
INTERNAL = 13
UNAVAILABLE = 14
UNAUTHENTICATED = 16
PERMISSION_DENIED = 7
RESOURCE_EXHAUSTED = 8
STATUS_NAMES = {
    0: "OK",
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}

MAX_RESPONSE = 64 << 20
"""The largest answer accepted (gRPC's own default receive limit is 4 MiB)."""
RETRY_CONNECT = (0.02, 0.2)
"""First and longest pause between connection attempts to a socket nobody listens on yet."""

# HTTP/2 (RFC 9113).
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = 0, 1, 2, 3, 4, 5, 6, 7
WINDOW_UPDATE, CONTINUATION = 8, 9
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
SETTINGS_ENABLE_PUSH, SETTINGS_INITIAL_WINDOW_SIZE = 0x2, 0x4
MAX_WINDOW = (1 << 31) - 1
DEFAULT_WINDOW = 65535
MAX_FRAME = 16384
"""SETTINGS_MAX_FRAME_SIZE's initial value: we never raise ours, nor send bigger frames."""
STREAM = 1
"""The one stream of the call (the client's first)."""
# HTTP/2 error codes of RST_STREAM and GOAWAY, as gRPC maps them to status codes.
_H2_ERRORS = {0x0: INTERNAL, 0x7: UNAVAILABLE, 0x8: CANCELLED, 0xB: RESOURCE_EXHAUSTED}
# An HTTP status without a grpc-status (a proxy, or no gRPC server at all), as gRPC maps it.
_HTTP_STATUS = {400: INTERNAL, 401: UNAUTHENTICATED, 403: PERMISSION_DENIED, 404: UNIMPLEMENTED}
_HTTP_STATUS.update({429: UNAVAILABLE, 502: UNAVAILABLE, 503: UNAVAILABLE, 504: UNAVAILABLE})


class CallError(Exception):
    """The call did not return a message.

    `code` is the gRPC status code (UNAVAILABLE, DEADLINE_EXCEEDED, or whatever the server
    answered); `unreachable` is true when no server took the call at all (no socket, nobody
    listening, or the deadline passed before one did), so a caller can tell "masqd is not
    there" from "masqd said no"."""

    def __init__(self, code: int, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.unreachable = unreachable

    @property
    def code_name(self) -> str:
        return STATUS_NAMES.get(self.code, str(self.code))

    def __str__(self) -> str:
        return f"{self.code_name}: {self.message}"


def unary_call(
    socket_path: str, method_path: str, request: bytes, deadline: float, authority: str = "masqd"
) -> bytes:
    """Call method_path ("/package.Service/Method") with a serialized request; return the
    serialized response. deadline is a time.monotonic() value: the server is told the time
    left (grpc-timeout) and the call gives up at it."""
    sock = _connect(socket_path, deadline)
    try:
        return _Call(sock, deadline).run(method_path, request, authority)
    finally:
        sock.close()


def _remaining(deadline: float) -> float:
    return deadline - time.monotonic()


def _connect(path: str, deadline: float) -> _socket.socket:
    """A connected socket. No socket file fails at once; a refused connection (a socket file
    nobody listens on, as when the server is restarting) is retried until the deadline."""
    try:
        is_socket = stat.S_ISSOCK(os.stat(path).st_mode)
    except FileNotFoundError:
        raise CallError(UNAVAILABLE, f"no socket at {path}", unreachable=True) from None
    except OSError as e:
        raise CallError(UNAVAILABLE, f"cannot reach {path}: {e}", unreachable=True) from None
    if not is_socket:  # connect() would say "refused", as for a socket nobody listens on
        raise CallError(UNAVAILABLE, f"{path} is not a socket", unreachable=True)
    pause = RETRY_CONNECT[0]
    while True:
        left = _remaining(deadline)
        if left <= 0:
            raise CallError(
                DEADLINE_EXCEEDED, f"nobody accepted a connection on {path} in time",
                unreachable=True,
            )  # fmt: skip
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.settimeout(left)
            sock.connect(path)
            return sock
        except ConnectionRefusedError:
            sock.close()
            time.sleep(max(0.0, min(pause, _remaining(deadline))))
            pause = min(pause * 2, RETRY_CONNECT[1])
        except FileNotFoundError:
            sock.close()
            raise CallError(UNAVAILABLE, f"no socket at {path}", unreachable=True) from None
        except TimeoutError:
            sock.close()
            raise CallError(
                DEADLINE_EXCEEDED, f"connecting to {path} took too long", unreachable=True
            ) from None
        except OSError as e:
            sock.close()
            raise CallError(UNAVAILABLE, f"cannot connect to {path}: {e}", unreachable=True) from e


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    header = len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big")
    return header + payload


def _grpc_timeout(seconds: float) -> bytes:
    """The grpc-timeout header: at most 8 digits and a unit; milliseconds, rounded up."""
    millis = max(1, int(seconds * 1000 + 0.999))
    return f"{millis}m".encode() if millis < 10**8 else f"{int(seconds) + 1}S".encode()


def _percent_decode(value: bytes) -> str:
    """grpc-message is percent-encoded UTF-8."""
    out = bytearray()
    i = 0
    while i < len(value):
        if value[i] == 0x25 and i + 3 <= len(value):
            try:
                out.append(int(value[i + 1 : i + 3], 16))
                i += 3
                continue
            except ValueError:
                pass
        out.append(value[i])
        i += 1
    return out.decode("utf-8", "replace")


class _Call:
    """The client side of one stream on a fresh connection."""

    def __init__(self, sock: _socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.buffer = b""
        self.decoder = hpack.Decoder()
        self.headers: list[hpack.Header] = []
        self.trailers: list[hpack.Header] = []
        self.body = bytearray()
        self.responded = False
        """The server sent anything on our stream (it took the call)."""

    def run(self, method_path: str, request: bytes, authority: str) -> bytes:
        message = b"\x00" + len(request).to_bytes(4, "big") + request
        if len(message) > DEFAULT_WINDOW:
            raise ValueError(f"request of {len(request)} bytes: larger than one window")
        left = _remaining(self.deadline)
        if left <= 0:
            raise CallError(DEADLINE_EXCEEDED, "no time left to call", unreachable=True)
        block = hpack.encode(
            [
                (b":method", b"POST"),
                (b":scheme", b"http"),
                (b":path", method_path.encode()),
                (b":authority", authority.encode()),
                (b"content-type", b"application/grpc"),
                (b"te", b"trailers"),
                (b"grpc-timeout", _grpc_timeout(left)),
            ]
        )
        settings = SETTINGS_ENABLE_PUSH.to_bytes(2, "big") + (0).to_bytes(4, "big")
        settings += SETTINGS_INITIAL_WINDOW_SIZE.to_bytes(2, "big") + MAX_WINDOW.to_bytes(4, "big")
        out = [
            PREFACE,
            _frame(SETTINGS, 0, 0, settings),
            # The connection's window opens as wide as the stream's: no WINDOW_UPDATE is
            # owed for anything the server sends.
            _frame(WINDOW_UPDATE, 0, 0, (MAX_WINDOW - DEFAULT_WINDOW).to_bytes(4, "big")),
        ]
        out += self._header_frames(block)
        for start in range(0, len(message), MAX_FRAME):
            chunk = message[start : start + MAX_FRAME]
            last = start + MAX_FRAME >= len(message)
            out.append(_frame(DATA, END_STREAM if last else 0, STREAM, chunk))
        self._send(b"".join(out))
        self._receive()
        return self._result()

    def _header_frames(self, block: bytes) -> list[bytes]:
        chunks = [block[i : i + MAX_FRAME] for i in range(0, len(block), MAX_FRAME)] or [b""]
        frames = []
        for i, chunk in enumerate(chunks):
            flags = END_HEADERS if i == len(chunks) - 1 else 0
            frames.append(_frame(HEADERS if i == 0 else CONTINUATION, flags, STREAM, chunk))
        return frames

    def _send(self, data: bytes) -> None:
        try:
            self.sock.settimeout(max(0.001, _remaining(self.deadline)))
            self.sock.sendall(data)
        except TimeoutError:
            raise self._timeout() from None
        except OSError as e:
            raise CallError(
                UNAVAILABLE, f"the connection broke while sending: {e}", unreachable=True
            ) from None

    def _timeout(self) -> CallError:
        what = "did not answer in time" if self.responded else "did not take the call in time"
        return CallError(DEADLINE_EXCEEDED, f"the server {what}", unreachable=not self.responded)

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            left = _remaining(self.deadline)
            if left <= 0:
                raise self._timeout()
            try:
                self.sock.settimeout(left)
                chunk = self.sock.recv(max(65536, n - len(self.buffer)))
            except TimeoutError:
                raise self._timeout() from None
            except OSError as e:
                raise CallError(
                    UNAVAILABLE, f"the connection broke: {e}", unreachable=not self.responded
                ) from None
            if not chunk:
                raise CallError(
                    UNAVAILABLE,
                    "the server closed the connection before answering",
                    unreachable=not self.responded,
                )
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def _next_frame(self) -> tuple[int, int, int, bytes]:
        header = self._read(9)
        length = int.from_bytes(header[:3], "big")
        kind, flags = header[3], header[4]
        stream = int.from_bytes(header[5:9], "big") & 0x7FFFFFFF
        if length > MAX_FRAME:
            raise self._protocol(f"a frame of {length} bytes, above our limit of {MAX_FRAME}")
        return kind, flags, stream, self._read(length)

    def _protocol(self, what: str) -> CallError:
        return CallError(INTERNAL, f"HTTP/2 protocol error from the server: {what}")

    def _receive(self) -> None:
        """Read frames until our stream ends, answering what the connection asks of us."""
        block = b""
        block_flags = 0
        while True:
            kind, flags, stream, payload = self._next_frame()
            if block and kind != CONTINUATION:
                raise self._protocol("a header block without its CONTINUATION")
            if stream == 0:
                self._connection_frame(kind, flags, payload)
                continue
            if stream != STREAM:
                if kind in (HEADERS, DATA, PUSH_PROMISE):
                    raise self._protocol(f"frame type {kind} on stream {stream}, not ours")
                continue  # PRIORITY, WINDOW_UPDATE, RST_STREAM of streams we never opened
            if kind == HEADERS:
                self.responded = True
                block, block_flags = self._unpad(flags, payload, priority=True), flags
                if flags & END_HEADERS:
                    if self._headers(block, block_flags):
                        return
                    block = b""
            elif kind == CONTINUATION:
                if not block and not block_flags:
                    raise self._protocol("CONTINUATION without HEADERS")
                block += payload
                if flags & END_HEADERS:
                    if self._headers(block, block_flags):
                        return
                    block, block_flags = b"", 0
            elif kind == DATA:
                self.responded = True
                self.body += self._unpad(flags, payload)
                if len(self.body) > MAX_RESPONSE + 5:
                    raise CallError(RESOURCE_EXHAUSTED, "the answer is larger than 64 MiB")
                if flags & END_STREAM:
                    return
            elif kind == RST_STREAM:
                code = int.from_bytes(payload[:4], "big")
                raise CallError(
                    _H2_ERRORS.get(code, INTERNAL),
                    f"the server reset the stream (HTTP/2 error {code})",
                    unreachable=code == 0x7,  # REFUSED_STREAM: it never handled the call
                )

    def _connection_frame(self, kind: int, flags: int, payload: bytes) -> None:
        if kind == SETTINGS and not flags & ACK:
            self._send(_frame(SETTINGS, ACK, 0))
        elif kind == PING and not flags & ACK:
            self._send(_frame(PING, ACK, 0, payload))
        elif kind == GOAWAY:
            last_stream = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            code = int.from_bytes(payload[4:8], "big")
            if last_stream < STREAM:  # the server will not process our stream
                raise CallError(
                    UNAVAILABLE, f"the server is going away (HTTP/2 error {code})",
                    unreachable=True,
                )  # fmt: skip
        elif kind in (HEADERS, DATA, CONTINUATION, RST_STREAM):
            raise self._protocol(f"frame type {kind} on stream 0")

    def _unpad(self, flags: int, payload: bytes, priority: bool = False) -> bytes:
        if flags & PADDED:
            if not payload or payload[0] >= len(payload):
                raise self._protocol("padding longer than the frame")
            payload = payload[1 : len(payload) - payload[0]]
        if priority and flags & PRIORITY_FLAG:
            payload = payload[5:]
        return payload

    def _headers(self, block: bytes, flags: int) -> bool:
        """Take a complete header block; True when it ended the stream."""
        try:
            headers = self.decoder.decode(block)
        except hpack.HpackError as e:
            raise self._protocol(str(e)) from None
        if not self.headers:
            self.headers = headers
        else:
            self.trailers = headers
        return bool(flags & END_STREAM)

    def _result(self) -> bytes:
        fields = dict(self.headers)
        status = fields.get(b":status", b"")
        trailers = dict(self.trailers) if self.trailers else fields  # or Trailers-Only
        if status != b"200":
            code = int(status) if status.isdigit() else 0
            if b"grpc-status" not in trailers:
                raise CallError(
                    _HTTP_STATUS.get(code, UNKNOWN), f"HTTP status {status.decode() or 'missing'}"
                )
        grpc_status = trailers.get(b"grpc-status")
        if grpc_status is None:
            raise CallError(INTERNAL, "the server's answer ended without a grpc-status")
        if not grpc_status.isdigit():
            raise CallError(UNKNOWN, f"grpc-status {grpc_status!r} is not a number")
        code = int(grpc_status)
        if code != OK:
            raise CallError(code, _percent_decode(trailers.get(b"grpc-message", b"")))
        body = bytes(self.body)
        if len(body) < 5:
            raise CallError(INTERNAL, "the server's answer holds no message")
        if body[0] != 0:
            raise CallError(INTERNAL, "the server compressed its answer, which we did not offer")
        length = int.from_bytes(body[1:5], "big")
        if len(body) != 5 + length:
            raise CallError(INTERNAL, f"expected one message of {length} bytes")
        return body[5:]
