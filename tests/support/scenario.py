"""What many kernel tests share: a good config and its successor, what they render to, the
nat table as the node has it, files replaced the way editors and the kubelet do, traffic."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from masqd.core.config import parse_config
from masqd.core.model import Family
from masqd.core.rules import RenderOptions, desired_rules, jump_rule
from tests.support import netns
from tests.support.daemon import wait_until

CHAIN = "IP-MASQ-AGENT"
JUMP = jump_rule(CHAIN)
CONFIG_CHANGE_BOUND = 2.0
REPAIR_BOUND = 10.0

# A MASQUERADE rule in each family, so traffic leaves non-zero counters to compare.
GOOD = """\
masqueradeCIDRs: [10.10.10.10/32]
nonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12, fc00::/7]
masqOutBound: true
masqOutBoundIPv6: true
"""
GOOD_NEXT = """\
nonMasqueradeCIDRs: [10.0.0.0/8, 192.168.0.0/16, fd00::/8]
masqOutBound: false
masqOutBoundIPv6: true
"""


def desired(text: str, family: int) -> list[str]:
    return desired_rules(parse_config(text).config, Family(family), RenderOptions())


def save_nat(topo: netns.Topology, family: int) -> list[str]:
    """The whole nat table with counters, as iptables-save -c prints it (no comment lines)."""
    tool = f"{'iptables' if family == 4 else 'ip6tables'}-{topo.backend}-save"
    out = netns.run(topo.node, tool, "-t", "nat", "-c")
    return [line for line in out.splitlines() if not line.startswith("#")]


def snapshot(topo: netns.Topology) -> dict[int, list[str]]:
    return {family: save_nat(topo, family) for family in (4, 6)}


def put(path: Path, data: bytes | str) -> None:
    """Replace path with a regular file holding data, atomically (as an editor's save does)."""
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def put_symlink(path: Path, target: Path) -> None:
    """Replace path with a symlink to target, atomically."""
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}")
    tmp.symlink_to(target)
    os.replace(tmp, path)


def project(root: Path, files: dict[str, str], generation: int) -> None:
    """Lay files out in root as the kubelet projects a ConfigMap volume: a timestamped
    directory, `..data` pointing at it (swapped atomically by a rename), and one link per file
    through `..data`; links whose file is gone from the new generation are removed."""
    stamp = root / f"..2024_01_01_00_00_{generation:02d}.000000000"
    stamp.mkdir()
    for name, text in files.items():
        (stamp / name).write_text(text)
    tmp = root / "..data_tmp"
    tmp.symlink_to(stamp.name)
    os.replace(tmp, root / "..data")
    for name in files:
        if not (root / name).is_symlink():
            (root / name).symlink_to(f"..data/{name}")
    for name in os.listdir(root):
        if not name.startswith("..") and not (root / "..data" / name).exists():
            (root / name).unlink()


def time_until(condition: Callable[[], bool], timeout: float) -> float:
    """Seconds until condition holds (polled every 20 ms); fails after timeout."""
    start = time.monotonic()
    wait_until(condition, timeout, interval=0.02)
    return time.monotonic() - start


def send_traffic(topo: netns.Topology) -> None:
    """One datagram through each MASQUERADE rule of GOOD, so its counters are non-zero."""
    assert topo.source_seen(netns.DEST_V4["internet"]) == netns.NODE_UPLINK_V4
    assert topo.source_seen(netns.DEST_V4["vip"]) == netns.NODE_UPLINK_V4
    assert topo.source_seen(netns.DEST_V6["internet"]) == netns.NODE_UPLINK_V6
