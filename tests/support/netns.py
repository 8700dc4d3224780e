"""Throwaway network namespaces for tests: a node, a pod behind it, and "the internet".

    pod (10.244.1.2, fd00:244:1::2) --veth-- node (10.244.1.1 | 192.0.2.1, 2001:db8:ff::1)
                                                  --veth-- dest (192.0.2.2, 2001:db8:ff::2)

(With add_other_source, the pod also holds 10.245.1.2 and fd00:245:1::2: a source outside the
pod CIDR, for sourceCIDRs.)

The dest namespace answers for every destination address the tests use (documentation and
private ranges) and reports the source address each UDP datagram arrived with. Nothing here
touches the host's own network: links are created inside the namespaces, and every namespace
is deleted on exit, also when a test fails.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

POD_V4 = "10.244.1.2"
POD_V6 = "fd00:244:1::2"
NODE_UPLINK_V4 = "192.0.2.1"
NODE_UPLINK_V6 = "2001:db8:ff::1"
DEST_UPLINK_V4 = "192.0.2.2"
DEST_UPLINK_V6 = "2001:db8:ff::2"
OTHER_V4 = "10.245.1.2"  # outside the pod CIDR 10.244.0.0/16 (Topology.add_other_source)
OTHER_V6 = "fd00:245:1::2"

# Destinations the dest namespace answers for. Each scenario decides which are masqueraded.
DEST_V4 = {
    "internet": "203.0.113.10",  # not in any default nonMasqueradeCIDRs entry
    "vpc": "172.16.0.10",  # in 172.16.0.0/12 (RFC 1918)
    "vip": "10.10.10.10",  # the seed's masqueradeCIDRs example, inside 10.0.0.0/8
    "cgnat": "100.64.230.10",  # in the seed's 100.64.230.0/24
    "link_local": "169.254.20.10",
}
DEST_V6 = {
    "internet": "2001:db8:1::10",
    "ula": "fd00:1::10",  # in fc00::/7
}

_counter = itertools.count()


def run(ns: str | None, *argv: str, input: str | None = None, check: bool = True) -> str:
    """Run a command inside namespace ns (None: here) and return its stdout."""
    cmd = ["ip", "netns", "exec", ns, *argv] if ns else list(argv)
    proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def unique_name(prefix: str) -> str:
    return f"mq{os.getpid() % 100000}-{next(_counter)}-{prefix}"


@contextlib.contextmanager
def namespace(prefix: str) -> Iterator[str]:
    """An empty network namespace with loopback up, deleted afterwards."""
    name = unique_name(prefix)
    run(None, "ip", "netns", "add", name)
    try:
        run(name, "ip", "link", "set", "lo", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


@dataclass
class Topology:
    node: str
    pod: str
    dest: str
    backend: str = "nft"
    receivers: list[subprocess.Popen[str]] = field(default_factory=list)

    def iptables(self, family: int, *args: str, check: bool = True) -> str:
        """Run iptables (family 4) or ip6tables (6) of this topology's backend in the node."""
        tool = f"{'iptables' if family == 4 else 'ip6tables'}-{self.backend}"
        return run(self.node, tool, *args, check=check)

    def chain(self, family: int, chain: str = "IP-MASQ-AGENT") -> list[str]:
        """Our chain as `iptables -t nat -S CHAIN` prints it, [] when it does not exist."""
        out = self.iptables(family, "-t", "nat", "-S", chain, check=False)
        return [line for line in out.splitlines() if line.startswith("-A ")]

    def postrouting(self, family: int) -> list[str]:
        out = self.iptables(family, "-t", "nat", "-S", "POSTROUTING")
        return [line for line in out.splitlines() if line.startswith("-A ")]

    def add_other_source(self) -> None:
        """Give the pod a second address outside the pod CIDR (another tenant's, say): the
        sender picks it with `source_seen(..., source=OTHER_V4)`, never by itself."""
        run(self.pod, "ip", "addr", "add", f"{OTHER_V4}/32", "dev", "eth0")
        # Deprecated at once (preferred_lft 0): kept, but never chosen as a source unasked.
        run(self.pod, "ip", "-6", "addr", "add", f"{OTHER_V6}/128", "dev", "eth0", "nodad",
            "preferred_lft", "0")  # fmt: skip
        run(self.node, "ip", "route", "add", f"{OTHER_V4}/32", "dev", "pod0")
        run(self.node, "ip", "-6", "route", "add", f"{OTHER_V6}/128", "dev", "pod0")
        run(self.dest, "ip", "route", "add", f"{OTHER_V4}/32", "via", NODE_UPLINK_V4)
        run(self.dest, "ip", "-6", "route", "add", f"{OTHER_V6}/128", "via", NODE_UPLINK_V6)

    def source_seen(
        self,
        dst: str,
        port: int | None = None,
        timeout: float = 5.0,
        *,
        source: str = "",
        at: str = "",
    ) -> str:
        """Send UDP from the pod (from `source`, if given) to dst; return the source address
        the receiving namespace (dest, or `at`) saw it arrive from."""
        port = port or 20000 + next(_counter) % 20000
        family = socket.AF_INET6 if ":" in dst else socket.AF_INET
        bind = "::" if family == socket.AF_INET6 else "0.0.0.0"
        receiver = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                at or self.dest,
                sys.executable,
                "-c",
                _RECEIVER,
                bind,
                str(port),
                str(timeout),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert receiver.stdout is not None
            ready = receiver.stdout.readline().strip()
            assert ready == "ready", (
                f"receiver did not start: {receiver.stderr.read() if receiver.stderr else ''}"
            )
            deadline = time.monotonic() + timeout
            while receiver.poll() is None and time.monotonic() < deadline:
                run(self.pod, sys.executable, "-c", _SENDER, dst, str(port), source)
                try:
                    receiver.wait(0.2)
                except subprocess.TimeoutExpired:
                    continue
            out, _ = receiver.communicate(timeout=timeout)
        finally:
            if receiver.poll() is None:
                receiver.kill()
                receiver.wait()
        source = out.strip()
        if not source:
            raise AssertionError(f"no datagram from the pod reached {dst}")
        return source


