"""masq-cni's way to masqd without grpcio or protobuf: masqd.client.h2transport (gRPC over HTTP/2
on a unix socket) against the real grpcio server, its HPACK decoder against the hpack library's
encoder, and masqd.client.wire against the generated masqd.api.v1 classes."""

from __future__ import annotations

import random
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import hpack as hpack_lib
import pytest

from masqd.api.v1 import control_pb2 as pb
from masqd.api.v1 import control_pb2_grpc as pb_grpc
from masqd.client import h2transport, hpack, wire

RESYNC = "/masqd.api.v1.Control/Resync"
GET_RULES = "/masqd.api.v1.Control/GetRules"


class Servicer(pb_grpc.ControlServicer):
    """A grpcio server doing what a test needs of masqd."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.abort: tuple[grpc.StatusCode, str] | None = None
        self.rules = 0
        self.time_remaining: float | None = None
        self.requests: list[pb.ResyncRequest] = []

    def Resync(self, request: pb.ResyncRequest, context: Any) -> pb.ResyncResponse:
        self.requests.append(request)
        self.time_remaining = context.time_remaining()
        if self.abort:
            context.abort(*self.abort)
        time.sleep(self.delay)
        return pb.ResyncResponse(
            results=[
                pb.SyncResult(family=pb.FAMILY_IPV4, ok=True, reason=request.reason),
                pb.SyncResult(family=pb.FAMILY_IPV6, ok=False, error="ip6tables-restore: é"),
            ]
        )

    def GetRules(self, request: pb.GetRulesRequest, context: Any) -> pb.GetRulesResponse:
        live = [pb.LiveRule(spec=f"-A IP-MASQ-AGENT -d 10.{i // 256}.{i % 256}.0/24 -j RETURN",
                            packets=i, bytes=i * 100) for i in range(self.rules)]  # fmt: skip
        return pb.GetRulesResponse(
            families=[
                pb.FamilyRules(
                    family=pb.FAMILY_IPV4,
                    chain="IP-MASQ-AGENT",
                    chain_exists=True,
                    jump_present=False,
                    live=live,
                    desired=[r.spec for r in live],
                    in_sync=False,
                    error="",
                )
            ]
        )


@pytest.fixture
def short_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="mqh2") as d:
        yield Path(d)


@pytest.fixture
def server(short_dir: Path) -> Iterator[tuple[str, Servicer]]:
    servicer = Servicer()
    path = str(short_dir / "masqd.sock")
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_ControlServicer_to_server(servicer, srv)
    srv.add_insecure_port(f"unix:{path}")
    srv.start()
    yield path, servicer
    srv.stop(0).wait(5)


def call(path: str, method: str = RESYNC, request: bytes = b"", timeout: float = 5.0) -> bytes:
    return h2transport.unary_call(path, method, request, time.monotonic() + timeout)


def test_unary_call_returns_the_servers_message(server: tuple[str, Servicer]) -> None:
    """The request arrives as the server's generated class reads it; the answer comes back as
    the bytes it serialized."""
    path, servicer = server
    request = pb.ResyncRequest(family=pb.FAMILY_IPV4, reason=pb.SYNC_REASON_CNI)
    answer = pb.ResyncResponse.FromString(call(path, request=request.SerializeToString()))
    assert servicer.requests == [request]
    assert [r.family for r in answer.results] == [pb.FAMILY_IPV4, pb.FAMILY_IPV6]
    assert answer.results[1].error == "ip6tables-restore: é"


def test_the_server_is_told_the_deadline(server: tuple[str, Servicer]) -> None:
    """grpc-timeout carries the time left: the server's context sees about that much."""
    path, servicer = server
    call(path, timeout=3.0)
    assert servicer.time_remaining is not None and 2.0 < servicer.time_remaining <= 3.0


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, "reason 9 is not allowed"),
        (grpc.StatusCode.FAILED_PRECONDITION, "déjà vu: 100% sure\nline two"),
        (grpc.StatusCode.UNAVAILABLE, "shutting down"),
    ],
)
def test_status_codes_and_messages_come_through(
    server: tuple[str, Servicer], code: grpc.StatusCode, message: str
) -> None:
    """A call the server fails: CallError with its status code and its message, decoded."""
    path, servicer = server
    servicer.abort = (code, message)
    with pytest.raises(h2transport.CallError) as failed:
        call(path)
    assert failed.value.code == code.value[0]
    assert failed.value.message == message
    assert not failed.value.unreachable


def test_unknown_method_is_unimplemented(server: tuple[str, Servicer]) -> None:
    path, _ = server
    with pytest.raises(h2transport.CallError) as failed:
        call(path, "/masqd.api.v1.Control/NoSuchMethod")
    assert failed.value.code == h2transport.UNIMPLEMENTED


