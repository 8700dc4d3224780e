"""Looking a name up through the node's resolver: its A and AAAA records and their TTL.

dnspython, because the TTL is part of the answer (getaddrinfo does not say it). The resolver
configuration is read from /etc/resolv.conf at each look-up, so a node whose resolv.conf
changes is followed. Only DNS is asked: /etc/hosts and other NSS sources are not (a name
there resolves for the node's programs, not here). The names are absolute: no search list.
Imported lazily: a config without names never loads dnspython.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from masqd.core.names import Lookup

if TYPE_CHECKING:
    import dns.resolver

LOOKUP_TIMEOUT = 5.0
"""Seconds each of a look-up's two queries may take (dnspython's lifetime: every try of every
nameserver in resolv.conf included)."""


def lookup(name: str, timeout: float = LOOKUP_TIMEOUT) -> Lookup:
    """The name's addresses; a query that fails is None in the answer, with the reason."""
    import dns.resolver

    try:
        resolver = dns.resolver.Resolver()  # reads /etc/resolv.conf
    except dns.resolver.NoResolverConfiguration:
        return Lookup(None, None, error="no nameserver in /etc/resolv.conf")
    except OSError as e:
        return Lookup(None, None, error=f"cannot read /etc/resolv.conf: {e.strerror}")
    v4, ttl4, error4 = _query(resolver, name, "A", timeout)
    if v4 is None and "in time" in error4:  # the same servers would keep AAAA waiting too
        return Lookup(None, None, error=error4)
    v6, ttl6, error6 = _query(resolver, name, "AAAA", timeout)
    ttls = [t for t in (ttl4, ttl6) if t is not None]
    error = error4 if error4 == error6 else "; ".join(e for e in (error4, error6) if e)
    return Lookup(
        tuple(ipaddress.IPv4Address(a) for a in v4) if v4 is not None else None,
        tuple(ipaddress.IPv6Address(a) for a in v6) if v6 is not None else None,
        float(min(ttls)) if ttls else None,
        error,
    )


def _query(
    resolver: dns.resolver.Resolver, name: str, rdtype: str, timeout: float
) -> tuple[list[str] | None, int | None, str]:
    """(addresses, ttl, error): [] for a name without such records, None when the query failed.
    The TTL is the smallest along a CNAME chain."""
    import dns.exception
    import dns.resolver

    try:
        answer = resolver.resolve(
            f"{name}.", rdtype, search=False, lifetime=timeout, raise_on_no_answer=False
        )
    except dns.resolver.NXDOMAIN:
        return [], None, "no such name (NXDOMAIN)"
    except dns.resolver.LifetimeTimeout:
        return None, None, f"no answer from {_servers(resolver)} in time ({timeout:g}s)"
    except dns.resolver.NoNameservers:
        return None, None, f"{rdtype}: every nameserver failed ({_servers(resolver)})"
    except dns.exception.DNSException as e:
        return None, None, f"{rdtype}: {e}"
    if answer.rrset is None:
        return [], None, ""
    return [r.address for r in answer.rrset], answer.chaining_result.minimum_ttl, ""


def _servers(resolver: dns.resolver.Resolver) -> str:
    return ", ".join(str(n) for n in resolver.nameservers) or "no nameserver"
