"""masqctl against a real masqd in a network namespace, and offline: every command, its human
and machine output, and its exit codes (0 ok, 1 failed, 2 usage, 3 masqd unreachable)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format

from masqctl.cli import main
from masqd.api.v1 import control_pb2 as pb
from masqd.core.config import parse_config
from masqd.core.model import Family
from masqd.core.rules import RenderOptions, render
from tests.conftest import require_root
from tests.support import netns
from tests.support.daemon import Masqd, quiet_masqd, wait_until
from tests.support.scenario import put

CONFIG = """\
nonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12, fc00::/7]
masqOutBound: true
"""
HEADER = ["pkts", "bytes", "target", "prot", "opt", "in", "out", "source", "destination"]


@dataclass
class Run:
    code: int
    out: str
    err: str


@pytest.fixture
def masqctl(capsys: pytest.CaptureFixture[str]) -> Callable[..., Run]:
    """Run masqctl's main() in this process: masqctl("status", "-o", "json")."""

    def run(*argv: str) -> Run:
        capsys.readouterr()
        code = main(list(argv))
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


@dataclass
class Shared:
    ns: str
    daemon: Masqd

    @property
    def socket(self) -> str:
        return self.daemon.socket

    def iptables(self, *args: str) -> str:
        return netns.run(self.ns, "iptables-nft", *args)

    def chain(self) -> list[str]:
        out = self.iptables("-t", "nat", "-S", "IP-MASQ-AGENT")
        return [line for line in out.splitlines() if line.startswith("-A ")]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    """One masqd (nft, drift checks off) for the commands that leave it as they found it."""
    require_root()
    with quiet_masqd(tmp_path_factory.mktemp("masqctl"), CONFIG, "ctl") as (ns, daemon):
        yield Shared(ns, daemon)


@pytest.fixture
def on_shared(shared: Shared, monkeypatch: pytest.MonkeyPatch) -> Shared:
    """The shared masqd, found through MASQD_SOCKET."""
    monkeypatch.setenv("MASQD_SOCKET", shared.socket)
    return shared


# -- status ---------------------------------------------------------------------------------


def test_status_is_a_compact_summary(on_shared: Shared, masqctl: Callable[..., Run]) -> None:
    """`masqctl status` (socket from MASQD_SOCKET): config, interval, a line per family."""
    run = masqctl("status")
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0].startswith("masqd ") and "chain IP-MASQ-AGENT" in lines[0]
    assert lines[1].startswith(f"config    {on_shared.daemon.config}: generation 1, loaded ")
    assert lines[2] == "interval  1m0s (config)"
    table = lines[lines.index("") + 1 :]
    assert table[0].split() == [
        "FAMILY",
        "BACKEND",
        "STATE",
        "PID",
        "RESTARTS",
        "IN",
        "SYNC",
        "LAST",
        "SYNC",
        "SYNCS",
    ]
    assert [row.split()[:3] for row in table[1:]] == [
        ["ipv4", "nft", "idle"],
        ["ipv6", "nft", "idle"],
    ]
    assert all(" yes " in row and "(startup, " in row for row in table[1:])
    assert len(lines) <= 8  # at a glance


def test_status_json_is_canonical_protobuf_json(
    on_shared: Shared, masqctl: Callable[..., Run]
) -> None:
    """-o json prints the Status message as canonical protobuf JSON, defaults included."""
    run = masqctl("-o", "json", "status")
    assert run.code == 0
    data = json.loads(run.out)
    status = json_format.Parse(run.out, pb.Status())
    assert status.config.generation == 1
    assert data["config"]["generation"] == "1"  # int64 as a string, as the mapping says
    assert data["config"]["error"] == ""  # default values are printed
    assert [f["family"] for f in data["families"]] == ["FAMILY_IPV4", "FAMILY_IPV6"]
    assert all(f["inSync"] is True for f in data["families"])
    assert data["interval"]["effective"] == "60s"


