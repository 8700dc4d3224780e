"""The policy file: defaults, strict validation with messages naming key, entry and reason."""

from __future__ import annotations

import ipaddress
import json

import pytest

from masqd.core.config import (
    OTHER_RESERVED,
    RFC1918,
    ConfigError,
    HostName,
    MasqConfig,
    ParseOptions,
    config_to_dict,
    default_config,
    parse_config,
)

NO_IPV6 = ParseOptions(enable_ipv6=False)


def nets(*cidrs: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


def error_of(text: str | bytes, options: ParseOptions | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, options)
    return str(info.value)


# -- defaults --------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "\n", "   \n\n", "# only a comment\n", "---\n", "null"])
def test_empty_file_means_all_defaults(text: str) -> None:
    """An empty (or comment-only) file gives every default and says it is using defaults."""
    loaded = parse_config(text)
    assert loaded.config == MasqConfig()
    assert loaded.using_defaults
    assert loaded.warnings == ()


def test_defaults_are_the_specs() -> None:
    """The defaults are SPEC §2's table."""
    config = default_config()
    assert config.non_masquerade_cidrs == nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
    assert config.masquerade_cidrs == ()
    assert config.masq_out_bound is False
    assert config.masq_out_bound_ipv6 is True
    assert config.masq_link_local is False
    assert config.masq_link_local_ipv6 is False
    assert config.resync_interval == 60.0
    assert config.cidr_limit == 64


def test_all_reserved_ranges_default_list_in_upstream_order() -> None:
    """--nomasq-all-reserved-ranges: RFC 1918 then the other reserved ranges, in upstream order."""
    loaded = parse_config("", ParseOptions(all_reserved_ranges=True))
    assert [str(c) for c in loaded.config.non_masquerade_cidrs] == [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "240.0.0.0/4",
    ]
    assert (*RFC1918, *OTHER_RESERVED) == tuple(str(c) for c in loaded.config.non_masquerade_cidrs)


def test_all_reserved_ranges_do_not_override_an_explicit_list() -> None:
    """With --nomasq-all-reserved-ranges, a file's own nonMasqueradeCIDRs is used as given."""
    loaded = parse_config(
        "nonMasqueradeCIDRs: [10.0.0.0/8]", ParseOptions(all_reserved_ranges=True)
    )
    assert loaded.config.non_masquerade_cidrs == nets("10.0.0.0/8")


def test_absent_key_takes_default_not_previous_value() -> None:
    """Parsing is stateless: a key dropped from the file returns to its default."""
    first = parse_config(
        "nonMasqueradeCIDRs: [10.1.0.0/16]\nmasqOutBound: true\nmasqLinkLocal: true\n"
        "masqOutBoundIPv6: false\nmasqLinkLocalIPv6: true\nresyncInterval: 5m\ncidrLimit: 3\n"
        "masqueradeCIDRs: [10.1.2.3/32]\n"
    ).config
    assert first != MasqConfig()
    second = parse_config("masqOutBound: true\n").config
    assert second == MasqConfig(masq_out_bound=True)


@pytest.mark.parametrize(
    ("text", "field", "value"),
    [
        ("masqOutBound: true", "masq_out_bound", True),
        ("masqOutBoundIPv6: false", "masq_out_bound_ipv6", False),
        ("masqLinkLocal: true", "masq_link_local", True),
        ("masqLinkLocalIPv6: true", "masq_link_local_ipv6", True),
        ("resyncInterval: 1m30s", "resync_interval", 90.0),
        ("cidrLimit: 5", "cidr_limit", 5),
        ("masqueradeCIDRs: [1.2.3.0/24]", "masquerade_cidrs", nets("1.2.3.0/24")),
        ("nonMasqueradeCIDRs: []", "non_masquerade_cidrs", ()),
        ("masqueradeCIDRs: []", "masquerade_cidrs", ()),
    ],
)
def test_each_key_sets_only_its_field(text: str, field: str, value: object) -> None:
    """Each key changes its own field; every other field keeps its default."""
    config = parse_config(text).config
    assert getattr(config, field) == value
    rest = {k: v for k, v in vars(config).items() if k != field}
    assert rest == {k: v for k, v in vars(MasqConfig()).items() if k != field}


def test_json_is_accepted() -> None:
    """A JSON document parses like the equivalent YAML."""
    doc = {
        "nonMasqueradeCIDRs": ["10.0.0.0/8", "fc00::/7"],
        "masqueradeCIDRs": ["10.10.10.10/32"],
        "masqOutBound": True,
        "resyncInterval": "2h",
    }
    config = parse_config(json.dumps(doc)).config
    assert config.non_masquerade_cidrs == nets("10.0.0.0/8", "fc00::/7")
    assert config.masquerade_cidrs == nets("10.10.10.10/32")
    assert config.masq_out_bound is True
    assert config.resync_interval == 7200.0


def test_bytes_input_is_decoded_as_utf8() -> None:
    """The file's bytes are accepted directly."""
    assert parse_config(b"masqOutBound: true\n").config.masq_out_bound is True


def test_ipv4_and_ipv6_entries_mix_in_file_order() -> None:
    """IPv4 and IPv6 entries share one list and keep their file order."""
    config = parse_config("nonMasqueradeCIDRs: [fc00::/7, 10.0.0.0/8, 2001:db8::/32]").config
    assert config.non_masquerade_cidrs == nets("fc00::/7", "10.0.0.0/8", "2001:db8::/32")


def test_config_to_dict_spells_the_file() -> None:
    """config_to_dict gives the file's keys, and parsing it again gives the same config."""
    config = parse_config("masqueradeCIDRs: [1.2.3.4/32]\nresyncInterval: 90s\n").config
    as_dict = config_to_dict(config)
    assert as_dict["resyncInterval"] == "1m30s"
    assert as_dict["masqueradeCIDRs"] == ["1.2.3.4/32"]
    assert parse_config(json.dumps(as_dict)).config == config


# -- errors: every key, naming key, entry and reason -----------------------------------------

ERRORS = [
    # syntax and shape
    ("masqOutBound: [true", "not valid YAML or JSON"),
    ('{"masqOutBound": true', "not valid YAML or JSON"),
    ("a: 1\n---\nb: 2\n", "not valid YAML or JSON"),
    ("- 10.0.0.0/8\n", "top level must be a mapping of keys, not a list"),
    ('"just a string"', "top level must be a mapping of keys, not a string"),
    ("42", "top level must be a mapping of keys, not a number"),
    ("!!python/object/apply:os.system [true]", "not valid YAML or JSON"),
    # CIDR lists
    ("nonMasqueradeCIDRs: 10.0.0.0/8", "nonMasqueradeCIDRs: must be a list of CIDRs, not a string"),
    ("nonMasqueradeCIDRs: {}", "nonMasqueradeCIDRs: must be a list of CIDRs, not a mapping"),
    ("nonMasqueradeCIDRs:", "nonMasqueradeCIDRs: has no value"),
    ("nonMasqueradeCIDRs: null", "nonMasqueradeCIDRs: has no value"),
    ("masqueradeCIDRs: ~", "masqueradeCIDRs: has no value"),
    ("masqueradeCIDRs: true", "masqueradeCIDRs: must be a list of CIDRs, not a boolean"),
    ("nonMasqueradeCIDRs: [10.0.0.0/8, 7]", "nonMasqueradeCIDRs[1]: 7 must be a CIDR string"),
    ("nonMasqueradeCIDRs: [[10.0.0.0/8]]", "nonMasqueradeCIDRs[0]: ['10.0.0.0/8'] must be a CIDR"),
    ("nonMasqueradeCIDRs: [null]", "nonMasqueradeCIDRs[0]: None must be a CIDR string"),
    (
        "nonMasqueradeCIDRs: [10.0.0.0/8, 10.0.0.1/8]",
        "nonMasqueradeCIDRs[1] '10.0.0.1/8': host bits are set; the network is 10.0.0.0/8",
    ),
    (
        "masqueradeCIDRs: [10.10.10.10/24]",
        "masqueradeCIDRs[0] '10.10.10.10/24': host bits are set; the network is 10.10.10.0/24",
    ),
    (
        "nonMasqueradeCIDRs: ['fc00::1/7']",
        "nonMasqueradeCIDRs[0] 'fc00::1/7': host bits are set; the network is fc00::/7",
    ),
    ("nonMasqueradeCIDRs: [10.0.0.0]", "nonMasqueradeCIDRs[0] '10.0.0.0': not a CIDR, the prefix"),
    ("nonMasqueradeCIDRs: [10.0.0.0/33]", "nonMasqueradeCIDRs[0] '10.0.0.0/33': not a valid CIDR"),
    ("nonMasqueradeCIDRs: ['::/129']", "nonMasqueradeCIDRs[0] '::/129': not a valid CIDR"),
    ("nonMasqueradeCIDRs: [300.0.0.0/8]", "nonMasqueradeCIDRs[0] '300.0.0.0/8': not a valid CIDR"),
    ("nonMasqueradeCIDRs: [10.0.0.0/8/8]", "nonMasqueradeCIDRs[0] '10.0.0.0/8/8': not a CIDR"),
    ("nonMasqueradeCIDRs: [hello/8]", "nonMasqueradeCIDRs[0] 'hello/8': not a valid CIDR"),
    ("nonMasqueradeCIDRs: ['']", "nonMasqueradeCIDRs[0] '': not a CIDR"),
    (
        "nonMasqueradeCIDRs: [10.0.0.0/255.0.0.0]",
        "nonMasqueradeCIDRs[0] '10.0.0.0/255.0.0.0': not a CIDR, the prefix must be a length",
    ),
    (
        "nonMasqueradeCIDRs: [10.0.0.0/0.255.255.255]",
        "nonMasqueradeCIDRs[0] '10.0.0.0/0.255.255.255': not a CIDR, the prefix must be a length",
    ),
    (
        "nonMasqueradeCIDRs: ['fe80::%eth0/10']",
        "nonMasqueradeCIDRs[0] 'fe80::%eth0/10': not a CIDR, a scoped address",
    ),
    # booleans: a string where a bool belongs
    ("masqOutBound: 'true'", "masqOutBound: must be true or false, not a string 'true'"),
    ("masqOutBoundIPv6: 1", "masqOutBoundIPv6: must be true or false, not a number 1"),
    ("masqLinkLocal: [true]", "masqLinkLocal: must be true or false, not a list"),
    ("masqLinkLocalIPv6: 'no'", "masqLinkLocalIPv6: must be true or false, not a string 'no'"),
    ("masqLinkLocal:", "masqLinkLocal: has no value"),
    # resyncInterval: a string in Go syntax, within 1s..24h
    ("resyncInterval: 60", "resyncInterval: must be a duration string"),
    ("resyncInterval: 1.5", "resyncInterval: must be a duration string"),
    ("resyncInterval: [60s]", "resyncInterval: must be a duration string"),
    ("resyncInterval: 60 s", "resyncInterval: invalid duration '60 s'"),
    ("resyncInterval: 1d", "resyncInterval: invalid duration '1d'"),
    ("resyncInterval: '60'", "resyncInterval: invalid duration '60'"),
    ("resyncInterval: ''", "resyncInterval: empty duration"),
    ("resyncInterval: 999ms", "resyncInterval: '999ms' is out of bounds"),
    ("resyncInterval: '0'", "resyncInterval: '0' is out of bounds"),
    ("resyncInterval: -1m", "resyncInterval: '-1m' is out of bounds"),
    ("resyncInterval: 24h0m1s", "resyncInterval: '24h0m1s' is out of bounds"),
    ("resyncInterval: 25h", "resyncInterval: '25h' is out of bounds"),
    # cidrLimit
    ("cidrLimit: '64'", "cidrLimit: must be a whole number, not a string '64'"),
    ("cidrLimit: 6.5", "cidrLimit: must be a whole number, not a number 6.5"),
    ("cidrLimit: true", "cidrLimit: must be a whole number, not a boolean True"),
    ("cidrLimit: -1", "cidrLimit: must not be negative"),
    # binary junk
    (b"\xff\xfe\x00junk", "not UTF-8"),
    (b"masqOutBound: true\x00\n", "NUL bytes"),
]


@pytest.mark.parametrize(("text", "message"), ERRORS, ids=[repr(t)[:40] for t, _ in ERRORS])
def test_invalid_file_raises_config_error_naming_key_entry_reason(
    text: str | bytes, message: str
) -> None:
    """Each malformed file is a ConfigError whose message names the key, entry and reason."""
    assert message in error_of(text)


def test_out_of_bounds_message_states_the_bounds() -> None:
    """An out-of-bounds resyncInterval says what the bounds are."""
    assert "between 1s and 24h" in error_of("resyncInterval: 500ms")


@pytest.mark.parametrize("interval", ["1s", "1000ms", "24h", "23h59m59s", "1h0m0s"])
def test_interval_bounds_are_inclusive(interval: str) -> None:
    """Exactly 1s and exactly 24h are accepted."""
    assert 1.0 <= parse_config(f"resyncInterval: {interval}").config.resync_interval <= 86400.0


# -- cidrLimit ---------------------------------------------------------------------------------


def test_cidr_limit_counts_both_families() -> None:
    """IPv4 and IPv6 entries count together against cidrLimit."""
    text = "cidrLimit: 2\nnonMasqueradeCIDRs: [10.0.0.0/8, fc00::/7, 192.168.0.0/16]\n"
    message = error_of(text)
    assert "nonMasqueradeCIDRs: 3 entries, more than cidrLimit (2)" in message
    ok = parse_config("cidrLimit: 2\nnonMasqueradeCIDRs: [10.0.0.0/8, fc00::/7]\n")
    assert len(ok.config.non_masquerade_cidrs) == 2


def test_default_cidr_limit_is_64() -> None:
    """64 entries are accepted by default, 65 are not."""
    cidrs = [f"10.{i}.0.0/16" for i in range(65)]
    assert (
        len(
            parse_config(json.dumps({"nonMasqueradeCIDRs": cidrs[:64]})).config.non_masquerade_cidrs
        )
        == 64
    )
    assert "65 entries, more than cidrLimit (64)" in error_of(
        json.dumps({"nonMasqueradeCIDRs": cidrs})
    )


def test_raised_cidr_limit_accepts_more() -> None:
    """Raising cidrLimit lets more entries in."""
    cidrs = [f"10.{i}.0.0/16" for i in range(100)]
    doc = {"cidrLimit": 100, "nonMasqueradeCIDRs": cidrs}
    assert len(parse_config(json.dumps(doc)).config.non_masquerade_cidrs) == 100


def test_cidr_limit_does_not_count_masquerade_cidrs() -> None:
    """Only nonMasqueradeCIDRs count against cidrLimit."""
    doc = {
        "cidrLimit": 1,
        "nonMasqueradeCIDRs": ["10.0.0.0/8"],
        "masqueradeCIDRs": ["1.0.0.0/8"] * 3,
    }
    assert parse_config(json.dumps(doc)).config.cidr_limit == 1


# -- IPv6 disabled -----------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["nonMasqueradeCIDRs", "masqueradeCIDRs"])
def test_ipv6_entry_with_ipv6_disabled_is_an_error(key: str) -> None:
    """With --enable-ipv6=false an IPv6 entry is an error naming key, entry and reason."""
    message = error_of(f"{key}: [10.0.0.0/8, 'fc00::/7']", NO_IPV6)
    assert f"{key}[1] 'fc00::/7'" in message
    assert "IPv6 is disabled" in message


def test_ipv4_only_file_with_ipv6_disabled_is_accepted() -> None:
    """With IPv6 disabled, IPv4 entries and the IPv6 booleans are still accepted."""
    loaded = parse_config("nonMasqueradeCIDRs: [10.0.0.0/8]\nmasqOutBoundIPv6: false\n", NO_IPV6)
    assert loaded.config.non_masquerade_cidrs == nets("10.0.0.0/8")


# -- warnings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [
        ("nonMasqueradeCidrs", "nonMasqueradeCIDRs"),
        ("nonmasqueradecidrs", "nonMasqueradeCIDRs"),
        ("masqOutbound", "masqOutBound"),
        ("masqOutBoundIpv6", "masqOutBoundIPv6"),
        ("masqLinkLocalIPV6", "masqLinkLocalIPv6"),
        ("resyncInterva", "resyncInterval"),
        ("cidrlimit", "cidrLimit"),
        ("masqueradeCIDR", "masqueradeCIDRs"),
    ],
)
def test_unknown_key_close_to_a_known_one_warns_did_you_mean(key: str, suggestion: str) -> None:
    """A misspelt key is a warning (not an error) with a "did you mean" of the right key."""
    loaded = parse_config(f"{key}: []\n" if "CIDR" in suggestion else f"{key}: 1\n")
    assert loaded.warnings == (f"unknown key {key!r} is ignored; did you mean {suggestion!r}?",)
    assert loaded.config == MasqConfig()


