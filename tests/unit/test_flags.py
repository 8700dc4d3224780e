"""Flags are validated when parsed, for masqd and masqctl alike: every value out of its range
(or not finite, or naming nothing) is a usage error, exit 2, with a message naming the value,
before anything is started or asked."""

from __future__ import annotations

import pytest

from masqctl import cli as masqctl_cli
from masqd import cli as masqd_cli

BAD_MASQD = [
    (["--socket-mode", "-1"], "--socket-mode: '-1' is not an octal mode"),
    (["--socket-mode", "77777"], "--socket-mode: '77777' is out of bounds: a mode is 0 to 0777"),
    (["--socket-mode", "1777"], "'1777' is out of bounds"),
    (["--socket-mode", "0689"], "'0689' is not an octal mode"),
    (["--drift-check-interval", "0"], "--drift-check-interval: 0s is out of bounds"),
    (["--drift-check-interval", "-1"], "-1s is out of bounds; it must be at least 100ms"),
    (["--drift-check-interval", "nan"], "nan is not a finite duration"),
    (["--drift-check-interval", "1e-9"], "1ns is out of bounds"),
    (["--drift-check-interval", "inf"], "inf is not a finite duration"),
    (["--drift-check-interval", "3601"], "1h0m1s is out of bounds; it must be at least 100ms"),
    (["--drift-check-interval", "soon"], "invalid duration 'soon'"),
    (["--socket-group", "nosuchgroup"], "--socket-group: no group 'nosuchgroup' on this node"),
    (["--socket-group", "4294967296"], "no group '4294967296'"),
    (["--health-timeout", "0s"], "--health-timeout: 0s is out of bounds"),
    (["--health-timeout", "9" * 30 + "h"], "is out of bounds; it must be at least 1s"),
    (["--health-timeout", "9" * 400 + "h"], "is too long to be a duration"),
    (["--iptables-timeout", "0.5s"], "--iptables-timeout: 500ms is out of bounds"),
    (["--retry-deadline=-1s"], "--retry-deadline: -1s is out of bounds"),
    (["--retry-deadline", "2h"], "2h0m0s is out of bounds; it must be at least 0s and at most 1h"),
    (["--masq-chain=-X"], "invalid chain name '-X'"),
    (["--metrics-address", "9153"], "'9153' is not host:port"),
]


@pytest.mark.parametrize(("argv", "words"), BAD_MASQD, ids=lambda v: " ".join(v)[:40])
def test_masqd_refuses_a_bad_flag_with_exit_2_naming_it(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        masqd_cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: masqd") and words in err, err


def test_masqd_takes_each_flag_at_its_bounds() -> None:
    args = masqd_cli.build_parser().parse_args(
        [
            "--socket-mode",
            "0777",
            "--drift-check-interval",
            "0.1",
            "--health-timeout",
            "24h",
            "--iptables-timeout",
            "5m",
            "--retry-deadline",
            "0s",
            "--socket-group",
            "0",
        ]
    )
    assert (args.socket_mode, args.drift_check_interval, args.health_timeout) == (0o777, 0.1, 86400)
    assert (args.iptables_timeout, args.retry_deadline, args.socket_group) == (300.0, 0.0, "0")
    hour = masqd_cli.build_parser().parse_args(["--drift-check-interval", "1h"])
    assert hour.drift_check_interval == 3600


def test_masqd_cleanup_refuses_a_bad_chain_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        masqd_cli.main(["cleanup", "--masq-chain", "POSTROUTING"])
    assert info.value.code == 2 and "invalid chain name 'POSTROUTING'" in capsys.readouterr().err


BAD_MASQCTL = [
    (["resync", "--timeout", "0s"], "--timeout: 0s is out of bounds; it must be more than 0s"),
    (["resync", "--timeout", "2h"], "--timeout: 2h0m0s is out of bounds"),
    (["resync", "--timeout", "9" * 30 + "h"], "is out of bounds"),
    (["resync", "--timeout", "9" * 400 + "h"], "is too long to be a duration"),
    (["resync", "--timeout", "inf"], "invalid duration 'inf'"),
    (["interval", "set", "0.5s", "--ttl", "1m"], "500ms is out of bounds; it must be at least 1s"),
    (["interval", "set", "5s", "--ttl=-1s"], "--ttl: -1s is out of bounds"),
    (["interval", "set", "5s", "--ttl", "24h1ns"], "is out of bounds; it must be more than 0s"),
    (["watch", "--count", "-1"], "--count: '-1' is not a count"),
    (["watch", "--count", "9" * 40], "is not a count"),
]


@pytest.mark.parametrize(("argv", "words"), BAD_MASQCTL, ids=lambda v: " ".join(v)[:40])
def test_masqctl_refuses_a_bad_flag_with_exit_2_naming_it(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused while parsing: no socket is even looked at (there is none here)."""
    assert masqctl_cli.main(["--socket", "/nonexistent/masqd.sock", *argv]) == 2
    err = capsys.readouterr().err
    assert "usage: masqctl" in err and words in err, err