def test_status_yaml_is_the_json_as_yaml(on_shared: Shared, masqctl: Callable[..., Run]) -> None:
    """-o yaml (here after the command) is the same document as -o json."""
    as_json = json.loads(masqctl("status", "-o", "json").out)
    run = masqctl("status", "-o", "yaml")
    assert run.code == 0
    assert yaml.safe_load(run.out) == as_json


def test_socket_flag_wins_over_the_environment(
    shared: Shared, masqctl: Callable[..., Run], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """--socket, before or after the command, overrides MASQD_SOCKET."""
    monkeypatch.setenv("MASQD_SOCKET", str(tmp_path / "nothing.sock"))
    assert masqctl("--socket", shared.socket, "status").code == 0
    assert masqctl("status", "--socket", shared.socket).code == 0
    assert masqctl("status").code == 3


# -- resync ---------------------------------------------------------------------------------


def test_resync_prints_each_familys_result(on_shared: Shared, masqctl: Callable[..., Run]) -> None:
    """`masqctl resync` waits and prints one result line per family; exit 0 when all ok."""
    run = masqctl("resync")
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert [line.split()[:3] for line in lines] == [
        ["ipv4", "ok,", "unchanged,"],
        ["ipv6", "ok,", "unchanged,"],
    ]


def test_resync_of_one_family_reports_changed_in_json(
    on_shared: Shared, masqctl: Callable[..., Run]
) -> None:
    """`resync --family ipv4 -o json` after a flush: one result, changed, the chain restored."""
    want = on_shared.chain()
    on_shared.iptables("-t", "nat", "-F", "IP-MASQ-AGENT")
    run = masqctl("resync", "--family", "ipv4", "--timeout", "5s", "-o", "json")
    assert run.code == 0
    (result,) = json.loads(run.out)["results"]
    assert result["family"] == "FAMILY_IPV4" and result["ok"] and result["changed"]
    assert result["reason"] == "SYNC_REASON_API"
    assert on_shared.chain() == want


def test_resync_no_wait_returns_once_queued(on_shared: Shared, masqctl: Callable[..., Run]) -> None:
    """`resync --no-wait` says the request is queued and exits 0."""
    run = masqctl("resync", "--no-wait")
    assert (run.code, run.out.strip()) == (0, "resync requested")


# -- rules ----------------------------------------------------------------------------------


def test_rules_look_like_iptables_list(on_shared: Shared, masqctl: Callable[..., Run]) -> None:
    """`masqctl rules`: per family a title saying in sync, then iptables -L -n -v columns."""
    run = masqctl("rules")
    assert run.code == 0
    v4, v6 = run.out.split("\n\n")
    for block, anywhere in ((v4, "0.0.0.0/0"), (v6, "::/0")):
        title, header, *rows = block.splitlines()
        assert title.endswith("in sync with the config")
        assert header.split() == HEADER
        assert rows[0].split()[:9] == [
            "0",
            "0",
            "RETURN",
            "all",
            "--",
            "*",
            "*",
            anywhere,
            rows[0].split()[8],
        ]
        assert all("/* ip-masq-agent: " in row for row in rows)
        assert rows[-1].split()[2] == "MASQUERADE"
    assert v4.splitlines()[0] == "Chain IP-MASQ-AGENT (ipv4): in sync with the config"
    assert "10.0.0.0/8" in v4 and "fc00::/7" in v6


def test_rules_show_what_differs_when_out_of_sync(
    on_shared: Shared, masqctl: Callable[..., Run]
) -> None:
    """A rule added behind masqd's back: `rules` says OUT OF SYNC and names it; resync fixes."""
    on_shared.iptables("-t", "nat", "-A", "IP-MASQ-AGENT", "-d", "198.51.100.0/24", "-j", "RETURN")
    run = masqctl("rules", "--family", "ipv4")
    assert run.code == 0
    assert "OUT OF SYNC with the config" in run.out.splitlines()[0]
    assert "  unexpected: -A IP-MASQ-AGENT -d 198.51.100.0/24 -j RETURN" in run.out
    assert "changed" in masqctl("resync", "--family", "ipv4").out
    assert "in sync with the config" in masqctl("rules", "--family", "ipv4").out


def test_rules_counters_rise_after_packets_cross_a_rule(
    topo: netns.Topology,
    start_masqd: Callable[..., Masqd],
    masqctl: Callable[..., Run],
) -> None:
    """Packets from a pod to the internet cross the MASQUERADE rule: its counters in
    `masqctl rules` (and -o json) go from 0 to at least one packet, on both backends."""
    daemon = start_masqd("masqOutBound: true\n")

    def masquerade_rule(family: str) -> dict[str, str]:
        run = masqctl("--socket", daemon.socket, "-o", "json", "rules", "--family", family)
        (rules,) = json.loads(run.out)["families"]
        return next(r for r in rules["live"] if r["target"] == "MASQUERADE")

    assert masquerade_rule("ipv4")["packets"] == "0"
    assert masquerade_rule("ipv6")["packets"] == "0"
    assert topo.source_seen(netns.DEST_V4["internet"]) == netns.NODE_UPLINK_V4
    assert topo.source_seen(netns.DEST_V6["internet"]) == netns.NODE_UPLINK_V6
    for family in ("ipv4", "ipv6"):
        rule = masquerade_rule(family)
        assert int(rule["packets"]) >= 1 and int(rule["bytes"]) > 0
    table = masqctl("--socket", daemon.socket, "rules", "--family", "ipv4").out
    row = next(line for line in table.splitlines()[2:] if line.split()[2] == "MASQUERADE")
    assert int(row.split()[0]) >= 1 and int(row.split()[1]) > 0, table


# -- interval -------------------------------------------------------------------------------


def test_interval_set_then_clear(on_shared: Shared, masqctl: Callable[..., Run]) -> None:
    """`interval set 5s --ttl 10m` overrides with an expiry; `interval clear` ends it."""
    run = masqctl("interval", "set", "5s", "--ttl", "10m")
    assert run.code == 0, run.err
    assert run.out.startswith("interval  5s (override until ")
    assert "left; configured 1m0s)" in run.out
    interval = json.loads(masqctl("-o", "json", "status").out)["interval"]
    assert interval["source"] == "override" and interval["effective"] == "5s"
    assert interval["overrideExpiresAt"]
    run = masqctl("interval", "clear")
    assert (run.code, run.out.strip()) == (0, "interval  1m0s (config)")


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["5x", "--ttl", "1m"], "invalid duration '5x'"),
        (["5s", "--ttl", "soon"], "invalid duration 'soon'"),
        (["5s"], "the following arguments are required: --ttl"),
        (["0.5s", "--ttl", "1m"], "argument DURATION: 500ms is out of bounds"),
        (["25h", "--ttl", "1m"], "is out of bounds; it must be at least 1s and at most 24h0m0s"),
        (["5s", "--ttl", "25h"], "argument --ttl: 25h0m0s is out of bounds"),
        (["5s", "--ttl", "0s"], "argument --ttl: 0s is out of bounds; it must be more than 0s"),
        (["9" * 40 + "h", "--ttl", "1m"], "is out of bounds"),
        (["9" * 400 + "h", "--ttl", "1m"], "is too long to be a duration"),
    ],
)
def test_interval_set_with_a_bad_value_is_a_usage_error(
    on_shared: Shared, masqctl: Callable[..., Run], argv: list[str], words: str
) -> None:
    """A duration masqctl cannot parse, or one out of masqd's bounds, exits 2 saying why
    before anything is asked (masqd's own check is the API's, tests/kernel/test_api.py)."""
    run = masqctl("interval", "set", *argv)
    assert run.code == 2
    assert words in run.err
    assert json.loads(masqctl("-o", "json", "status").out)["interval"]["source"] == "config"