def test_slow_server_gives_deadline_exceeded_at_the_deadline(server: tuple[str, Servicer]) -> None:
    """The server took the call but answers after the deadline: DEADLINE_EXCEEDED when the
    deadline is up, not when the server is done."""
    path, servicer = server
    servicer.delay = 3.0
    start = time.monotonic()
    with pytest.raises(h2transport.CallError) as failed:
        call(path, timeout=0.4)
    assert failed.value.code == h2transport.DEADLINE_EXCEEDED
    assert 0.35 <= time.monotonic() - start < 1.5


def test_server_that_never_answers(short_dir: Path) -> None:
    """A peer that accepts the connection and then says nothing (a hung masqd): the call
    ends at its deadline as unreachable."""
    path = str(short_dir / "mute.sock")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        listener.listen(1)
        start = time.monotonic()
        with pytest.raises(h2transport.CallError) as failed:
            call(path, timeout=0.5)
    assert failed.value.code == h2transport.DEADLINE_EXCEEDED and failed.value.unreachable
    assert 0.45 <= time.monotonic() - start < 2.0


def test_no_socket_fails_at_once(short_dir: Path) -> None:
    start = time.monotonic()
    with pytest.raises(h2transport.CallError) as failed:
        call(str(short_dir / "absent.sock"), timeout=5.0)
    assert failed.value.code == h2transport.UNAVAILABLE and failed.value.unreachable
    assert "no socket" in failed.value.message
    assert time.monotonic() - start < 0.5


def test_path_that_is_not_a_socket(short_dir: Path) -> None:
    (short_dir / "file").write_text("")
    with pytest.raises(h2transport.CallError) as failed:
        call(str(short_dir / "file"))
    assert failed.value.unreachable and "not a socket" in failed.value.message


def test_socket_nobody_listens_on_is_retried_until_the_deadline(short_dir: Path) -> None:
    """A socket file left by a killed server refuses connections: retried, then
    DEADLINE_EXCEEDED (unreachable) at the deadline."""
    path = str(short_dir / "stale.sock")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(path)  # bound, never listening
        start = time.monotonic()
        with pytest.raises(h2transport.CallError) as failed:
            call(path, timeout=0.5)
    assert failed.value.code == h2transport.DEADLINE_EXCEEDED and failed.value.unreachable
    assert 0.45 <= time.monotonic() - start < 2.0


