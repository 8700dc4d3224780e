"""`masqd cleanup`: removing our chain and jump from both families and backends, and our
nftables tables, and nothing else (the chain's decision is `masqd.core.cleanup`'s; this is its
I/O).

A backend whose nat table this network namespace does not have is not touched at all, not
even read: reading legacy tables creates them (see `Backend.has_nat_table`).
"""

from __future__ import annotations

from collections.abc import Callable

from masqd.core.cleanup import Removal, removal
from masqd.core.errors import ApplyError
from masqd.core.livestate import parse_save
from masqd.core.model import Family
from masqd.host import nftables
from masqd.host.iptables import Backend


def clean(chain: str, modes: tuple[str, ...], say: Callable[[str], None]) -> list[str]:
    """Remove what is ours from each backend in `modes`, both families; returns the errors
    (each already worded for the operator), say() each thing done or left."""
    errors = []
    for mode in modes:
        for family in Family:
            backend = Backend(family, mode)
            tool = backend.binary("")
            try:
                plan = remove(backend, chain)
            except ApplyError as e:
                errors.append(f"{tool}: {e}")
                continue
            if plan.text is not None:
                what = f"the jump to {chain}" if plan.note else chain
                say(f"removed {what} from {tool}")
            if plan.note:
                say(f"{tool}: {plan.note}")
    return errors


def remove(backend: Backend, chain: str) -> Removal:
    """Remove our `chain` and our jumps to it from one backend's nat table (one family, one
    mode), in one restore; what was removed (text None: nothing, or no such table here)."""
    if not backend.available() or not backend.has_nat_table():
        return Removal(None)
    plan = removal(chain, parse_save(backend.save_nat(), chain))
    if plan.text is not None:
        backend.restore(plan.text)
    return plan


def clean_nftables(table: str, say: Callable[[str], None]) -> list[str]:
    """Remove our nftables table from both families (nothing without nft: then none can
    exist); returns the errors, say() each table removed."""
    if not nftables.installed():
        return []
    errors = []
    for family in Family:
        nft = nftables.Nft(family, table)
        try:
            if nft.delete_table():
                say(f"removed table {nft.spec}")
        except ApplyError as e:
            errors.append(str(e))
    return errors
