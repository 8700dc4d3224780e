"""`masqctl config validate --compat cce|upstream` and `masqctl config explain`, offline: what
the other agents would not understand in a file masqd accepts, and what masqd's own rules for
a file give a connection."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from masqctl.cli import main
from masqd.core import compat
from masqd.core.config import parse_config

SEED = """\
nonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12, 100.64.230.0/24, 192.168.0.0/16, fc00::/7]
masqOutBound: false
masqOutBoundIPv6: true
masqLinkLocal: false
masqLinkLocalIPv6: false
resyncInterval: 60s
"""
BEYOND = """\
masqueradeCIDRs: [10.10.10.10/32]
nonMasqueradeCIDRs: [10.0.0.0/8]
sourceCIDRs: [10.244.0.0/16]
snatToSource: 192.0.2.100
masqOutBound: true
cidrLimit: 10
"""


def warnings(target: str, text: str) -> list[str]:
    loaded = parse_config(text)
    return compat.warnings(target, loaded.present, loaded.config)


def test_the_seeds_file_means_the_same_to_cce() -> None:
    """The CCE guide's own scenario uses only the keys its agent documents."""
    assert warnings("cce", SEED) == []


def test_cce_does_not_know_masqds_own_keys() -> None:
    found = warnings("cce", BEYOND)
    assert [w.split(":")[0] for w in found] == ["cidrLimit", "sourceCIDRs", "snatToSource"]
    assert "ignores it silently" in found[1]
    assert "connections from every source are masqueraded" in found[1]
    assert "leaves with the outgoing interface's address" in found[2]


def test_upstream_has_no_masq_out_bound_and_always_masquerades() -> None:
    """The seed says masqOutBound: false; upstream drops the key and masquerades anyway. Its
    IPv6 entries need upstream's --enable-ipv6."""
    found = warnings("upstream", SEED)
    assert found[0].startswith("masqOutBound: upstream ip-masq-agent does not know this key")
    assert "it always masquerades IPv4 traffic outside nonMasqueradeCIDRs" in found[0]
    assert "which is what true means here" in found[1]  # masqOutBoundIPv6: true
    assert "rejects the whole file for them unless it runs with --enable-ipv6" in found[2]
    absent = warnings("upstream", "nonMasqueradeCIDRs: [10.0.0.0/8]\n")
    assert absent == [
        "masqOutBound: absent, so masqd leaves IPv4 traffic outside the lists unmasqueraded; "
        "upstream ip-masq-agent masquerades it (it has no such key: always on)"
    ]


def test_upstream_knows_cidr_limit_and_not_masquerade_cidrs() -> None:
    found = warnings("upstream", BEYOND)
    keys = [w.split(":")[0] for w in found]
    assert keys == ["masqueradeCIDRs", "masqOutBound", "sourceCIDRs", "snatToSource"]
    assert "follow nonMasqueradeCIDRs and the catch-all instead" in found[0]


# -- through masqctl -------------------------------------------------------------------------


@pytest.fixture
def masqctl(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_validate_compat_prints_each_warning_and_stays_valid(
    tmp_path: Path, masqctl: Callable[..., tuple[int, str, str]]
) -> None:
    path = tmp_path / "ip-masq-agent"
    path.write_text(BEYOND)
    code, out, _ = masqctl("config", "validate", str(path), "--compat", "cce")
    assert code == 0 and out.startswith(f"{path}: valid")
    assert "\ncce: sourceCIDRs: cce-ip-masq-agent does not know this key" in out
    code, out, _ = masqctl("config", "validate", str(path), "--compat", "upstream", "-o", "json")
    data = json.loads(out)
    assert data["compat"]["agent"] == "upstream ip-masq-agent"
    assert len(data["compat"]["warnings"]) == 4
    path.write_text(SEED)
    code, out, _ = masqctl("config", "validate", str(path), "--compat", "cce")
    assert "cce: cce-ip-masq-agent reads this file as masqd does" in out
    assert masqctl("config", "validate", str(path), "--compat", "azure")[0] == 2


def test_config_explain_names_the_entry_and_the_file(
    tmp_path: Path, masqctl: Callable[..., tuple[int, str, str]]
) -> None:
    path = tmp_path / "ip-masq-agent"
    path.write_text(BEYOND)
    code, out, _ = masqctl("config", "explain", str(path), "10.1.2.3", "-o", "json")
    data = json.loads(out)
    assert code == 0
    assert (data["action"], data["decidedBy"]) == (
        "none",
        f"nonMasqueradeCIDRs[0] 10.0.0.0/8 in {path}",
    )
    assert data["entry"] == {"key": "nonMasqueradeCIDRs", "index": 0, "value": "10.0.0.0/8",
                             "file": str(path), "resolved": ""}  # fmt: skip
    assert data["source"] == "10.244.0.1"  # from sourceCIDRs
    code, out, _ = masqctl("config", "explain", str(path), "203.0.113.9", "--backend", "nftables")
    assert out.startswith("203.0.113.9 from 10.244.0.1 (ipv4): snat to 192.0.2.100")
    assert "decided by  the catch-all (masqOutBound: true)" in out
    assert "position    append: our chain at priority srcnat + 10 (nftables)" in out
    code, out, _ = masqctl(
        "config", "explain", str(path), "203.0.113.9", "--source", "10.99.0.1", "--jump-position",
        "first",
    )  # fmt: skip
    assert "decided by  not in our chain: the source is not in sourceCIDRs" in out
    assert "position    first: our jump is rule 1 of 1 in POSTROUTING" in out


def test_config_explain_refuses_what_it_cannot_explain(
    tmp_path: Path, masqctl: Callable[..., tuple[int, str, str]]
) -> None:
    path = tmp_path / "ip-masq-agent"
    path.write_text(BEYOND)
    code, _, err = masqctl("config", "explain", str(path), "192.0.2.1", "--source", "fd00::1")
    assert code == 2 and "different families" in err
    code, _, err = masqctl("config", "explain", str(path), "2001:db8::1", "--enable-ipv6=false")
    assert code == 2 and "--enable-ipv6=false" in err
    code, _, err = masqctl("config", "explain", str(path), "no-such-host.invalid")
    assert code == 1 and "not a name that resolves" in err
