"""masqd.core.merge: files in name order, lists concatenated without repeats, a conflicting or
bad file refused on its own and replaced by its last good content, cidrLimit on the total."""

from __future__ import annotations

import ipaddress

from masqd.core.config import (
    HostName,
    LoadedConfig,
    MasqConfig,
    Origin,
    default_config,
    parse_document,
)
from masqd.core.merge import FileInput, FileState, merge

DEFAULTS = default_config()


def parsed(text: str) -> LoadedConfig:
    return parse_document(text)


def cidrs(*texts: str) -> tuple[object, ...]:
    return tuple(ipaddress.ip_network(t) for t in texts)


def test_files_merge_in_name_order_and_a_repeated_entry_is_dropped() -> None:
    """The seed's "some addresses" scenario split over two files gives the seed's config."""
    cloud = parsed("nonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12, 100.64.230.0/24]\n")
    user = parsed(
        "masqueradeCIDRs: [10.10.10.10/32]\n"
        "nonMasqueradeCIDRs: [172.16.0.0/12, 192.168.0.0/16, 'fc00::/7']\n"
        "masqOutBound: false\n"
    )
    merged = merge([FileInput("ip-masq-user", user), FileInput("ip-masq-cloud", cloud)], DEFAULTS)
    assert merged.loaded is not None
    config = merged.loaded.config
    assert config.non_masquerade_cidrs == cidrs(
        "10.0.0.0/8", "172.16.0.0/12", "100.64.230.0/24", "192.168.0.0/16", "fc00::/7"
    )
    assert config.masquerade_cidrs == cidrs("10.10.10.10/32")
    assert [f.state for f in merged.files] == [FileState.APPLIED, FileState.APPLIED]
    assert [f.name for f in merged.files] == ["ip-masq-cloud", "ip-masq-user"]
    origin = {(o.key, str(o.entry)): o.source for o in merged.loaded.origins}
    assert origin[("nonMasqueradeCIDRs", "172.16.0.0/12")] == "ip-masq-cloud"
    assert origin[("nonMasqueradeCIDRs", "fc00::/7")] == "ip-masq-user"
    assert origin[("masqueradeCIDRs", "10.10.10.10/32")] == "ip-masq-user"


def test_keys_no_file_sets_take_their_defaults() -> None:
    merged = merge([FileInput("ip-masq-a", parsed("masqOutBound: true\n"))], DEFAULTS)
    assert merged.loaded is not None
    assert merged.loaded.config == MasqConfig(masq_out_bound=True)
    assert not merged.loaded.using_defaults


def test_no_files_is_all_defaults() -> None:
    merged = merge([], DEFAULTS)
    assert merged.loaded is not None and merged.loaded.using_defaults
    assert merged.loaded.config == DEFAULTS


def test_a_scalar_set_differently_rejects_the_later_file() -> None:
    """The later file (by name) is refused, says who disagrees, and contributes nothing."""
    a = parsed("masqOutBound: true\nmasqueradeCIDRs: [192.0.2.1/32]\n")
    b = parsed("masqOutBound: false\nmasqueradeCIDRs: [198.51.100.1/32]\n")
    merged = merge([FileInput("ip-masq-b", b), FileInput("ip-masq-a", a)], DEFAULTS)
    assert merged.loaded is not None
    assert merged.loaded.config.masq_out_bound is True
    assert merged.loaded.config.masquerade_cidrs == cidrs("192.0.2.1/32")
    b_outcome = merged.files[1]
    assert b_outcome.state == FileState.IGNORED
    assert b_outcome.error == (
        "masqOutBound is false here but true in ip-masq-a, which comes first; "
        "set it in one file only"
    )


def test_the_same_scalar_value_in_two_files_is_no_conflict() -> None:
    a = parsed("resyncInterval: 30s\n")
    merged = merge([FileInput("ip-masq-a", a), FileInput("ip-masq-b", a)], DEFAULTS)
    assert all(f.state == FileState.APPLIED for f in merged.files)