def test_server_restarting_within_the_deadline_is_reached(short_dir: Path) -> None:
    """A stale socket, then the server comes back on it within the deadline: the call gets
    through (masqd restarting while a pod starts)."""
    path = str(short_dir / "restart.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    servicer = Servicer()
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_ControlServicer_to_server(servicer, srv)

    def come_back() -> None:
        time.sleep(0.3)
        stale.close()
        Path(path).unlink()
        srv.add_insecure_port(f"unix:{path}")
        srv.start()

    thread = threading.Thread(target=come_back)
    thread.start()
    try:
        answer = pb.ResyncResponse.FromString(call(path, timeout=5.0))
        assert len(answer.results) == 2
    finally:
        thread.join()
        srv.stop(0).wait(5)


def test_large_answer_spans_frames_and_windows(server: tuple[str, Servicer]) -> None:
    """An answer much larger than HTTP/2's initial 64 KiB window and 16 KiB frames arrives
    whole (the window is opened once at the start)."""
    path, servicer = server
    servicer.rules = 3000
    raw = call(path, GET_RULES)
    assert len(raw) > 200_000
    answer = pb.GetRulesResponse.FromString(raw)
    assert len(answer.families[0].live) == 3000


# ---- HPACK ---------------------------------------------------------------------------------


def test_static_table_is_rfc_7541s() -> None:
    assert hpack.STATIC_TABLE == hpack_lib.table.HeaderTable.STATIC_TABLE


def test_huffman_code_is_rfc_7541s() -> None:
    """The canonical code from our lengths is the code of the RFC (as the hpack library
    carries it), symbol for symbol."""
    from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH

    codes = {symbol: (length, code) for (length, code), symbol in hpack.huffman_codes().items()}
    assert all(codes[s] == (REQUEST_CODES_LENGTH[s], REQUEST_CODES[s]) for s in range(257))


def test_decoder_reads_what_an_independent_encoder_writes() -> None:
    """Many header blocks on one connection, Huffman or not, indexed or not: the same headers
    come out, the dynamic table staying in step across blocks."""
    rng = random.Random(7)
    encoder = hpack_lib.Encoder()
    decoder = hpack.Decoder()
    names = [b":status", b"content-type", b"grpc-status", b"grpc-message", b"x-custom", b"date"]
    for _ in range(300):
        headers = []
        for _ in range(rng.randint(1, 6)):
            value = bytes(rng.randrange(32, 127) for _ in range(rng.randint(0, 40)))
            headers.append((rng.choice(names), rng.choice([value, b"200", b"0"])))
        block = encoder.encode(headers, huffman=rng.random() < 0.5)
        assert decoder.decode(block) == headers


def test_decoder_follows_table_size_updates() -> None:
    encoder = hpack_lib.Encoder()
    decoder = hpack.Decoder()
    assert decoder.decode(encoder.encode([(b"x-a", b"1" * 100)])) == [(b"x-a", b"1" * 100)]
    encoder.header_table_size = 0  # the next block starts with a size update, evicting all
    assert decoder.decode(encoder.encode([(b"x-b", b"2")])) == [(b"x-b", b"2")]
    assert decoder.table == [] and decoder.max_size == 0


@pytest.mark.parametrize(
    "block",
    [b"\xbf", b"\x41\x85abc", b"\x00\x81\xff", b"\x3f\xe2\x1f", b"\x82\x7f"],
    ids=["bad-index", "truncated", "bad-huffman", "table-too-big", "truncated-integer"],
)
def test_invalid_blocks_raise(block: bytes) -> None:
    with pytest.raises(hpack.HpackError):
        hpack.Decoder().decode(block)


def test_our_encoding_decodes_with_an_independent_decoder() -> None:
    headers = [(b":method", b"POST"), (b":path", b"/a/B"), (b"grpc-timeout", b"1999m")]
    assert hpack_lib.Decoder().decode(hpack.encode(headers), raw=True) == headers


# ---- the messages ----------------------------------------------------------------------------


def field_numbers(message: Any) -> dict[str, int]:
    return {f.name: f.number for f in message.DESCRIPTOR.fields}


def test_field_numbers_are_the_contracts() -> None:
    """The numbers masqd.client.wire writes and reads are those of control.proto."""
    assert field_numbers(pb.ResyncRequest) == {"family": 1, "no_wait": 2, "reason": 3}
    assert field_numbers(pb.ResyncResponse) == {"results": 1}
    assert {k: v for k, v in field_numbers(pb.SyncResult).items() if v <= 3} == {
        "family": 1,
        "ok": 2,
        "error": 3,
    }
    assert field_numbers(pb.GetRulesResponse) == {"families": 1}
    assert field_numbers(pb.FamilyRules) == {
        "family": 1,
        "chain": 2,
        "chain_exists": 3,
        "jump_present": 4,
        "live": 5,
        "desired": 6,
        "in_sync": 7,
        "error": 8,
        "table": 9,  # the nftables backend's table: wire reads in_sync, which both backends set
    }
    assert field_numbers(pb.GetStatusRequest) == {} and field_numbers(pb.GetRulesRequest) == {
        "family": 1
    }
    assert wire.SYNC_REASON_CNI == pb.SYNC_REASON_CNI
    assert {
        v.number: v.name.removeprefix("FAMILY_").lower() for v in pb.Family.DESCRIPTOR.values
    } == wire.FAMILY_NAMES


@pytest.mark.parametrize(
    ("reason", "no_wait", "family"),
    [(5, False, 0), (5, True, 2), (4, False, 1), (0, False, 0)],
)
def test_resync_request_is_what_protobuf_reads(reason: int, no_wait: bool, family: int) -> None:
    raw = wire.resync_request(reason, no_wait, family)
    assert pb.ResyncRequest.FromString(raw) == pb.ResyncRequest(
        reason=reason, no_wait=no_wait, family=family
    )
    assert (
        raw == pb.ResyncRequest(reason=reason, no_wait=no_wait, family=family).SerializeToString()
    )


def test_resync_response_reads_what_protobuf_writes() -> None:
    response = pb.ResyncResponse(
        results=[
            pb.SyncResult(family=pb.FAMILY_IPV4, ok=True, changed=True, reason=5),
            pb.SyncResult(family=pb.FAMILY_IPV6, ok=False, error="lock: ü"),
        ]
    )
    response.results[0].duration.FromMilliseconds(1500)  # a field we skip over
    results = wire.resync_response(response.SerializeToString())
    assert [(r.family, r.ok, r.error) for r in results] == [
        ("ipv4", True, ""),
        ("ipv6", False, "lock: ü"),
    ]


def test_get_rules_response_reads_what_protobuf_writes() -> None:
    rules = pb.FamilyRules(
        family=pb.FAMILY_IPV6,
        chain="IP-MASQ-AGENT",
        chain_exists=True,
        jump_present=True,
        live=[pb.LiveRule(spec="-A X", packets=2**40)] * 3,
        desired=["-A X", "-A Y"],
        in_sync=False,
        error="boom",
    )
    (read,) = wire.get_rules_response(pb.GetRulesResponse(families=[rules]).SerializeToString())
    assert (read.family, read.chain, read.chain_exists, read.jump_present) == (
        "ipv6",
        "IP-MASQ-AGENT",
        True,
        True,
    )
    assert (read.live, read.desired, read.in_sync, read.error) == (3, 2, False, "boom")


@pytest.mark.parametrize("raw", [b"\x0a\x05ab", b"\x08", b"\x0f", b"\x80" * 11])
def test_malformed_messages_raise(raw: bytes) -> None:
    with pytest.raises(wire.DecodeError):
        wire.resync_response(raw)
