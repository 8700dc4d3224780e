"""Rendering: golden files (the spec in executable form), the flags' parsing, and the kernel's
round trip: every golden restore input is accepted and `iptables-save` prints our chain back
exactly as rendered, which is what lets masqd skip a write when nothing changed."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from masqd.core.cleanup import removal
from masqd.core.config import parse_config
from masqd.core.livestate import parse_save
from masqd.core.rules import (
    DEFAULT_CHAIN,
    Family,
    RenderOptions,
    desired_rules,
    jump_rule,
    parse_to_ports,
    render,
    render_restore,
    validate_chain_name,
)
from tests.conftest import BACKENDS, require_root
from tests.support import netns
from tests.support.golden import GOLDEN, Case, cases

CASES = cases()
CASE_IDS = [c.name for c in CASES]
GOLDEN_PAIRS = [(c, f) for c in CASES for f in c.families]


# -- golden files ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "family"), GOLDEN_PAIRS, ids=[f"{c.name}-{f.label}" for c, f in GOLDEN_PAIRS]
)
def test_golden_case_renders_exactly_its_rules_file(case: Case, family: Family) -> None:
    """Each tests/golden/<case>.yaml renders to exactly <case>.<family>.rules."""
    expected = case.expected_path(family)
    assert expected.exists(), f"missing {expected.name}; run python -m tests.support.golden"
    assert case.rendered(family) == expected.read_text()


def test_golden_folder_has_no_orphans_and_covers_the_seed() -> None:
    """Every .rules file belongs to a case and family; the seed's three scenarios are cases."""
    wanted = {c.expected_path(f).name for c, f in GOLDEN_PAIRS}
    present = {p.name for p in GOLDEN.glob("*.rules")}
    assert present == wanted
    assert {"seed-own-identity", "seed-node-identity", "seed-specific"} <= set(CASE_IDS)


def test_goldens_cover_every_flag() -> None:
    """Between them, the golden cases use every rendering flag of masqd."""
    first_lines = " ".join(c.path.read_text().partition("\n")[0] for c in CASES)
    for flag in (
        "--random-fully",
        "--to-ports",
        "--masq-chain",
        "--nomasq-all-reserved-ranges",
        "--enable-ipv6=false",
        "--jump-position first",
        "--nft-priority",
        "--kube-proxy-masquerade-bit",
    ):
        assert flag in first_lines


def test_ipv6_disabled_cases_render_no_ipv6_file() -> None:
    """A case with --enable-ipv6=false has no .ipv6.rules file."""
    disabled = [c for c in CASES if not c.parse.enable_ipv6]
    assert disabled
    for case in disabled:
        assert not case.expected_path(Family.IPV6).exists()


def test_missing_file_renders_like_an_empty_one() -> None:
    """masqd reads a missing file as b"": the result is the empty-file golden."""
    empty = next(c for c in CASES if c.name == "defaults-empty-file")
    for family in Family:
        assert render(parse_config(b"").config, family, RenderOptions()) == (
            empty.expected_path(family).read_text()
        )


_PROBABILITY = re.compile(r"--probability (\S+)")


@pytest.mark.parametrize("case", [c for c in CASES if c.render.to_ports], ids=lambda c: c.name)
def test_probabilities_are_plain_decimals_between_0_and_1(case: Case) -> None:
    """Every --probability in the goldens is a plain decimal in (0, 1), never exponent form."""
    for family in case.families:
        for value in _PROBABILITY.findall(case.expected_path(family).read_text()):
            assert re.fullmatch(r"0\.[0-9]{11}", value), value
            assert 0 < float(value) < 1


# -- rule shape ------------------------------------------------------------------------------


def test_port_spreading_uses_every_port_equally() -> None:
    """Range i is taken with probability size_i / (remaining sizes): each port equally likely."""
    ranges = parse_to_ports("1024-29999,32768-65535,40000")
    config = parse_config("masqOutBound: true\nnonMasqueradeCIDRs: []\nmasqLinkLocal: true").config
    rules = desired_rules(config, Family.IPV4, RenderOptions(to_ports=ranges))
    tcp = [r for r in rules if " -p tcp " in r]
    probabilities = [float(m) for r in tcp for m in _PROBABILITY.findall(r)]
    sizes = [hi - lo + 1 for lo, hi in ranges]
    taken = 1.0
    shares = []
    for p in [*probabilities, 1.0]:
        shares.append(taken * p)
        taken *= 1 - p
    for share, size in zip(shares, sizes, strict=True):
        assert share == pytest.approx(size / sum(sizes), abs=1e-8)


