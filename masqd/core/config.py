"""The agent's policy file: parsing, defaults and strict validation. Pure: text in, config out.

Compatible with cce-ip-masq-agent and upstream ip-masq-agent: a key that is absent takes its
default (not its previous value), and an empty or missing file means all defaults. As in CCE's
agent, a CIDR list may hold DNS names; a name stays a name here (see core/entries.py).
"""

from __future__ import annotations

import collections
import difflib
import ipaddress
import reprlib
from dataclasses import dataclass
from typing import Any

import yaml

from masqd.core import bounds, yamldoc
from masqd.core.durations import format_duration, parse_duration
from masqd.core.entries import Entry, host_name
from masqd.core.entries import HostName as HostName
from masqd.core.entries import IPNetwork as IPNetwork
from masqd.core.errors import ConfigError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

RFC1918 = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
# What --nomasq-all-reserved-ranges adds, in upstream ip-masq-agent's order.
OTHER_RESERVED = (
    "100.64.0.0/10",  # RFC 6598
    "192.0.0.0/24",  # RFC 6890
    "192.0.2.0/24",  # RFC 5737
    "192.88.99.0/24",  # RFC 7526
    "198.18.0.0/15",  # RFC 6815
    "198.51.100.0/24",  # RFC 5737
    "203.0.113.0/24",  # RFC 5737
    "240.0.0.0/4",  # RFC 5735, former class E
)

MIN_RESYNC_INTERVAL = bounds.RESYNC_INTERVAL.low
MAX_RESYNC_INTERVAL = bounds.RESYNC_INTERVAL.high
DEFAULT_CIDR_LIMIT = 64
MAX_WARNINGS = 20
"""Warnings of one kind listed one by one; the rest are counted in one line."""


@dataclass(frozen=True)
class MasqConfig:
    """The policy in force: which destinations keep the pod's address and which are masqueraded."""

    non_masquerade_cidrs: tuple[Entry, ...] = tuple(ipaddress.ip_network(c) for c in RFC1918)
    """Destinations that keep the pod's own source address (both families, names, file order)."""
    masquerade_cidrs: tuple[Entry, ...] = ()
    """Destinations always masqueraded; their rules come first."""
    masq_out_bound: bool = False
    """IPv4: masquerade everything not matched above."""
    masq_out_bound_ipv6: bool = True
    """IPv6: masquerade everything not matched above."""
    masq_link_local: bool = False
    """False keeps 169.254.0.0/16 unmasqueraded."""
    masq_link_local_ipv6: bool = False
    """False keeps fe80::/10 unmasqueraded."""
    resync_interval: float = 60.0
    """Seconds between re-reading the file and re-checking the rules."""
    cidr_limit: int = DEFAULT_CIDR_LIMIT
    """The most nonMasqueradeCIDRs entries accepted (a name counts as one, as in CCE)."""
    source_cidrs: tuple[IPNetwork, ...] = ()
    """Sources whose connections our chain considers (both families); empty: every source."""
    snat_to_source: IPAddress | None = None
    """IPv4: SNAT masqueraded traffic to this address instead of MASQUERADE's choice."""
    snat_to_source_ipv6: IPAddress | None = None
    """The same for IPv6."""

    def snat_to(self, family: int) -> IPAddress | None:
        """The family's snatToSource address, if one is set."""
        return self.snat_to_source if family == 4 else self.snat_to_source_ipv6

    def names(self) -> tuple[HostName, ...]:
        """The DNS names of both lists, each once, in the order they first appear."""
        entries = (*self.masquerade_cidrs, *self.non_masquerade_cidrs)
        return tuple(dict.fromkeys(e for e in entries if isinstance(e, HostName)))


@dataclass(frozen=True)
class Origin:
    """Where an entry of the config in force came from (--config-dir: which file)."""

    key: str
    """nonMasqueradeCIDRs or masqueradeCIDRs."""
    entry: Entry
    source: str
    """The file's name."""