# -- watch ----------------------------------------------------------------------------------


@pytest.mark.parametrize("output", ["table", "json"])
def test_watch_prints_events_as_they_happen(shared: Shared, output: str) -> None:
    """`masqctl watch --count 2` prints the SYNC_STARTED and SYNC_FINISHED of a resync."""
    argv = [sys.executable, "-m", "masqctl.cli", "--socket", shared.socket, "-o", output]
    watcher = subprocess.Popen(
        [*argv, "watch", "--count", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        # Resync until the watcher has seen its two events (it may subscribe after the first).
        def done() -> bool:
            main(["--socket", shared.socket, "resync", "--family", "ipv4", "--no-wait"])
            return watcher.poll() is not None

        wait_until(done, timeout=20, interval=0.3)
        out, err = watcher.communicate(timeout=5)
    finally:
        watcher.kill()
    assert watcher.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 2
    if output == "json":
        events = [json_format.Parse(line, pb.Event()) for line in lines]
        kinds = [pb.Event.Kind.Name(e.kind) for e in events]
        assert kinds == ["SYNC_STARTED", "SYNC_FINISHED"]
        assert events[1].result.ok and events[1].family == pb.FAMILY_IPV4
    else:
        assert lines[0].split()[1:3] == ["SYNC_STARTED", "ipv4"]
        assert lines[1].split()[1:5] == ["SYNC_FINISHED", "ipv4", "api", "sync"]


# -- health ---------------------------------------------------------------------------------


def test_health_exits_0_when_masqd_serves_in_sync(
    on_shared: Shared, masqctl: Callable[..., Run]
) -> None:
    """`masqctl health` exits 0 when every family is in sync; --family checks one."""
    run = masqctl("health")
    assert (run.code, run.out.strip()) == (0, "ok: masqd serves and every family is in sync")
    assert masqctl("health", "--family", "ipv6").code == 0
    assert json.loads(masqctl("health", "-o", "json").out) == {"serving": True, "reasons": []}


def test_without_a_valid_config_health_fails_and_status_says_why(
    ns: str, tmp_path: Path, masqctl: Callable[..., Run]
) -> None:
    """masqd started with a bad file writes no rules: health exits 1 saying why, status shows
    the rejection, resync fails (exit 1) instead of pretending."""
    config = tmp_path / "config"
    config.write_text("masqOutBound: maybe\n")
    daemon = Masqd(ns, tmp_path, config, "--iptables-mode", "nft")
    try:
        daemon.start(wait_synced=False)
        sock = ("--socket", daemon.socket)
        wait_until(lambda: daemon.status().config.error)
        run = masqctl(*sock, "health")
        assert run.code == 1
        assert run.out.startswith("not healthy:\nno valid config loaded: masqOutBound: must be")
        status = masqctl(*sock, "status").out
        assert "no valid config loaded yet, no rules written" in status
        assert "REJECTED" in status and "(nothing)" in status
        run = masqctl(*sock, "resync", "--timeout", "5s")
        assert run.code == 1
        assert "no valid config" in run.out + run.err
    finally:
        daemon.stop()


def test_rejected_config_shows_in_status_and_the_rules_stay(
    on_shared: Shared, masqctl: Callable[..., Run]
) -> None:
    """A bad file: `masqctl status` shows REJECTED with the reason and that the last good
    generation stays in force; the chain is untouched; the good file clears it again."""
    chain = on_shared.chain()
    config = on_shared.daemon.config
    try:
        put(config, "nonMasqueradeCIDRs: [10.0.0.1/8]\n")
        wait_until(lambda: on_shared.daemon.status().config.error)
        run = masqctl("status")
        assert run.code == 0
        rejected = next(line for line in run.out.splitlines() if "REJECTED" in line)
        assert "host bits are set" in rejected and "10.0.0.1/8" in rejected
        assert rejected.endswith("(generation 1 stays in force)")
        data = json.loads(masqctl("-o", "json", "status").out)["config"]
        assert "host bits are set" in data["error"] and data["errorAt"]
        assert on_shared.chain() == chain
        assert masqctl("health").code == 0  # the rules in force are still in sync
    finally:
        put(config, CONFIG)
    wait_until(lambda: not on_shared.daemon.status().config.error)
    assert "REJECTED" not in masqctl("status").out


# -- masqd unreachable ----------------------------------------------------------------------

ONLINE = [
    ["status"],
    ["resync"],
    ["rules"],
    ["interval", "set", "5s", "--ttl", "1m"],
    ["interval", "clear"],
    ["watch"],
    ["health"],
]


@pytest.mark.parametrize("argv", ONLINE, ids=" ".join)
def test_no_masqd_exits_3_naming_the_socket(
    masqctl: Callable[..., Run], tmp_path: Path, argv: list[str]
) -> None:
    """Every command that needs masqd exits 3 when there is no socket, naming the path."""
    path = str(tmp_path / "masqd.sock")
    run = masqctl("--socket", path, *argv)
    assert run.code == 3
    assert run.err.startswith(f"masqctl: masqd is unreachable on {path}: no such socket")


def test_stale_socket_exits_3_naming_the_socket(
    masqctl: Callable[..., Run], tmp_path: Path
) -> None:
    """A socket file nobody listens on (a killed masqd's) is unreachable too: exit 3."""
    path = str(tmp_path / "stale.sock")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(path)
    run = masqctl("--socket", path, "health")
    assert run.code == 3
    assert run.err.startswith(f"masqctl: masqd is unreachable on {path}: connection refused")


def test_the_masqctl_command_is_installed(tmp_path: Path) -> None:
    """The console script runs: --help exits 0, a missing masqd exits 3 with the message."""
    helped = subprocess.run(["masqctl", "--help"], capture_output=True, text=True, timeout=30)
    assert helped.returncode == 0 and "exit codes: 0 ok" in helped.stdout
    path = str(tmp_path / "none.sock")
    env = {**os.environ, "MASQD_SOCKET": path}
    run = subprocess.run(["masqctl", "status"], capture_output=True, text=True, env=env, timeout=30)
    assert run.returncode == 3 and path in run.stderr


# -- usage ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["bogus"],
        ["-o", "xml", "status"],
        ["resync", "--timeout", "0s"],
        ["resync", "--timeout", "ten"],
        ["rules", "--family", "ipv5"],
        ["interval"],
        ["config"],
        ["config", "render"],
        ["watch", "--count", "x"],
    ],
    ids=lambda argv: " ".join(argv) or "(nothing)",
)
def test_usage_errors_exit_2_with_usage(masqctl: Callable[..., Run], argv: list[str]) -> None:
    """A command line masqctl cannot use exits 2 and prints a usage message."""
    run = masqctl(*argv)
    assert run.code == 2
    assert "usage: masqctl" in run.err


