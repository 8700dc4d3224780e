"""The control API of a real masqd in a network namespace: every RPC, coalescing, the override,
Watch, the standard health and reflection services, and the socket's ownership rules."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from masqd.api.v1 import control_pb2 as pb
from masqd.api.v1 import control_pb2_grpc as pb_grpc
from tests.conftest import require_root
from tests.support import netns
from tests.support.daemon import Masqd, quiet_masqd, wait_until
from tests.support.spec import SPEC_RPCS

CONFIG = """\
nonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12, fc00::/7]
masqOutBound: true
resyncInterval: 60s
"""
OTHER_CONFIG = CONFIG.replace("172.16.0.0/12", "192.168.0.0/16")
BOTH = (pb.FAMILY_IPV4, pb.FAMILY_IPV6)


class Shared:
    """One masqd for the tests that leave it as they found it; drift checks off, so every
    sync in these tests is one a test asked for."""

    def __init__(self, ns: str, daemon: Masqd) -> None:
        self.ns = ns
        self.daemon = daemon
        self.stub = daemon.stub()

    def iptables(self, family: int, *args: str) -> str:
        tool = "iptables-nft" if family == 4 else "ip6tables-nft"
        return netns.run(self.ns, tool, *args)

    def chain(self, family: int) -> list[str]:
        out = self.iptables(family, "-t", "nat", "-S", "IP-MASQ-AGENT")
        return [line for line in out.splitlines() if line.startswith("-A ")]

    def set_config(self, text: str) -> None:
        self.daemon.config.write_text(text)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    require_root()
    with quiet_masqd(tmp_path_factory.mktemp("api"), CONFIG, "api") as (ns, daemon):
        yield Shared(ns, daemon)


@pytest.fixture
def events(shared: Shared) -> Iterator[EventLog]:
    log = EventLog(shared.stub)
    yield log
    log.close()


class EventLog:
    """A Watch stream read on a thread; subscribed by the time the constructor returns."""

    def __init__(self, stub: pb_grpc.ControlStub) -> None:
        self.call = stub.Watch(pb.WatchRequest())
        self.call.initial_metadata()  # masqd sends its headers once we are subscribed
        self.queue: queue.Queue[pb.Event] = queue.Queue()
        self.seen: list[pb.Event] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        try:
            for event in self.call:
                self.queue.put(event)
        except grpc.RpcError:
            pass

    def wait_for(self, predicate: Callable[[pb.Event], bool], timeout: float = 10.0) -> pb.Event:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                event = self.queue.get(timeout=max(left, 0.01))
            except queue.Empty:
                kinds = [pb.Event.Kind.Name(e.kind) for e in self.seen]
                raise AssertionError(f"no such event within {timeout}s; saw {kinds}") from None
            self.seen.append(event)
            if predicate(event):
                return event

    def close(self) -> None:
        self.call.cancel()


def kind(name: str, family: int | None = None) -> Callable[[pb.Event], bool]:
    return lambda e: e.kind == pb.Event.Kind.Value(name) and family in (None, e.family)


def sync_count(status: pb.Status, family: int, reason: int) -> int:
    fs = next(f for f in status.families if f.family == family)
    return next((c.count for c in fs.sync_counts if c.reason == reason), 0)


def seconds(message: object) -> float:
    return float(message.ToNanoseconds()) / 1e9  # type: ignore[attr-defined]


def abort_code(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


# -- Status and Rules ----------------------------------------------------------------------


def test_status_reports_config_interval_and_each_family(shared: Shared) -> None:
    """GetStatus: the config in force, the interval and its source, each family's worker."""
    status = shared.stub.GetStatus(pb.GetStatusRequest(), timeout=5)
    assert status.config.path == str(shared.daemon.config)
    assert status.config.generation >= 1
    assert status.config.error == ""
    assert seconds(status.config.loaded_at) > time.time() - 600
    assert seconds(status.interval.effective) == 60
    assert seconds(status.interval.configured) == 60
    assert status.interval.source == "config"
    assert status.chain == "IP-MASQ-AGENT"
    assert status.version
    assert [f.family for f in status.families] == list(BOTH)
    for f in status.families:
        assert f.pid > 0 and f.state == "idle" and f.in_sync and f.backend == "nft"
        assert f.last_sync.ok and f.last_sync.family == f.family
        assert sync_count(status, f.family, pb.SYNC_REASON_STARTUP) == 1
        assert {c.reason for c in f.sync_counts} >= {
            pb.SYNC_REASON_STARTUP,
            pb.SYNC_REASON_INTERVAL,
            pb.SYNC_REASON_CONFIG_CHANGE,
            pb.SYNC_REASON_API,
            pb.SYNC_REASON_CNI,
            pb.SYNC_REASON_DRIFT_REPAIR,
        }