@dataclass(frozen=True)
class LoadedConfig:
    """A parsed file: the config, what was odd about it, and whether it was all defaults."""

    config: MasqConfig
    warnings: tuple[str, ...] = ()
    using_defaults: bool = False
    present: frozenset[str] = frozenset()
    """The keys the file sets (a merge tells a key set to its default from one left out)."""
    origins: tuple[Origin, ...] = ()
    """Which file each entry came from, when the config was merged from several."""


@dataclass(frozen=True)
class ParseOptions:
    """The process flags that change how the file is read."""

    enable_ipv6: bool = True
    all_reserved_ranges: bool = False


def default_config(all_reserved_ranges: bool = False) -> MasqConfig:
    """The configuration used when the file is missing or empty."""
    cidrs = RFC1918 + (OTHER_RESERVED if all_reserved_ranges else ())
    return MasqConfig(non_masquerade_cidrs=tuple(ipaddress.ip_network(c) for c in cidrs))


_KEYS = (
    "nonMasqueradeCIDRs",
    "masqueradeCIDRs",
    "masqOutBound",
    "masqOutBoundIPv6",
    "masqLinkLocal",
    "masqLinkLocalIPv6",
    "resyncInterval",
    "cidrLimit",
    "sourceCIDRs",
    "snatToSource",
    "snatToSourceIPv6",
)


def parse_config(text: str | bytes, options: ParseOptions | None = None) -> LoadedConfig:
    """Parse the policy file's text (YAML or JSON). Raise ConfigError naming key, entry, reason."""
    loaded = parse_document(text, options)
    check_cidr_limit(loaded.config)
    return loaded


def check_cidr_limit(config: MasqConfig, what: str = "") -> None:
    """ConfigError when nonMasqueradeCIDRs holds more entries than cidrLimit allows."""
    count, limit = len(config.non_masquerade_cidrs), config.cidr_limit
    if count > limit:
        raise ConfigError(
            f"nonMasqueradeCIDRs: {count} entries{what}, more than cidrLimit ({limit}); "
            "raise cidrLimit if this many are intended"
        )