# -- config validate and render (offline) ---------------------------------------------------


def test_config_validate_accepts_a_good_file_and_prints_warnings(
    masqctl: Callable[..., Run], tmp_path: Path
) -> None:
    """A valid file exits 0; unknown keys and duplicates are printed as warnings."""
    path = tmp_path / "config"
    path.write_text("masqOutBond: true\nnonMasqueradeCIDRs: [10.0.0.0/8, 10.0.0.0/8]\n")
    run = masqctl("config", "validate", str(path))
    assert run.code == 0
    assert run.out.splitlines() == [
        f"{path}: valid",
        "warning: unknown key 'masqOutBond' is ignored; did you mean 'masqOutBound'?",
        "warning: nonMasqueradeCIDRs: 10.0.0.0/8 is listed more than once",
        "nftables: nft --check accepts the transactions (ipv4, ipv6)",
    ]
    data = json.loads(masqctl("config", "validate", "-o", "json", str(path)).out)
    assert data["valid"] and len(data["warnings"]) == 2 and data["nftCheck"] == "accepted"
    assert data["config"]["nonMasqueradeCIDRs"] == ["10.0.0.0/8", "10.0.0.0/8"]
    empty = tmp_path / "empty"
    empty.write_text("")
    run = masqctl("config", "validate", str(empty))
    assert run.out.splitlines()[0] == f"{empty}: valid (all defaults)"