def test_rules_return_live_chain_with_counters_desired_and_match(shared: Shared) -> None:
    """GetRules: per family the live chain as the kernel has it, the desired rules, in sync."""
    response = shared.stub.GetRules(pb.GetRulesRequest(), timeout=5)
    assert [f.family for f in response.families] == list(BOTH)
    for fr, version in zip(response.families, (4, 6), strict=True):
        assert fr.chain == "IP-MASQ-AGENT" and fr.chain_exists and fr.jump_present
        assert fr.in_sync and fr.error == ""
        assert [r.spec for r in fr.live] == list(fr.desired) == shared.chain(version)
        assert fr.live[-1].target == "MASQUERADE" and fr.live[-1].destination == ""
        assert fr.live[0].target == "RETURN"
        assert fr.live[0].destination == ("169.254.0.0/16" if version == 4 else "fe80::/10")
        assert fr.live[0].comment.startswith("ip-masq-agent: ")
        assert all(r.packets == 0 and r.bytes == 0 for r in fr.live)  # no traffic here


def test_rules_of_one_family(shared: Shared) -> None:
    """GetRules with a family answers for that family only."""
    response = shared.stub.GetRules(pb.GetRulesRequest(family=pb.FAMILY_IPV6), timeout=5)
    assert [f.family for f in response.families] == [pb.FAMILY_IPV6]


def test_rules_show_a_tampered_chain_out_of_sync(shared: Shared) -> None:
    """A rule someone added to our chain shows in the live rules, and in_sync is false."""
    rogue = ["-t", "nat", "-A", "IP-MASQ-AGENT", "-d", "198.51.100.0/24", "-j", "RETURN"]
    shared.iptables(4, *rogue)
    try:
        (fr,) = shared.stub.GetRules(pb.GetRulesRequest(family=pb.FAMILY_IPV4), timeout=5).families
        assert not fr.in_sync
        assert fr.live[-1].destination == "198.51.100.0/24"
        assert len(fr.live) == len(fr.desired) + 1
    finally:
        shared.stub.Resync(pb.ResyncRequest(family=pb.FAMILY_IPV4), timeout=10)
    (fr,) = shared.stub.GetRules(pb.GetRulesRequest(family=pb.FAMILY_IPV4), timeout=5).families
    assert fr.in_sync


# -- Resync --------------------------------------------------------------------------------


def test_resync_waits_for_a_new_sync_of_each_family(shared: Shared) -> None:
    """Resync with wait returns each family's result, from a sync that finished after the call."""
    before = time.time()
    response = shared.stub.Resync(pb.ResyncRequest(), timeout=10)
    assert [r.family for r in response.results] == list(BOTH)
    for r in response.results:
        assert r.ok and not r.changed and r.error == ""
        assert r.reason == pb.SYNC_REASON_API
        assert seconds(r.finished_at) >= before
        assert 0 < seconds(r.duration) < 10


def test_resync_rewrites_a_flushed_chain_and_says_changed(shared: Shared) -> None:
    """After someone flushed our chain, Resync restores it and reports changed."""
    want = shared.chain(4)
    shared.iptables(4, "-t", "nat", "-F", "IP-MASQ-AGENT")
    response = shared.stub.Resync(pb.ResyncRequest(family=pb.FAMILY_IPV4), timeout=10)
    assert [(r.family, r.ok, r.changed) for r in response.results] == [(pb.FAMILY_IPV4, True, True)]
    assert shared.chain(4) == want


def test_resync_no_wait_returns_at_once_and_the_sync_follows(shared: Shared) -> None:
    """Resync with no_wait answers without results; the sync it asked for still runs."""
    before = shared.stub.GetStatus(pb.GetStatusRequest(), timeout=5)
    response = shared.stub.Resync(pb.ResyncRequest(no_wait=True), timeout=5)
    assert list(response.results) == []
    for family in BOTH:
        count = sync_count(before, family, pb.SYNC_REASON_API)
        wait_until(
            lambda f=family, c=count: sync_count(shared.daemon.status(), f, pb.SYNC_REASON_API) > c
        )


