"""A real DNS server for tests (Debian's dnsmasq, run inside a test namespace) and the node
namespace's resolver pointed at it through /etc/netns/NODE/resolv.conf, which `ip netns exec`
bind-mounts over /etc/resolv.conf. What is created under /etc/netns is removed afterwards."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.support.daemon import wait_until

ZONE = "masq.test"  # RFC 6761: .test is never delegated


class DnsServer:
    """dnsmasq answering for ZONE from a hosts file; `answer` rewrites it and reloads."""

    def __init__(self, netns: str, address: str, ttl: int) -> None:
        self.netns = netns
        self.address = address
        self.ttl = ttl
        self.dir = Path(tempfile.mkdtemp(prefix="masqd-dns-"))
        self.hosts = self.dir / "hosts"
        self.proc: subprocess.Popen[bytes] | None = None

    def answer(self, records: dict[str, list[str]]) -> None:
        """name -> addresses (IPv4 and IPv6 mixed); a name not given is NXDOMAIN."""
        lines = [f"{a} {name}" for name, addresses in records.items() for a in addresses]
        tmp = self.hosts.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, self.hosts)
        if self.proc is not None:
            self.proc.send_signal(signal.SIGHUP)  # dnsmasq re-reads its hosts files

    def start(self) -> DnsServer:
        if not self.hosts.exists():
            self.answer({})
        self.proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.netns,
                "dnsmasq",
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                f"--addn-hosts={self.hosts}",
                f"--local=/{ZONE}/",
                f"--local-ttl={self.ttl}",
                f"--listen-address={self.address}",
                "--bind-interfaces",
                "--user=root",
                "--group=root",
                f"--pid-file={self.dir / 'pid'}",
                "--log-facility=-",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "log", "wb"),  # noqa: SIM115 - closed with the process
        )
        # Until dnsmasq has read its hosts file it has no SIGHUP handler: a reload would kill it.
        wait_until(lambda: f"read {self.hosts}" in self.log() or self.proc.poll() is not None, 10)
        assert self.proc.poll() is None, f"dnsmasq exited: {self.log()}"
        return self

    def log(self) -> str:
        path = self.dir / "log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def dns_server(netns: str, address: str, ttl: int = 300) -> Iterator[DnsServer]:
    server = DnsServer(netns, address, ttl)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)


@contextlib.contextmanager
def node_resolver(netns: str, nameserver: str) -> Iterator[Path]:
    """/etc/resolv.conf as processes in netns see it: `nameserver` only."""
    root = Path("/etc/netns")
    made_root = not root.exists()
    path = root / netns / "resolv.conf"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.write_text(f"nameserver {nameserver}\n")
        yield path
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)
        if made_root:
            with contextlib.suppress(OSError):
                root.rmdir()