def test_a_bad_file_keeps_its_own_last_good_content_while_the_others_change() -> None:
    old_b = parsed("masqueradeCIDRs: [198.51.100.1/32]\n")
    a = parsed("masqueradeCIDRs: [192.0.2.1/32, 192.0.2.2/32]\n")
    merged = merge(
        [
            FileInput("ip-masq-a", a),
            FileInput("ip-masq-b", "masqOutBound: must be true or false", kept=old_b),
        ],
        DEFAULTS,
    )
    assert merged.loaded is not None
    assert merged.loaded.config.masquerade_cidrs == cidrs(
        "192.0.2.1/32", "192.0.2.2/32", "198.51.100.1/32"
    )
    assert merged.files[1].state == FileState.KEPT
    assert merged.files[1].error == "masqOutBound: must be true or false"
    assert merged.files[1].used == old_b


def test_a_conflicting_file_falls_back_to_its_last_good_content_when_that_fits() -> None:
    a = parsed("masqOutBound: true\n")
    old_b = parsed("masqueradeCIDRs: [198.51.100.1/32]\n")
    new_b = parsed("masqOutBound: false\nmasqueradeCIDRs: [198.51.100.2/32]\n")
    merged = merge([FileInput("ip-masq-a", a), FileInput("ip-masq-b", new_b, old_b)], DEFAULTS)
    assert merged.loaded is not None
    assert merged.loaded.config.masquerade_cidrs == cidrs("198.51.100.1/32")
    assert merged.files[1].state == FileState.KEPT and "masqOutBound" in merged.files[1].error


def test_last_good_content_that_conflicts_now_contributes_nothing() -> None:
    """The earlier file changed its mind: the later one's old content no longer fits either."""
    a = parsed("masqOutBound: false\n")
    old_b = parsed("masqOutBound: true\n")
    merged = merge([FileInput("ip-masq-a", a), FileInput("ip-masq-b", old_b, old_b)], DEFAULTS)
    assert merged.files[1].state == FileState.IGNORED
    assert merged.loaded is not None and merged.loaded.config.masq_out_bound is False


def test_cidr_limit_applies_to_the_merged_total() -> None:
    """Each file alone is under the limit; the one that takes the total past it is refused."""
    a = parsed("cidrLimit: 3\nnonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12]\n")
    b = parsed("nonMasqueradeCIDRs: [10.0.0.0/8, 192.168.0.0/16]\n")  # 10/8 is a repeat
    c = parsed("nonMasqueradeCIDRs: ['fc00::/7']\n")
    merged = merge([FileInput(n, f) for n, f in (("a", a), ("b", b), ("c", c))], DEFAULTS)
    assert [f.state for f in merged.files] == [
        FileState.APPLIED,
        FileState.APPLIED,
        FileState.IGNORED,
    ]
    assert "4 entries with those of the files before it, more than cidrLimit (3)" in (
        merged.files[2].error
    )
    assert merged.loaded is not None and len(merged.loaded.config.non_masquerade_cidrs) == 3


def test_every_file_refused_without_good_content_is_no_config() -> None:
    merged = merge([FileInput("ip-masq-a", "not valid YAML")], DEFAULTS)
    assert merged.loaded is None and merged.files[0].state == FileState.IGNORED


def test_names_merge_like_cidrs_and_warnings_name_their_file() -> None:
    a = parsed("masqueradeCIDRs: [db.example.com, db.example.com]\n")
    b = parsed("masqueradeCIDRs: [DB.example.com]\n")
    merged = merge([FileInput("ip-masq-a", a), FileInput("ip-masq-b", b)], DEFAULTS)
    assert merged.loaded is not None
    assert merged.loaded.config.masquerade_cidrs == (HostName("db.example.com"),)
    assert merged.loaded.origins == (
        Origin("masqueradeCIDRs", HostName("db.example.com"), "ip-masq-a"),
    )
    assert merged.loaded.warnings == (
        "ip-masq-a: masqueradeCIDRs: db.example.com is listed more than once",
    )
