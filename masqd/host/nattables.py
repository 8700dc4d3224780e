"""Every owner's nat postrouting chains for one family, as `masqctl explain` needs them: the
nat table of both iptables modes (as iptables-save prints it), each nftables table with a nat
chain at postrouting (as nft lists it), and the node's own addresses.

Reads only, and creates nothing: a legacy nat table the kernel does not have is not read
(iptables-legacy-save would create it), and nft lists what exists. What cannot be read is
said in the path (`unread`), so an answer never rests silently on half the rules.
"""

from __future__ import annotations

from masqd.core import natparse
from masqd.core.errors import ApplyError
from masqd.core.model import Family
from masqd.core.natpath import Hook, NatPath
from masqd.host import iptables, nftables
from masqd.host.probe import addresses

# What iptables-nft-save says of a `table ip nat` it did not write (nft reads it instead).
_INCOMPATIBLE = "is incompatible, use 'nft' tool"
_NFT_TABLE_FAMILY = {Family.IPV4: "ip", Family.IPV6: "ip6"}


def read(family: Family, timeout: float = nftables.DEFAULT_TIMEOUT) -> NatPath:
    hooks: list[Hook] = []
    unread: list[str] = []
    nft_nat_read = False
    for mode in iptables.MODES:
        tool = iptables.Backend(family, mode)
        if not tool.available() or not tool.has_nat_table():
            continue
        try:
            text = tool.save_nat(timeout=timeout)
        except ApplyError as e:
            unread.append(f"not read: {tool.binary('save')}: {e}")
            continue
        hook = None if _INCOMPATIBLE in text else natparse.iptables_hook(text, tool.binary(""))
        if hook is not None:
            hooks.append(hook)
            nft_nat_read = nft_nat_read or mode == "nft"
    hooks += _nft_hooks(family, timeout, nft_nat_read, unread)
    try:
        local = addresses.local(family)
    except OSError as e:
        local = ()
        unread.append(f"not read: the node's addresses ({e}); no destination is taken as local")
    return NatPath(family, tuple(hooks), local, tuple(unread))


def _nft_hooks(family: Family, timeout: float, nft_nat_read: bool, unread: list[str]) -> list[Hook]:
    """Each nftables table's nat postrouting chains; iptables-nft's `table ip nat` is left
    out when iptables-nft-save read it (the same rules, in the words its owner wrote)."""
    if not nftables.installed():
        unread.append("not read: nftables tables (nft is not installed)")
        return []
    iptables_nat = f"{_NFT_TABLE_FAMILY[family]} nat"
    hooks: list[Hook] = []
    try:
        for spec in natparse.nat_tables(nftables.list_chains(timeout=timeout)):
            seen = spec.split()[0] in (_NFT_TABLE_FAMILY[family], "inet")
            if not seen or (spec == iptables_nat and nft_nat_read):
                continue
            hooks += natparse.nft_hooks(nftables.list_table(spec, timeout=timeout), family)
    except ApplyError as e:
        unread.append(f"not read: nftables tables ({e})")
    return hooks
