"""--backend iptables|nftables|auto against what the node shows (masqd.core.choice), and the
facts as masqd.host.nodefacts reads them from module lists (here in a temporary directory)."""

from __future__ import annotations

from pathlib import Path

import pytest

from masqd.core.choice import (
    EXTENSIONS,
    IPTABLES,
    Modules,
    NodeFacts,
    choose_backend,
    missing_modules,
)
from masqd.core.model import NFTABLES
from masqd.host import nodefacts

KUBE_PROXY = NodeFacts(kube_proxy_tables=("ip kube-proxy", "ip6 kube-proxy"))
NO_XT = NodeFacts(missing=("xt_comment",))


@pytest.mark.parametrize(
    ("requested", "facts", "backend"),
    [
        ("auto", NodeFacts(), IPTABLES),
        ("auto", KUBE_PROXY, NFTABLES),
        ("auto", NO_XT, NFTABLES),
        ("nftables", NodeFacts(), NFTABLES),
        ("iptables", KUBE_PROXY, IPTABLES),
    ],
)
def test_the_backend_follows_the_flag_and_auto_follows_the_node(
    requested: str, facts: NodeFacts, backend: str
) -> None:
    """auto: nftables where kube-proxy runs in nftables mode or xt modules are missing, else
    the iptables backend as before; an explicit choice is kept."""
    choice = choose_backend(requested, facts)
    assert choice.backend == backend and not choice.refused


def test_auto_says_what_it_saw() -> None:
    assert "kube-proxy runs in nftables mode (table ip kube-proxy" in (
        choose_backend("auto", KUBE_PROXY).why
    )
    assert choose_backend("auto", NO_XT).why == "auto: the kernel lacks xt_comment"


def test_iptables_without_its_modules_is_refused_naming_nftables() -> None:
    """Asked for the iptables backend on a kernel without xt_comment: still iptables (as
    asked), refused with a reason that names the module and the backend that would work."""
    choice = choose_backend("iptables", NO_XT)
    assert choice.backend == IPTABLES
    assert "xt_comment" in choice.refused and "--backend nftables" in choice.refused


def test_auto_without_nft_installed_stays_on_iptables() -> None:
    choice = choose_backend(
        "auto", NodeFacts(kube_proxy_tables=("ip kube-proxy",), nft_installed=False)
    )
    assert choice.backend == IPTABLES and not choice.refused
    assert choose_backend("auto", NodeFacts(missing=("xt_comment",), nft_installed=False)).refused


def test_a_registered_extension_is_present_whatever_the_module_lists_say() -> None:
    modules = Modules(
        registered=frozenset({"comment", "addrtype", "MASQUERADE"}), available=frozenset()
    )
    assert missing_modules(EXTENSIONS, modules) == ()


def test_a_kernel_without_modules_has_only_what_is_registered() -> None:
    """No /proc/modules: everything is built in, so an unregistered extension is missing."""
    modules = Modules(registered=frozenset({"comment"}), modular=False)
    assert missing_modules(EXTENSIONS, modules) == ("xt_addrtype", "xt_MASQUERADE")


def test_unreadable_module_lists_mean_nothing_is_taken_as_missing() -> None:
    """In a container without /lib/modules masqd cannot tell: it takes nothing as missing."""
    assert missing_modules(EXTENSIONS, Modules(available=None)) == ()


def test_module_lists_are_read_for_the_running_kernel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """modules.builtin and modules.dep under /lib/modules/RELEASE, any compression."""
    monkeypatch.setattr(nodefacts.platform, "release", lambda: "6.12.0-rhel10")
    release = tmp_path / "6.12.0-rhel10"
    release.mkdir()
    (release / "modules.builtin").write_text("kernel/net/netfilter/xt_addrtype.ko\n")
    (release / "modules.dep").write_text(
        "kernel/net/netfilter/xt_MASQUERADE.ko.xz: kernel/net/netfilter/nf_nat.ko.xz\n"
        "kernel/net/netfilter/nf_nat.ko.xz:\n"
    )
    modules = nodefacts.modules(str(tmp_path))
    assert modules.available == frozenset({"xt_addrtype", "xt_MASQUERADE", "nf_nat"})
    unloaded = Modules(frozenset(), True, modules.available)
    assert missing_modules(EXTENSIONS, unloaded) == ("xt_comment",)
    assert nodefacts.modules(str(tmp_path / "nothing")).available is None