def test_resync_for_cni_is_counted_as_cni(shared: Shared) -> None:
    """A Resync with reason CNI is served and counted under CNI, not API."""
    before = shared.stub.GetStatus(pb.GetStatusRequest(), timeout=5)
    response = shared.stub.Resync(pb.ResyncRequest(reason=pb.SYNC_REASON_CNI), timeout=10)
    assert {r.reason for r in response.results} == {pb.SYNC_REASON_CNI}
    after = shared.stub.GetStatus(pb.GetStatusRequest(), timeout=5)
    for family in BOTH:
        cni = pb.SYNC_REASON_CNI
        assert sync_count(after, family, cni) == sync_count(before, family, cni) + 1


def test_burst_of_500_resyncs_from_50_clients_costs_a_handful_of_syncs(
    shared: Shared, record_property: Callable[[str, object], None]
) -> None:
    """500 concurrent waiting Resyncs from 50 channels are all answered, each by a sync that
    finished after it was sent, and cost a handful of syncs per family."""
    clients, per_client = 50, 10
    before = shared.stub.GetStatus(pb.GetStatusRequest(), timeout=5)
    barrier = threading.Barrier(clients)
    answers: list[tuple[float, pb.ResyncResponse]] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def client() -> None:
        try:
            with grpc.insecure_channel(f"unix:{shared.daemon.socket}") as channel:
                stub = pb_grpc.ControlStub(channel)
                stub.GetStatus(pb.GetStatusRequest(), timeout=10)  # connected before the burst
                barrier.wait(timeout=30)
                calls = [
                    (time.time(), stub.Resync.future(pb.ResyncRequest(), timeout=60))
                    for _ in range(per_client)
                ]
                got = [(sent, call.result()) for sent, call in calls]
            with lock:
                answers.extend(got)
        except BaseException as e:
            errors.append(e)

    start = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    elapsed = time.monotonic() - start
    assert not errors, errors[:3]
    assert len(answers) == clients * per_client
    for sent, response in answers:
        assert [r.family for r in response.results] == list(BOTH)
        assert all(r.ok for r in response.results)
        assert all(seconds(r.finished_at) >= sent for r in response.results)
    after = shared.stub.GetStatus(pb.GetStatusRequest(), timeout=5)
    api = pb.SYNC_REASON_API
    syncs = {
        pb.Family.Name(f): sync_count(after, f, api) - sync_count(before, f, api) for f in BOTH
    }
    record_property("api_syncs_per_family", syncs)
    record_property("burst_seconds", round(elapsed, 2))
    print(f"\n500 resyncs in {elapsed:.2f}s cost {syncs} API syncs")
    # Every request waiting when a sync starts is served by it: far fewer syncs than requests.
    for count in syncs.values():
        assert 1 <= count <= clients * per_client // 5, syncs


# -- bad requests ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("interval", "ttl", "words"),
    [
        (0.5, 60, "interval 0.5s is out of bounds"),
        (25 * 3600, 60, "out of bounds"),
        (-5, 60, "out of bounds"),
        (5, 0, "ttl 0s is out of bounds"),
        (5, 25 * 3600, "ttl 90000s is out of bounds"),
        (5, None, "interval and ttl are required"),
        (None, 60, "interval and ttl are required"),
    ],
)
def test_interval_override_out_of_bounds_is_invalid_argument(
    shared: Shared, interval: float | None, ttl: float | None, words: str
) -> None:
    """SetIntervalOverride outside 1s-24h (TTL: more than 0, up to 24h) or missing a field is
    INVALID_ARGUMENT with a message saying what is wrong, and changes nothing."""
    request = pb.SetIntervalOverrideRequest()
    if interval is not None:
        request.interval.FromNanoseconds(int(interval * 1e9))
    if ttl is not None:
        request.ttl.FromNanoseconds(int(ttl * 1e9))
    code, details = abort_code(lambda: shared.stub.SetIntervalOverride(request, timeout=5))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert words in details
    assert shared.stub.GetStatus(pb.GetStatusRequest(), timeout=5).interval.source == "config"


@pytest.mark.parametrize(
    ("request_", "code", "words"),
    [
        (pb.ResyncRequest(reason=pb.SYNC_REASON_INTERVAL), "INVALID_ARGUMENT", "cannot be"),
        (pb.ResyncRequest(reason=pb.SYNC_REASON_STARTUP), "INVALID_ARGUMENT", "cannot be"),
        (pb.ResyncRequest(family=7), "INVALID_ARGUMENT", "unknown family 7"),  # type: ignore[arg-type]
    ],
)
def test_bad_resync_requests_are_refused(
    shared: Shared, request_: pb.ResyncRequest, code: str, words: str
) -> None:
    """A Resync for a reason only masqd may use, or an unknown family, is INVALID_ARGUMENT."""
    got, details = abort_code(lambda: shared.stub.Resync(request_, timeout=5))
    assert got.name == code and words in details