def test_unknown_key_far_from_any_known_one_warns_without_suggestion() -> None:
    """An unrelated unknown key warns without a suggestion and changes nothing."""
    loaded = parse_config("tolerations: []\nmasqOutBound: true\n")
    assert loaded.warnings == ("unknown key 'tolerations' is ignored",)
    assert loaded.config.masq_out_bound is True


def test_duplicate_cidr_entries_warn() -> None:
    """An entry listed twice is accepted with a warning naming the key and entry."""
    loaded = parse_config(
        "nonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12, 10.0.0.0/8]\n"
        "masqueradeCIDRs: [1.2.3.4/32, 1.2.3.4/32]\n"
    )
    assert loaded.warnings == (
        "nonMasqueradeCIDRs: 10.0.0.0/8 is listed more than once",
        "masqueradeCIDRs: 1.2.3.4/32 is listed more than once",
    )


def test_duplicate_keys_warn_and_the_last_wins() -> None:
    """A key given twice warns; the last value is used, as Go's YAML/JSON decoders do."""
    loaded = parse_config("masqOutBound: true\nmasqOutBound: false\n")
    assert loaded.warnings == (
        "key 'masqOutBound' is given more than once; the last value is used",
    )
    assert loaded.config.masq_out_bound is False


def test_yaml_one_one_booleans_are_booleans() -> None:
    """YAML 1.1 spellings (yes/no/on/off) are booleans, as in upstream's YAML decoder."""
    assert parse_config("masqOutBound: yes").config.masq_out_bound is True
    assert parse_config("masqOutBoundIPv6: off").config.masq_out_bound_ipv6 is False