@pytest.mark.parametrize(
    ("text", "flags", "reason"),
    [
        ("nonMasqueradeCIDRs: [10.0.0.1/8]\n", [], "host bits are set"),
        ("masqOutBound: yes please\n", [], "masqOutBound: must be true or false"),
        ("resyncInterval: 90\n", [], "resyncInterval: must be a duration string"),
        ("nonMasqueradeCIDRs: [fc00::/7]\n", ["--enable-ipv6=false"], "IPv6 is disabled"),
        ("[unclosed\n", [], "not valid YAML or JSON"),
    ],
)
def test_config_validate_rejects_a_bad_file_saying_why(
    masqctl: Callable[..., Run], tmp_path: Path, text: str, flags: list[str], reason: str
) -> None:
    """An invalid file exits 1 with masqd's reason (flags such as --enable-ipv6 apply)."""
    path = tmp_path / "config"
    path.write_text(text)
    run = masqctl("config", "validate", str(path), *flags)
    assert run.code == 1
    assert run.err.startswith(f"masqctl: {path}: invalid: ") and reason in run.err


def test_config_validate_has_the_kernel_check_the_nftables_rules(
    masqctl: Callable[..., Run], tmp_path: Path
) -> None:
    """nft --check (in a network namespace of its own) judges the nftables transactions: an
    entry inside another is a warning, and a table name nft cannot take fails validation with
    nft's own words."""
    path = tmp_path / "config"
    path.write_text("nonMasqueradeCIDRs: [10.0.0.0/8, 10.1.0.0/16]\n")
    run = masqctl("config", "validate", str(path))
    assert run.code == 0
    assert "warning: nonMasqueradeCIDRs: 10.1.0.0/16 lies inside 10.0.0.0/8 and adds nothing" in (
        run.out.splitlines()
    )
    run = masqctl("config", "validate", str(path), "--nft-table", "flush")
    assert run.code == 1
    assert "nft --check refuses the nftables rules" in run.err and "syntax error" in run.err