def test_rules_of_an_unknown_family_are_invalid_argument(shared: Shared) -> None:
    """GetRules for a family value the API does not define is INVALID_ARGUMENT."""
    request = pb.GetRulesRequest(family=9)  # type: ignore[arg-type]
    code, details = abort_code(lambda: shared.stub.GetRules(request, timeout=5))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "unknown family 9" in details


# -- the interval override, Watch ----------------------------------------------------------


def test_interval_override_applies_then_expires_by_itself(shared: Shared, events: EventLog) -> None:
    """An override of 1s for 2s: status shows it with its expiry, interval syncs run every
    second, and then the configured 60s returns on its own (OVERRIDE_EXPIRED)."""
    before = shared.stub.GetStatus(pb.GetStatusRequest(), timeout=5)
    request = pb.SetIntervalOverrideRequest()
    request.interval.FromSeconds(1)
    request.ttl.FromSeconds(2)
    set_at = time.time()
    status = shared.stub.SetIntervalOverride(request, timeout=5)
    assert status.interval.source == "override"
    assert seconds(status.interval.effective) == 1
    assert seconds(status.interval.configured) == 60
    assert abs(seconds(status.interval.override_expires_at) - (set_at + 2)) < 1
    events.wait_for(kind("OVERRIDE_SET"))
    events.wait_for(kind("OVERRIDE_EXPIRED"), timeout=6)
    status = shared.stub.GetStatus(pb.GetStatusRequest(), timeout=5)
    assert status.interval.source == "config"
    assert seconds(status.interval.effective) == 60
    assert not status.interval.HasField("override_expires_at")
    interval = pb.SYNC_REASON_INTERVAL
    assert sync_count(status, pb.FAMILY_IPV4, interval) > sync_count(
        before, pb.FAMILY_IPV4, interval
    )


def test_clear_interval_override_returns_to_config(shared: Shared, events: EventLog) -> None:
    """ClearIntervalOverride ends an override at once (OVERRIDE_CLEARED)."""
    request = pb.SetIntervalOverrideRequest()
    request.interval.FromSeconds(30)
    request.ttl.FromSeconds(3600)
    assert shared.stub.SetIntervalOverride(request, timeout=5).interval.source == "override"
    status = shared.stub.ClearIntervalOverride(pb.ClearIntervalOverrideRequest(), timeout=5)
    assert status.interval.source == "config"
    assert seconds(status.interval.effective) == 60
    events.wait_for(kind("OVERRIDE_CLEARED"))


def test_watch_streams_config_and_sync_events(shared: Shared, events: EventLog) -> None:
    """Watch: a config change is CONFIG_LOADED with its generation, then config-change syncs;
    a Resync is SYNC_STARTED then SYNC_FINISHED with its result; a bad file CONFIG_REJECTED."""
    generation = shared.stub.GetStatus(pb.GetStatusRequest(), timeout=5).config.generation
    try:
        shared.set_config(OTHER_CONFIG)
        loaded = events.wait_for(kind("CONFIG_LOADED"))
        assert loaded.config_generation == generation + 1
        finished = events.wait_for(kind("SYNC_FINISHED", pb.FAMILY_IPV4))
        assert finished.result.reason == pb.SYNC_REASON_CONFIG_CHANGE and finished.result.changed

        shared.stub.Resync(pb.ResyncRequest(family=pb.FAMILY_IPV6, no_wait=True), timeout=5)
        # Syncs of an earlier test's config restore may still be on their way: ours is "api".
        started = events.wait_for(
            lambda e: kind("SYNC_STARTED", pb.FAMILY_IPV6)(e) and e.message.startswith("api ")
        )
        finished = events.wait_for(
            lambda e: (
                kind("SYNC_FINISHED", pb.FAMILY_IPV6)(e) and e.result.reason == pb.SYNC_REASON_API
            )
        )
        assert finished.result.ok
        assert seconds(finished.time) >= seconds(started.time)

        shared.set_config("nonMasqueradeCIDRs: 10.0.0.0/8\n")
        rejected = events.wait_for(kind("CONFIG_REJECTED"))
        assert "nonMasqueradeCIDRs" in rejected.message
    finally:
        shared.set_config(CONFIG)
        events.wait_for(kind("CONFIG_LOADED"))