# -- DNS names where a CIDR goes (CCE) ---------------------------------------------------------


def test_a_dns_name_is_kept_as_a_name_in_both_lists() -> None:
    """A name parses to a HostName in file order; resolving it is not the parser's business."""
    loaded = parse_config(
        "masqueradeCIDRs: [DB.Example.com., 10.10.10.10/32]\n"
        "nonMasqueradeCIDRs: [10.0.0.0/8, api.example.com]\n"
    )
    config = loaded.config
    assert config.masquerade_cidrs == (HostName("db.example.com"), *nets("10.10.10.10/32"))
    assert config.non_masquerade_cidrs == (*nets("10.0.0.0/8"), HostName("api.example.com"))
    assert config.names() == (HostName("db.example.com"), HostName("api.example.com"))
    assert config_to_dict(config)["masqueradeCIDRs"] == ["db.example.com", "10.10.10.10/32"]


def test_a_name_counts_as_one_entry_against_cidr_limit() -> None:
    """As in CCE, a name is one entry of nonMasqueradeCIDRs, whatever it resolves to."""
    assert parse_config("cidrLimit: 1\nnonMasqueradeCIDRs: [many.example.com]\n")
    assert "2 entries" in error_of("cidrLimit: 1\nnonMasqueradeCIDRs: [a.example.com, b.example]")


