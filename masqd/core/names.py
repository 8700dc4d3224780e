"""DNS names in the config: what masqd knows of each, and the config with names replaced by
their addresses. Pure: lookups in (host/dns.py makes them), decisions and configs out.

CCE's agent resolves every name at each resync and keeps the last good answer when a lookup
fails; so does masqd, off the sync path, and it reads the answer's TTL: a name is looked up
again after min(TTL, resyncInterval). A name that never resolved contributes nothing.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from masqd.core.config import MasqConfig
from masqd.core.entries import Entry, HostName, IPNetwork

MIN_REFRESH = 1.0
"""Seconds: the soonest a name is looked up again, whatever its TTL (a TTL of 0 is legal)."""
RETRY_AFTER = 5.0
"""Seconds after a failed lookup before the next try (or resyncInterval, if shorter)."""

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Lookup:
    """One look-up of a name's A and AAAA records."""

    v4: tuple[ipaddress.IPv4Address, ...] | None
    """The A records; () when there are none, None when the query failed."""
    v6: tuple[ipaddress.IPv6Address, ...] | None
    """The AAAA records, likewise."""
    ttl: float | None = None
    """The smallest TTL of the records answered, in seconds."""
    error: str = ""
    """Why a query failed or the name has no address; empty when both queries answered."""


@dataclass(frozen=True)
class Answer:
    """What masqd knows of one name."""

    name: str
    addresses: tuple[IPNetwork, ...] = ()
    """The last good answer as /32 and /128 networks, IPv4 first, each family sorted (so a
    server rotating its records does not rewrite the chain)."""
    answered_at: float | None = None
    """Wall-clock time of the last good answer; None while the name never resolved."""
    ttl: float | None = None
    error: str = ""
    """Why the last look-up failed; empty when it succeeded."""
    error_at: float | None = None

    @property
    def resolved(self) -> bool:
        return self.answered_at is not None


def settle(previous: Answer, lookup: Lookup, now: float) -> Answer:
    """The answer after a look-up: new addresses when the name has any, else the last good
    ones kept with the failure noted. A family whose query failed keeps its last addresses."""
    if not (lookup.v4 or lookup.v6):
        reason = lookup.error or "the name has no A or AAAA record"
        return dataclasses.replace(previous, error=reason, error_at=now)
    v4 = lookup.v4 if lookup.v4 is not None else _addresses(previous, 4)
    v6 = lookup.v6 if lookup.v6 is not None else _addresses(previous, 6)
    networks = tuple(ipaddress.ip_network(a) for a in (*sorted(v4), *sorted(v6)))
    return Answer(previous.name, networks, now, lookup.ttl)


def refresh_in(answer: Answer, interval: float) -> float:
    """Seconds until the name is looked up again: min(TTL, resyncInterval), or a retry."""
    if answer.error or not answer.resolved:
        return max(MIN_REFRESH, min(interval, RETRY_AFTER))
    ttl = answer.ttl if answer.ttl is not None else interval
    return max(MIN_REFRESH, min(ttl, interval))


def expand(config: MasqConfig, answers: Mapping[str, Answer]) -> MasqConfig:
    """The config with each name replaced, where it stands, by the addresses it resolves to now
    (none while it never resolved); an address already listed before it adds no second rule."""
    return dataclasses.replace(
        config,
        non_masquerade_cidrs=_expand_list(config.non_masquerade_cidrs, answers),
        masquerade_cidrs=_expand_list(config.masquerade_cidrs, answers),
    )


def expansion(
    entries: tuple[Entry, ...], answers: Mapping[str, Answer]
) -> list[tuple[IPNetwork, Entry]]:
    """Each network of the expanded list with the entry it comes from."""
    out: list[tuple[IPNetwork, Entry]] = []
    seen: set[IPNetwork] = set()
    for entry in entries:
        if not isinstance(entry, HostName):
            out.append((entry, entry))
            seen.add(entry)
            continue
        answer = answers.get(entry.name)
        for network in answer.addresses if answer else ():
            if network not in seen:
                out.append((network, entry))
                seen.add(network)
    return out


def _expand_list(entries: tuple[Entry, ...], answers: Mapping[str, Answer]) -> tuple[Entry, ...]:
    if not any(isinstance(e, HostName) for e in entries):
        return entries
    return tuple(network for network, _ in expansion(entries, answers))


def _addresses(answer: Answer, version: int) -> list[Address]:
    return [n.network_address for n in answer.addresses if n.version == version]
