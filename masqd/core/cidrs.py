"""One family's CIDR entries collapsed into set elements that never overlap. Pure.

An nftables interval set refuses overlapping elements unless it merges them itself
(`auto-merge`), and merging rewrites the elements, their listing and their counters. Two CIDRs
either nest or are disjoint, so collapsing needs no merging at all: an entry inside another adds
nothing to the set (a warning says so), and the outer one becomes the element that covers it.
Adjacent CIDRs stay apart, so each element is exactly one config entry: its comment names that
entry and its counter counts that entry's traffic.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from masqd.core.config import IPNetwork


@dataclass(frozen=True)
class Collapsed:
    """The elements of one list, and what each of them covers besides itself."""

    elements: tuple[IPNetwork, ...]
    """The entries no other entry contains, in address order (as nft lists them)."""
    covered: tuple[tuple[IPNetwork, IPNetwork], ...] = ()
    """(entry, the element it lies in) for every other entry, in address order; the second
    listing of an entry given twice is covered by the first."""

    def covers(self, element: IPNetwork) -> tuple[IPNetwork, ...]:
        """The entries besides `element` itself that `element` stands for."""
        return tuple(entry for entry, outer in self.covered if outer == element)


def collapse(cidrs: Iterable[IPNetwork]) -> Collapsed:
    """Collapse one family's entries (never both families at once).

    Sorted by first address, and the wider of two with the same first address first, an entry
    lies inside an earlier one exactly when it lies inside the last element kept: kept elements
    are disjoint, so only the nearest one below can hold it. One pass after the sort.
    """
    ordered = sorted(cidrs, key=lambda c: (int(c.network_address), c.prefixlen))
    elements: list[IPNetwork] = []
    covered: list[tuple[IPNetwork, IPNetwork]] = []
    for cidr in ordered:
        outer = elements[-1] if elements else None
        if outer is not None and _inside(cidr, outer):
            covered.append((cidr, outer))
        else:
            elements.append(cidr)
    return Collapsed(tuple(elements), tuple(covered))


def covered_warnings(key: str, collapsed: Collapsed) -> list[str]:
    """A warning per entry that another entry of the same list already contains.

    Entries listed twice are the config parser's warning already, so they are not repeated.
    """
    return [
        f"{key}: {entry} lies inside {outer} and adds nothing"
        for entry, outer in collapsed.covered
        if entry != outer
    ]


def _inside(inner: IPNetwork, outer: IPNetwork) -> bool:
    """inner lies in outer (same family): outer's prefix is no longer and the addresses agree
    on it. Integer arithmetic: `subnet_of` costs several times more, ten thousand times."""
    if inner.prefixlen < outer.prefixlen:
        return False
    return int(inner.network_address) & int(outer.netmask) == int(outer.network_address)