def test_the_same_name_twice_warns_like_a_cidr_twice() -> None:
    loaded = parse_config("masqueradeCIDRs: [db.example.com, DB.example.com.]\n")
    assert loaded.warnings == ("masqueradeCIDRs: db.example.com is listed more than once",)


def test_present_lists_the_keys_the_file_sets() -> None:
    """A merge needs to tell a key set to its default from one left out."""
    loaded = parse_config("masqOutBound: false\nnonMasqueradeCIDRs: []\nbogus: 1\n")
    assert loaded.present == {"masqOutBound", "nonMasqueradeCIDRs"}


NOT_NAMES = [
    ("foo_bar", "nor a DNS name: '_' is not allowed in a name"),
    ("localhost", "nor a DNS name: a single label"),
    ("-db.example.com", "starts or ends with '-'"),
    ("db..example.com", "an empty label"),
    ("db.example.123", "its last label is all digits"),
    ("dé.example.com", "not ASCII"),
    ("a" * 64 + ".example.com", "longer than 63 characters"),
    (".".join(["abcdefgh"] * 32), "longer than 253 characters"),
]


@pytest.mark.parametrize(("entry", "reason"), NOT_NAMES)
def test_an_entry_neither_cidr_nor_name_is_refused_with_both_wordings(
    entry: str, reason: str
) -> None:
    """The real reason first, then CCE's own wording for an entry it cannot parse."""
    message = error_of(f"masqueradeCIDRs: ['{entry}']")
    assert f"masqueradeCIDRs[0] {entry!r}: not a CIDR, the prefix length is missing" in message
    assert reason in message
    assert f'[CIDR "{entry}" could not be parsed, invalid CIDR address: {entry}]' in message


def test_host_bits_carry_cces_alignment_wording() -> None:
    message = error_of("nonMasqueradeCIDRs: [10.0.0.1/8]")
    assert message == (
        "nonMasqueradeCIDRs[0] '10.0.0.1/8': host bits are set; the network is 10.0.0.0/8 "
        '[CIDR "10.0.0.1/8" is not aligned to a CIDR block, ip: "10.0.0.1" network: '
        '"10.0.0.0/8"]'
    )


def test_an_address_without_prefix_is_not_taken_for_a_name() -> None:
    message = error_of("masqueradeCIDRs: [10.10.10.10]")
    assert "not a CIDR, the prefix length is missing (e.g. 10.10.10.10/32)" in message
    assert "DNS name" not in message