def test_watch_and_status_report_a_restarted_worker(shared: Shared, events: EventLog) -> None:
    """A worker killed behind masqd's back is restarted by the next sync: the Resync still
    succeeds, Watch shows WORKER_RESTARTED, status a new pid and one more restart."""
    before = next(f for f in shared.daemon.status().families if f.family == pb.FAMILY_IPV6)
    os.kill(before.pid, signal.SIGKILL)
    response = shared.stub.Resync(pb.ResyncRequest(family=pb.FAMILY_IPV6), timeout=30)
    assert [r.ok for r in response.results] == [True]
    restarted = events.wait_for(kind("WORKER_RESTARTED", pb.FAMILY_IPV6))
    assert "restart" in restarted.message
    after = next(f for f in shared.daemon.status().families if f.family == pb.FAMILY_IPV6)
    assert after.restarts == before.restarts + 1
    assert after.pid not in (0, before.pid)


# -- health and reflection -----------------------------------------------------------------


def test_health_service_serves_overall_and_per_family(shared: Shared) -> None:
    """grpc.health.v1: overall, the Control service and each family are SERVING when in sync;
    an unknown name is NOT_FOUND."""
    with grpc.insecure_channel(f"unix:{shared.daemon.socket}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "masqd.api.v1.Control", "ipv4", "ipv6"):
            response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert response.status == health_pb2.HealthCheckResponse.SERVING, service
        code, _ = abort_code(
            lambda: health.Check(health_pb2.HealthCheckRequest(service="ipv5"), timeout=5)
        )
        assert code == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_services_and_describes_the_api(shared: Shared) -> None:
    """Server reflection (what `grpcurl -unix ... list` uses) lists Control, Health and
    reflection itself, and serves control.proto for the Control service."""
    with grpc.insecure_channel(f"unix:{shared.daemon.socket}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="masqd.api.v1.Control"),
        ]
        listing, described = list(stub.ServerReflectionInfo(iter(requests), timeout=5))
    names = {s.name for s in listing.list_services_response.service}
    assert names == {
        "masqd.api.v1.Control",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    from google.protobuf import descriptor_pb2

    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in described.file_descriptor_response.file_descriptor_proto
    ]
    control = next(f for f in files if f.name == "masqd/api/v1/control.proto")
    methods = {m.name for m in control.service[0].method}
    assert methods == SPEC_RPCS


# -- the socket ----------------------------------------------------------------------------


def test_socket_is_mode_0600(shared: Shared) -> None:
    """The socket is a unix socket only its owner may use (0600)."""
    st = os.stat(shared.daemon.socket)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600


def test_socket_mode_and_group_flags_widen_it(ns: str, tmp_path: Path) -> None:
    """--socket-mode 0660 --socket-group G make the socket group-usable by G."""
    import grp

    group = grp.getgrgid(os.getgid()).gr_name
    flags = ("--iptables-mode", "nft", "--socket-mode", "0660", "--socket-group", group)
    daemon = Masqd(ns, tmp_path, tmp_path / "config", *flags)
    try:
        daemon.start()
        st = os.stat(daemon.socket)
        assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == os.getgid()
    finally:
        daemon.stop()


def test_second_masqd_on_the_socket_is_refused_and_the_first_keeps_serving(
    shared: Shared,
) -> None:
    """A second masqd on a live socket exits non-zero saying so; the first keeps its socket."""
    argv = ["ip", "netns", "exec", shared.ns, sys.executable, "-m", "masqd"]
    argv += ["--config", str(shared.daemon.config), "--socket", shared.daemon.socket]
    argv += ["--iptables-mode", "nft", "--metrics-address", ""]
    second = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert second.returncode != 0
    output = second.stdout + second.stderr
    assert f"another masqd is serving on {shared.daemon.socket}" in output
    assert os.path.exists(shared.daemon.socket)
    assert shared.stub.GetStatus(pb.GetStatusRequest(), timeout=5).families


def test_stale_socket_of_a_killed_masqd_is_replaced(ns: str, tmp_path: Path) -> None:
    """After masqd is SIGKILLed its socket file stays; the next masqd replaces it and serves."""
    first = Masqd(ns, tmp_path, tmp_path / "config", "--iptables-mode", "nft")
    second = Masqd(ns, tmp_path, tmp_path / "config", "--iptables-mode", "nft")
    try:
        first.start()
        first.stop(signal.SIGKILL)
        assert os.path.exists(first.socket)
        second.start()
        assert second.status().families
    finally:
        second.stop()
        _kill_orphans(ns)


def _kill_orphans(ns: str) -> None:
    """SIGKILL whatever is left in our namespace, so a failure here cannot leak processes
    (test_lifecycle checks that a killed masqd's workers exit by themselves)."""
    for pid in netns.run(None, "ip", "netns", "pids", ns, check=False).split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