def parse_document(text: str | bytes, options: ParseOptions | None = None) -> LoadedConfig:
    """Parse one file without judging its cidrLimit, which a merge applies to the total."""
    opts = options or ParseOptions()
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"the file is not UTF-8 text (byte {e.start})") from e
    if "\x00" in text:
        raise ConfigError("the file contains NUL bytes; it is not a YAML or JSON document")
    try:
        document = yamldoc.load(text)
    except yamldoc.Refused as e:
        raise ConfigError(f"refused: {e}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"not valid YAML or JSON: {_yaml_reason(e)}") from e
    node, doc = document.node, document.value

    defaults = default_config(opts.all_reserved_ranges)
    if doc is None:
        return LoadedConfig(defaults, using_defaults=True)
    if not isinstance(doc, dict):
        raise ConfigError(f"the top level must be a mapping of keys, not {_kind(doc)}")

    warnings = _duplicate_key_warnings(node) + _unknown_key_warnings(doc)
    non_masq = (
        _cidr_list(doc, "nonMasqueradeCIDRs", opts)
        if "nonMasqueradeCIDRs" in doc
        else defaults.non_masquerade_cidrs
    )
    masq = _cidr_list(doc, "masqueradeCIDRs", opts) if "masqueradeCIDRs" in doc else ()
    cidr_limit = _int(doc, "cidrLimit", defaults.cidr_limit)
    warnings += _duplicate_warnings("nonMasqueradeCIDRs", non_masq)
    warnings += _duplicate_warnings("masqueradeCIDRs", masq)
    sources = _source_cidrs(doc, opts)
    warnings += _duplicate_warnings("sourceCIDRs", sources) + _source_family_warnings(sources, opts)

    config = MasqConfig(
        non_masquerade_cidrs=non_masq,
        masquerade_cidrs=masq,
        masq_out_bound=_bool(doc, "masqOutBound", defaults.masq_out_bound),
        masq_out_bound_ipv6=_bool(doc, "masqOutBoundIPv6", defaults.masq_out_bound_ipv6),
        masq_link_local=_bool(doc, "masqLinkLocal", defaults.masq_link_local),
        masq_link_local_ipv6=_bool(doc, "masqLinkLocalIPv6", defaults.masq_link_local_ipv6),
        resync_interval=_interval(doc, defaults.resync_interval),
        cidr_limit=cidr_limit,
        source_cidrs=sources,
        snat_to_source=_snat_to(doc, "snatToSource", 4, opts),
        snat_to_source_ipv6=_snat_to(doc, "snatToSourceIPv6", 6, opts),
    )
    return LoadedConfig(config, tuple(warnings), present=frozenset(k for k in _KEYS if k in doc))


def config_to_dict(config: MasqConfig) -> dict[str, Any]:
    """The config as the file would spell it (for logs and `masqctl config validate`); an
    snatToSource that is not set is left out, as the file leaves it out."""
    spelled = {
        "nonMasqueradeCIDRs": [str(c) for c in config.non_masquerade_cidrs],
        "masqueradeCIDRs": [str(c) for c in config.masquerade_cidrs],
        "masqOutBound": config.masq_out_bound,
        "masqOutBoundIPv6": config.masq_out_bound_ipv6,
        "masqLinkLocal": config.masq_link_local,
        "masqLinkLocalIPv6": config.masq_link_local_ipv6,
        "resyncInterval": format_duration(config.resync_interval),
        "cidrLimit": config.cidr_limit,
        "sourceCIDRs": [str(c) for c in config.source_cidrs],
        "snatToSource": config.snat_to_source,
        "snatToSourceIPv6": config.snat_to_source_ipv6,
    }
    return {
        key: str(v) if key.startswith("snat") else v for key, v in spelled.items() if v is not None
    }


def _present(doc: dict[Any, Any], key: str) -> Any:
    value = doc[key]
    if value is None:
        raise ConfigError(
            f"{key}: has no value; remove the key to use its default, or give one"
            + (" ([] for none)" if key.endswith("CIDRs") else "")
        )
    return value


def _cidr_list(doc: dict[Any, Any], key: str, opts: ParseOptions) -> tuple[Entry, ...]:
    value = _present(doc, key)
    if not isinstance(value, list):
        raise ConfigError(f"{key}: must be a list of CIDRs, not {_kind(value)}")
    result = []
    for i, entry in enumerate(value):
        if not isinstance(entry, str):
            raise ConfigError(
                f"{key}[{i}]: {excerpt(entry)} must be a CIDR string, not {_kind(entry)}"
            )
        result.append(_entry(key, i, entry, opts))
    return tuple(result)


def _entry(key: str, i: int, entry: str, opts: ParseOptions) -> Entry:
    """A CIDR or a DNS name. The reason comes first, CCE's own wording (Go's net.ParseCIDR, as
    its agent prints it) after it in brackets, for those who search their logs for it."""
    if len(entry) > _LONGEST_ENTRY:  # quoted whole below, three times
        raise ConfigError(
            f"{key}[{i}] {excerpt(entry)}: not a CIDR nor a DNS name, {len(entry)} characters "
            "is far too long for either"
        )
    where = f"{key}[{i}] {entry!r}"
    text = entry.strip()
    cce_unparsed = f'[CIDR "{entry}" could not be parsed, invalid CIDR address: {entry}]'
    if "/" not in text:
        name = host_name(text)
        if isinstance(name, HostName):
            return name
        try:
            ipaddress.ip_address(text)
        except ValueError:
            raise ConfigError(
                f"{where}: not a CIDR, the prefix length is missing, nor a DNS name: {name} "
                + cce_unparsed
            ) from None
        raise ConfigError(
            f"{where}: not a CIDR, the prefix length is missing (e.g. {text}/32) {cce_unparsed}"
        )
    address, _, prefix = text.partition("/")
    # Python would also take a netmask or hostmask here (10.0.0.0/255.0.0.0); Go does not.
    if not (prefix.isascii() and prefix.isdigit()):
        raise ConfigError(
            f"{where}: not a CIDR, the prefix must be a length such as /8 {cce_unparsed}"
        )
    if "%" in address:
        raise ConfigError(
            f"{where}: not a CIDR, a scoped address (%zone) has no network {cce_unparsed}"
        )
    try:
        net = ipaddress.ip_network(text)
    except ValueError as e:
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ConfigError(f"{where}: not a valid CIDR ({e}) {cce_unparsed}") from e
        raise ConfigError(
            f"{where}: host bits are set; the network is {network} "
            f'[CIDR "{entry}" is not aligned to a CIDR block, ip: "{address}" '
            f'network: "{network}"]'
        ) from e
    if net.version == 6 and not opts.enable_ipv6:
        raise ConfigError(
            f"{where}: an IPv6 entry, but IPv6 is disabled (--enable-ipv6=false) "
            f"[ipv6 is not enabled, but ipv6 cidr {entry} provided]"
        )
    return net


def _source_cidrs(doc: dict[Any, Any], opts: ParseOptions) -> tuple[IPNetwork, ...]:
    """sourceCIDRs: CIDRs like the other lists, but no DNS names (a pod's source is an address
    of a pod CIDR, never a name's); absent or empty, every source is considered."""
    key = "sourceCIDRs"
    if key not in doc:
        return ()
    sources = []
    for i, entry in enumerate(_cidr_list(doc, key, opts)):
        if isinstance(entry, HostName):
            raise ConfigError(f"{key}[{i}] {str(entry)!r}: not a CIDR (names are for destinations)")
        sources.append(entry)
    return tuple(sources)


def _source_family_warnings(sources: tuple[IPNetwork, ...], opts: ParseOptions) -> list[str]:
    """A list that leaves one family out makes that family's chain consider no connection:
    likely a forgotten pod CIDR, worth saying (it is what the list says, so not an error)."""
    if not sources:
        return []
    versions = {c.version for c in sources}
    missing = [v for v in (4, 6) if v not in versions and (v == 4 or opts.enable_ipv6)]
    return [
        f"sourceCIDRs: no IPv{v} entry, so masqd masquerades no IPv{v} connection (add the "
        f"IPv{v} pod CIDR, or {'0.0.0.0/0' if v == 4 else '::/0'} for every source)"
        for v in missing
    ]


def _snat_to(doc: dict[Any, Any], key: str, version: int, opts: ParseOptions) -> IPAddress | None:
    """snatToSource (IPv4) or snatToSourceIPv6: one unicast address of that family.

    Whether the node holds it is not judged here (it may be added later): status warns."""
    if key not in doc:
        return None
    value = _present(doc, key)
    if not isinstance(value, str):
        raise ConfigError(f"{key}: must be an IPv{version} address string, not {_kind(value)}")
    where = f"{key} {value!r}"
    text = value.strip()
    if "/" in text:
        raise ConfigError(f"{where}: an address, not a CIDR (e.g. {text.partition('/')[0]})")
    if "%" in text:
        raise ConfigError(f"{where}: a scoped address (%zone) cannot be a source")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ConfigError(f"{where}: not an IP address") from None
    if address.version != version:
        other = "snatToSourceIPv6" if version == 4 else "snatToSource"
        raise ConfigError(f"{where}: an IPv{address.version} address; it belongs in {other}")
    if version == 6 and not opts.enable_ipv6:
        raise ConfigError(f"{where}: IPv6 is disabled (--enable-ipv6=false)")
    reason = _not_a_source(address)
    if reason:
        raise ConfigError(f"{where}: {reason}, which no packet can leave from")
    return address


def _not_a_source(address: IPAddress) -> str:
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_multicast:
        return "a multicast address"
    if address == ipaddress.IPv4Address("255.255.255.255"):
        return "the broadcast address"
    return ""


def _bool(doc: dict[Any, Any], key: str, default: bool) -> bool:
    if key not in doc:
        return default
    value = _present(doc, key)
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: must be true or false, not {_kind(value)} {excerpt(value)}")
    return value


def _int(doc: dict[Any, Any], key: str, default: int) -> int:
    if key not in doc:
        return default
    value = _present(doc, key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}: must be a whole number, not {_kind(value)} {excerpt(value)}")
    if value < 0:
        raise ConfigError(f"{key}: must not be negative, got {value}")
    return value


def _interval(doc: dict[Any, Any], default: float) -> float:
    key = "resyncInterval"
    if key not in doc:
        return default
    value = _present(doc, key)
    if not isinstance(value, str):
        raise ConfigError(
            f'{key}: must be a duration string such as "60s" or "1m30s", not {_kind(value)} '
            f"{excerpt(value)}"
        )
    if len(value) > _LONGEST_DURATION:
        raise ConfigError(f"{key}: {excerpt(value)} is too long to be a duration")
    try:
        seconds = parse_duration(value)
    except ValueError as e:
        raise ConfigError(f"{key}: {e}") from e
    if not bounds.RESYNC_INTERVAL.contains(seconds):
        raise ConfigError(
            f"{key}: {excerpt(value)} is out of bounds; it must be between 1s and 24h"
        )
    return seconds


def _unknown_key_warnings(doc: dict[Any, Any]) -> list[str]:
    unknown = [key for key in doc if key not in _KEYS]
    warnings = []
    for key in unknown[:MAX_WARNINGS]:
        text = f"unknown key {excerpt(key)} is ignored"
        name = str(key)
        close = [] if len(name) > 64 else difflib.get_close_matches(name, _KEYS, n=1, cutoff=0.6)
        if not close:
            close = [k for k in _KEYS if k.lower() == name.lower()]
        if close:
            text += f"; did you mean {close[0]!r}?"
        warnings.append(text)
    return warnings + _more(len(unknown), "unknown keys are ignored")


def _duplicate_key_warnings(node: yaml.Node | None) -> list[str]:
    """Keys given twice at the top level: YAML and JSON keep the last, which is easy to miss."""
    if not isinstance(node, yaml.MappingNode):
        return []
    counts = collections.Counter(k.value for k, _ in node.value if isinstance(k, yaml.ScalarNode))
    repeated = [k for k, n in counts.items() if n > 1]  # first-seen order
    return [
        f"key {excerpt(k)} is given more than once; the last value is used"
        for k in repeated[:MAX_WARNINGS]
    ] + _more(len(repeated), "keys are given more than once")


def _duplicate_warnings(key: str, cidrs: tuple[Entry, ...]) -> list[str]:
    seen: set[Entry] = set()
    dups = []
    for c in cidrs:
        if c in seen:
            dups.append(str(c))
        seen.add(c)
    return [f"{key}: {d} is listed more than once" for d in dups[:MAX_WARNINGS]] + _more(
        len(dups), f"{key} entries are listed more than once"
    )


def _more(count: int, what: str) -> list[str]:
    """The line that stands for the warnings past MAX_WARNINGS, if any."""
    return [f"and {count - MAX_WARNINGS} more {what}"] if count > MAX_WARNINGS else []


_excerpts = reprlib.Repr()
_excerpts.maxlevel, _excerpts.maxlist, _excerpts.maxdict = 2, 4, 4
_excerpts.maxstring, _excerpts.maxother, _excerpts.maxlong = 60, 60, 40
_LONGEST_ENTRY = 1024  # a DNS name has at most 253 characters, a CIDR 49: a name's own check
# says why one of up to this length is not a name
_LONGEST_DURATION = 64


def excerpt(value: Any) -> str:
    """A value as an error message may quote it: its repr, cut short (a file of a few hundred
    bytes can hold a structure whose full repr is gigabytes)."""
    return _excerpts.repr(value)


def _kind(value: Any) -> str:
    names = {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }
    return names.get(type(value), type(value).__name__)


def _yaml_reason(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    if len(problem) > 200:  # a tag or a token of the file may be quoted in it
        problem = problem[:200] + "..."
    if mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return str(problem)