def test_config_render_nftables_is_masqds_exact_transaction(
    masqctl: Callable[..., Run], tmp_path: Path, ns: str
) -> None:
    """`config render --backend nftables` prints exactly nftrules.render's text per family,
    each part accepted by `nft -f` as it is, comment line included."""
    from masqd.core import nftrules

    path = tmp_path / "config"
    path.write_text(CONFIG)
    run = masqctl("config", "render", str(path), "--backend", "nftables", "--family", "ipv6")
    assert run.out == nftrules.render(parse_config(CONFIG).config, Family.IPV6, RenderOptions())
    both = masqctl("config", "render", str(path), "--backend", "nftables").out
    v4, v6 = both.split("\n# ipv6: ")
    assert v4.startswith("# ipv4: input for `nft -f -`\ntable ip masqd {\n")
    netns.run(ns, "nft", "-f", "-", input=v4)
    netns.run(ns, "nft", "-f", "-", input="# ipv6: " + v6)
    assert "fc00::/7" in netns.run(ns, "nft", "list", "table", "ip6", "masqd")


def test_config_validate_of_a_missing_file_fails(
    masqctl: Callable[..., Run], tmp_path: Path
) -> None:
    """A file that does not exist is not valid: exit 1, saying what masqd would do."""
    run = masqctl("config", "validate", str(tmp_path / "none"))
    assert run.code == 1 and "no such file" in run.err


def test_config_validate_reads_stdin(
    masqctl: Callable[..., Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    """FILE `-` is standard input."""
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"masqOutBound: true\n")))
    assert masqctl("config", "validate", "-").out.splitlines()[0] == "-: valid"