def test_jump_rule_is_the_specs_canonical_form() -> None:
    """The jump rule is SPEC §3's, word for word, naming our chain twice."""
    assert jump_rule(DEFAULT_CHAIN) == (
        '-A POSTROUTING -m comment --comment "ip-masq-agent: ensure nat POSTROUTING directs all '
        'non-LOCAL destination traffic to our custom IP-MASQ-AGENT chain" -m addrtype ! '
        "--dst-type LOCAL -j IP-MASQ-AGENT"
    )


def test_restore_without_jump_leaves_postrouting_alone() -> None:
    """render_restore(with_jump=False) only declares and fills our chain."""
    text = render_restore(["-A X -j RETURN"], "X", with_jump=False)
    assert text == "*nat\n:X - [0:0]\n-A X -j RETURN\nCOMMIT\n"


@pytest.mark.parametrize(
    ("text", "ranges"),
    [
        ("", ()),
        ("40000", ((40000, 40000),)),
        ("1-65535", ((1, 65535),)),
        ("1024-29999,32768-65535", ((1024, 29999), (32768, 65535))),
        (" 1024-29999 , 32768-65535 ", ((1024, 29999), (32768, 65535))),
    ],
)
def test_to_ports_accepts_upstream_syntax(text: str, ranges: tuple[tuple[int, int], ...]) -> None:
    """--to-ports takes PORT or PORT-PORT, comma separated."""
    assert parse_to_ports(text) == ranges


@pytest.mark.parametrize(
    "text",
    ["0", "65536", "2000-1000", "1024-", "-1024", "+1024", "1_024", "a-b", "1024-29999,,1", "1:2"],
)
def test_to_ports_rejects_malformed_ranges(text: str) -> None:
    """Malformed or out-of-range --to-ports values raise ValueError naming the part."""
    with pytest.raises(ValueError, match="invalid port range"):
        parse_to_ports(text)


@pytest.mark.parametrize("name", ["IP-MASQ-AGENT", "MY-MASQ_chain.1", "a" * 28, "0abc"])
def test_chain_name_accepted(name: str) -> None:
    """Names iptables takes for a user chain are accepted."""
    assert validate_chain_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a" * 29,
        "-chain",
        "with space",
        "POSTROUTING",
        "INPUT",
        "ACCEPT",
        "DROP",
        "RETURN",
        "QUEUE",
        "MASQUERADE",
        "bad!",
    ],
)
def test_chain_name_rejected(name: str) -> None:
    """Names iptables refuses, built-in chains and targets (MASQUERADE would loop) are refused."""
    with pytest.raises(ValueError, match="invalid chain name"):
        validate_chain_name(name)


# -- the kernel's round trip -------------------------------------------------------------------


@pytest.fixture(scope="module")
def bare_ns() -> Iterator[str]:
    """One empty namespace for every round trip of this module."""
    require_root()
    with netns.namespace("golden") as name:
        yield name


def _tool(family: Family, backend: str, action: str) -> str:
    base = "iptables" if family == Family.IPV4 else "ip6tables"
    return f"{base}-{backend}-{action}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_kernel_accepts_golden_and_saves_it_back_verbatim(
    case: Case, backend: str, bare_ns: str
) -> None:
    """iptables-restore accepts each golden; iptables-save prints our chain and jump verbatim."""
    chain = case.render.chain
    for family in case.families:
        text = case.expected_path(family).read_text()
        rules = [line for line in text.splitlines() if line.startswith(f"-A {chain} ")]
        netns.run(bare_ns, _tool(family, backend, "restore"), "--noflush", "-w", "5", input=text)
        try:
            saved = netns.run(bare_ns, _tool(family, backend, "save"), "-t", "nat")
            ours = [line for line in saved.splitlines() if line.startswith(f"-A {chain} ")]
            assert ours == rules
            assert f":{chain} - [0:0]" in saved.splitlines()
            assert jump_rule(chain) in saved.splitlines()
            assert parse_save(saved, chain).matches(rules, jump_rule(chain))
        finally:
            live = parse_save(
                netns.run(bare_ns, _tool(family, backend, "save"), "-t", "nat"), chain
            )
            cleanup = removal(chain, live).text
            if cleanup:
                netns.run(bare_ns, _tool(family, backend, "restore"), "--noflush", input=cleanup)
        left = netns.run(bare_ns, _tool(family, backend, "save"), "-t", "nat")
        assert chain not in left