_RECEIVER = """
import socket, sys
bind, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET6 if ':' in bind else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((bind, port))
s.settimeout(timeout)
print('ready', flush=True)
try:
    data, addr = s.recvfrom(100)
    print(addr[0], flush=True)
except socket.timeout:
    pass
"""

_SENDER = """
import socket, sys
dst, port = sys.argv[1], int(sys.argv[2])
source = sys.argv[3] if len(sys.argv) > 3 else ''  # a source address to send from
s = socket.socket(socket.AF_INET6 if ':' in dst else socket.AF_INET, socket.SOCK_DGRAM)
if source:
    s.bind((source, 0))
s.sendto(b'hello', (dst, port))
"""


@contextlib.contextmanager
def topology(backend: str = "nft") -> Iterator[Topology]:
    """The three namespaces, wired and routed; the node forwards between pod and dest."""
    with namespace("node") as node, namespace("pod") as pod, namespace("dest") as dest:
        # Links are created inside the node namespace, never in the host's.
        run(node, "ip", "link", "add", "pod0", "type", "veth", "peer", "name", "eth0", "netns", pod)
        run(node, "ip", "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", dest)
        for ns, dev in ((node, "pod0"), (node, "up0"), (pod, "eth0"), (dest, "eth0")):
            run(ns, "ip", "link", "set", dev, "up")
        run(node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        run(node, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        # Pod side.
        run(node, "ip", "addr", "add", "10.244.1.1/24", "dev", "pod0")
        run(node, "ip", "-6", "addr", "add", "fd00:244:1::1/64", "dev", "pod0", "nodad")
        run(pod, "ip", "addr", "add", f"{POD_V4}/24", "dev", "eth0")
        run(pod, "ip", "-6", "addr", "add", f"{POD_V6}/64", "dev", "eth0", "nodad")
        run(pod, "ip", "route", "add", "default", "via", "10.244.1.1")
        run(pod, "ip", "-6", "route", "add", "default", "via", "fd00:244:1::1")
        # Uplink side.
        run(node, "ip", "addr", "add", f"{NODE_UPLINK_V4}/24", "dev", "up0")
        run(node, "ip", "-6", "addr", "add", f"{NODE_UPLINK_V6}/64", "dev", "up0", "nodad")
        run(dest, "ip", "addr", "add", f"{DEST_UPLINK_V4}/24", "dev", "eth0")
        run(dest, "ip", "-6", "addr", "add", f"{DEST_UPLINK_V6}/64", "dev", "eth0", "nodad")
        for addr in DEST_V4.values():
            run(dest, "ip", "addr", "add", f"{addr}/32", "dev", "eth0")
            run(node, "ip", "route", "add", f"{addr}/32", "via", DEST_UPLINK_V4)
        for addr in DEST_V6.values():
            run(dest, "ip", "-6", "addr", "add", f"{addr}/128", "dev", "eth0", "nodad")
            run(node, "ip", "-6", "route", "add", f"{addr}/128", "via", DEST_UPLINK_V6)
        # The "VPC" routes pod addresses back to the node, so unmasqueraded traffic is valid.
        run(dest, "ip", "route", "add", "10.244.0.0/16", "via", NODE_UPLINK_V4)
        run(dest, "ip", "-6", "route", "add", "fd00:244::/32", "via", NODE_UPLINK_V6)
        yield Topology(node, pod, dest, backend)