def test_config_render_one_family_is_masqds_exact_restore_input(
    masqctl: Callable[..., Run], tmp_path: Path
) -> None:
    """`config render FILE --family ipv4` with masqd's flags prints exactly what masqd's
    renderer gives for them, nothing else."""
    path = tmp_path / "config"
    path.write_text("masqOutBound: true\nmasqueradeCIDRs: [10.10.10.10/32]\n")
    flags = ["--random-fully", "--to-ports", "1024-29999,32768-65535", "--masq-chain", "MY-MASQ"]
    run = masqctl("config", "render", str(path), "--family", "ipv4", *flags)
    assert run.code == 0
    config = parse_config(path.read_text()).config
    options = RenderOptions(
        chain="MY-MASQ", random_fully=True, to_ports=((1024, 29999), (32768, 65535))
    )
    assert run.out == render(config, Family.IPV4, options)
    assert "--random-fully" in run.out and "--to-ports 32768-65535" in run.out


def test_config_render_both_families_each_accepted_by_its_restore(
    masqctl: Callable[..., Run], tmp_path: Path, ns: str
) -> None:
    """Without --family both inputs print, each under a `# ipv4:`/`# ipv6:` comment line; each
    part, comment included, is accepted by its own iptables-restore (--test, in a namespace)."""
    path = tmp_path / "config"
    path.write_text(CONFIG)
    run = masqctl("config", "render", str(path))
    assert run.code == 0
    v4, v6 = run.out.split("\n# ipv6: ")
    v6 = "# ipv6: " + v6
    assert v4.startswith("# ipv4: input for `iptables-restore --noflush`\n*nat\n")
    assert v6.startswith("# ipv6: input for `ip6tables-restore --noflush`\n*nat\n")
    assert "fc00::/7" in v6 and "fc00::/7" not in v4
    netns.run(ns, "iptables-nft-restore", "--test", "--noflush", input=v4)
    netns.run(ns, "ip6tables-nft-restore", "--test", "--noflush", input=v6)
    path.write_text("masqOutBound: true\n")
    only_v4 = masqctl("config", "render", str(path), "--enable-ipv6=false").out
    assert not only_v4.startswith("#") and "-d 10.0.0.0/8" in only_v4
    run = masqctl("config", "render", str(path), "--family", "ipv6", "--enable-ipv6=false")
    assert run.code == 2


def test_config_render_of_an_invalid_file_fails(
    masqctl: Callable[..., Run], tmp_path: Path
) -> None:
    """Rendering an invalid file prints nothing on stdout and exits 1 saying why."""
    path = tmp_path / "config"
    path.write_text("cidrLimit: -1\n")
    run = masqctl("config", "render", str(path))
    assert (run.code, run.out) == (1, "")
    assert "cidrLimit: must not be negative" in run.err


# -- staying light --------------------------------------------------------------------------

_MODULES_AFTER = """
import sys
from masqctl.cli import main
code = main(sys.argv[1:])
print(sorted(m for m in sys.modules if m.split(".")[0] in ("grpc", "yaml", "google")))
"""


def _imported(*argv: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", _MODULES_AFTER, *argv], capture_output=True, text=True, timeout=30
    ).stdout
    return list(eval(out.splitlines()[-1]))


def test_offline_commands_do_not_import_grpc(tmp_path: Path) -> None:
    """`config validate|render` never import gRPC or protobuf."""
    path = tmp_path / "config"
    path.write_text(CONFIG)
    for argv in (["config", "validate", str(path)], ["config", "render", str(path)]):
        modules = _imported(*argv)
        assert not [m for m in modules if m.startswith(("grpc", "google"))], modules


def test_health_probe_does_not_import_yaml(shared: Shared) -> None:
    """`masqctl health` (a probe run every few seconds) imports neither YAML nor json_format."""
    modules = _imported("--socket", shared.socket, "health")
    assert "grpc" in modules
    assert "yaml" not in modules
    assert "google.protobuf.json_format" not in modules


def test_health_answers_quickly(shared: Shared) -> None:
    """A whole `masqctl health` process, start to exit, stays well under a probe's timeout."""
    start = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "masqctl.cli", "--socket", shared.socket, "health"],
        capture_output=True,
        timeout=30,
    )
    assert run.returncode == 0
    assert time.monotonic() - start < 3.0