# -- every accepted CIDR form, as iptables-save prints it ------------------------------------

# Forms the parser accepts that Python and iptables print differently, or that a person writes
# differently from both: IPv4-mapped and IPv4-compatible IPv6, upper case, uncompressed zeros,
# leading zeros in a group, a single zero group, two zero runs of the same length.
CIDR_FORMS = [
    "10.0.0.0/8",
    "192.0.2.7/32",
    "0.0.0.0/1",
    "::ffff:10.0.0.0/104",
    "::FFFF:192.0.2.0/120",
    "::ffff:a00:0/104",
    "::ffff:0:0/96",
    "::10.0.0.0/104",
    "::1.0.0.0/104",
    "::/96",
    "::1/128",
    "::2/128",
    "2001:DB8::/32",
    "2001:0db8:0000:0000:0000:0000:0000:0000/32",
    "2001:db8:0:1::/64",
    "2001:db8::1:0:0:0/80",
    "2001:db8:0:0:1:0:0:0/96",
    "2001:db8:1:0:1::/80",
    "fe80::/10",
    "FC00::/7",
    "64:ff9b::c000:200/120",
]


def _config_with(cidrs: list[str]) -> str:
    return "nonMasqueradeCIDRs: [" + ", ".join(f"'{c}'" for c in cidrs) + "]\ncidrLimit: 100\n"


@pytest.mark.parametrize("text", CIDR_FORMS)
def test_a_cidr_renders_as_glibc_prints_its_address(text: str) -> None:
    """The rendered -d address is what inet_ntop (ip6tables' printer) makes of it."""
    import ipaddress
    import socket

    from masqd.core.rules import iptables_cidr

    net = ipaddress.ip_network(text)
    family = socket.AF_INET6 if net.version == 6 else socket.AF_INET
    assert iptables_cidr(net) == socket.inet_ntop(family, net.network_address.packed)


def test_every_ipv6_address_shape_renders_as_glibc_prints_it() -> None:
    """All 256 patterns of zero and non-zero groups (with 1 and ffff as the non-zero values,
    which the IPv4 forms turn on), against inet_ntop."""
    import ipaddress
    import socket

    from masqd.core.rules import iptables_cidr

    for pattern in range(256):
        for value in (1, 0xFFFF, 0xA00):
            groups = [value if pattern >> i & 1 else 0 for i in range(8)]
            packed = b"".join(g.to_bytes(2, "big") for g in groups)
            net = ipaddress.IPv6Network((packed, 128))
            assert iptables_cidr(net) == socket.inet_ntop(socket.AF_INET6, packed), groups


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_accepted_cidr_form_reads_back_as_rendered(backend: str, bare_ns: str) -> None:
    """The round trip on the real kernel: each form, parsed and rendered, is restored, and
    iptables-save prints our chain exactly as rendered (so it is never rewritten for looking
    different)."""
    config = parse_config(_config_with(CIDR_FORMS)).config
    chain = DEFAULT_CHAIN
    for family in (Family.IPV4, Family.IPV6):
        rules = desired_rules(config, family, RenderOptions())
        assert len(rules) > 2
        text = render(config, family, RenderOptions())
        netns.run(bare_ns, _tool(family, backend, "restore"), "--noflush", "-w", "5", input=text)
        try:
            saved = netns.run(bare_ns, _tool(family, backend, "save"), "-t", "nat")
            assert parse_save(saved, chain).specs == rules
        finally:
            saved = netns.run(bare_ns, _tool(family, backend, "save"), "-t", "nat")
            cleanup = removal(chain, parse_save(saved, chain)).text
            if cleanup:
                netns.run(bare_ns, _tool(family, backend, "restore"), "--noflush", input=cleanup)
