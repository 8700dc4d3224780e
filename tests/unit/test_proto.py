"""The committed gRPC code is what `make proto` generates from protos/, and the API keeps the
shape SPEC §4 promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from masqd.api.v1 import control_pb2 as pb
from tests.support.paths import ROOT
from tests.support.spec import SPEC_RPCS

PROTO = "masqd/api/v1/control.proto"
GENERATED = ("control_pb2.py", "control_pb2_grpc.py", "control_pb2.pyi")


def test_regenerating_the_proto_changes_nothing(tmp_path: Path) -> None:
    """protoc (grpcio-tools, as `make proto` runs it) reproduces the committed files exactly."""
    argv = [sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'protos'}"]
    argv += [f"--python_out={tmp_path}", f"--grpc_python_out={tmp_path}"]
    argv += [f"--pyi_out={tmp_path}", str(ROOT / "protos" / PROTO)]
    subprocess.run(argv, check=True, capture_output=True, timeout=60)
    for name in GENERATED:
        fresh = (tmp_path / "masqd/api/v1" / name).read_text()
        committed = (ROOT / "masqd/api/v1" / name).read_text()
        assert fresh == committed, f"masqd/api/v1/{name} is stale: run `make proto`"


def test_the_proto_path_mirrors_the_package() -> None:
    """protos/masqd/api/v1/control.proto declares package masqd.api.v1, so imports resolve."""
    assert pb.DESCRIPTOR.name == PROTO
    assert pb.DESCRIPTOR.package == "masqd.api.v1"


def test_control_offers_every_rpc_of_the_spec() -> None:
    """Resync, status, rules, the override pair and a server-streaming Watch."""
    service = pb.DESCRIPTOR.services_by_name["Control"]
    methods = {m.name: m for m in service.methods}
    assert set(methods) == SPEC_RPCS
    assert methods["Watch"].server_streaming
    assert not any(m.client_streaming for m in methods.values())


def test_every_sync_reason_and_event_kind_of_the_spec_exists() -> None:
    """Sync counts by interval, config change, API, CNI, drift repair and startup; events for
    config loaded/rejected, sync started/finished/failed, worker restarted, override set/expired."""
    reasons = set(pb.SyncReason.keys())
    for name in ("STARTUP", "INTERVAL", "CONFIG_CHANGE", "API", "CNI", "DRIFT_REPAIR"):
        assert f"SYNC_REASON_{name}" in reasons
    kinds = set(pb.Event.Kind.keys())
    assert kinds >= {
        "CONFIG_LOADED",
        "CONFIG_REJECTED",
        "SYNC_STARTED",
        "SYNC_FINISHED",
        "SYNC_FAILED",
        "WORKER_RESTARTED",
        "OVERRIDE_SET",
        "OVERRIDE_EXPIRED",
    }


def test_the_family_mapping_matches_the_generated_enum() -> None:
    """masqd.api.families holds the numbers without importing protobuf; they must be the API's."""
    from masqd.api import families
    from masqd.core.model import Family

    assert families.VALUE == {Family.IPV4: pb.FAMILY_IPV4, Family.IPV6: pb.FAMILY_IPV6}
    assert families.UNSPECIFIED == pb.FAMILY_UNSPECIFIED
    assert families.value_of_label("ipv6") == pb.FAMILY_IPV6
    assert families.label_of_value(pb.FAMILY_IPV4) == "ipv4"
