"""Faults under traffic: what a hung worker or a broken iptables-restore costs in packets.

    python -m bench.faults [--cases stop,hang,inert] [--backend nft] [--hold 50]
                           [--masqd-flags "--retry-deadline 5s --iptables-timeout 2s"]

Not a figure of `make bench`: an account of issue 17's faults, for the closing table. For each
case, in a fresh pod/node/dest topology (tests/support/netns.py): a real `python -m masqd` of
the tree this runs from, in sync with a config that masquerades the "internet" (203.0.113.10);
a UDP probe every 10 ms from the pod, each from a new socket (a new conntrack entry, so each
meets the nat table afresh), the receiving namespace noting each source; then the fault, and
0.5 s later a config change that keeps the internet unmasqueraded. It reports how long until
packets leave with the pod's address, how many left with the wrong one meanwhile, and what
status and `masqctl health` said in the meantime (sampled every 0.5 s).

- stop: SIGSTOP on the IPv4 worker; SIGCONT after --hold seconds if it is still there.
- hang: every iptables-restore hangs (it reads its input, then sleeps); fixed after --hold.
- inert: every iptables-restore exits 0 having written nothing; fixed after --hold.

Runs as root; everything lives in the namespaces it creates, deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import netns
from tests.support.daemon import Masqd
from tests.support.observability import IptablesWrapper
from tests.support.scenario import GOOD, put

CHANGED = GOOD.replace("172.16.0.0/12,", "172.16.0.0/12, 203.0.113.0/24,")
INTERNET = netns.DEST_V4["internet"]
PORT = 31337
_SEND = """
import socket, sys, time
dst, port, until = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
while time.monotonic() < until:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(repr(time.monotonic()).encode(), (dst, port))
    s.close()
    time.sleep(0.01)
"""
# Into a file, not a pipe: a pipe nobody reads fills, and the receiver would stop receiving.
_RECEIVE = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
s.bind(("0.0.0.0", int(sys.argv[1])))
out = open(sys.argv[2], "w", buffering=1)
print("ready", flush=True)
while True:
    data, addr = s.recvfrom(100)
    out.write(f"{data.decode()} {addr[0]}\\n")
"""


@dataclass
class Outcome:
    case: str
    applied_after: float | None
    """Seconds from the config change until packets left with the pod's address."""
    wrong: int
    """Probes sent after the change that left with the node's address."""
    sent: int
    samples: list[tuple[float, bool | None, int]] = field(default_factory=list)
    """(seconds after the change, status in_sync of ipv4, masqctl health's exit code)."""

    def said(self) -> str:
        wrong_window = [
            s for s in self.samples if self.applied_after is None or s[0] < self.applied_after
        ]
        in_sync = sum(1 for _, ok, _ in wrong_window if ok)
        healthy = sum(1 for _, _, code in wrong_window if code == 0)
        n = len(wrong_window)
        return f"status in sync {in_sync}/{n}, health exit 0 {healthy}/{n} of the samples"


def run_case(case: str, backend: str, hold: float, flags: list[str]) -> Outcome:
    with netns.topology(backend) as topo, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        wrapper = IptablesWrapper.create(work / "bin", backend)
        env_path = os.environ["PATH"]
        os.environ["PATH"] = wrapper.environ_path()
        config = work / "ip-masq-agent"
        config.write_text(GOOD)
        daemon = Masqd(topo.node, work, config, "--iptables-mode", backend, *flags)
        seen_file = work / "seen"
        receive = [sys.executable, "-c", _RECEIVE, str(PORT), str(seen_file)]
        receiver = subprocess.Popen(
            ["ip", "netns", "exec", topo.dest, *receive],
            stdout=subprocess.PIPE,
            text=True,
        )
        sender: subprocess.Popen[bytes] | None = None
        stopped = 0
        try:
            daemon.start()
            assert receiver.stdout is not None and receiver.stdout.readline().strip() == "ready"
            until = time.monotonic() + hold + 20
            sender = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    topo.pod,
                    sys.executable,
                    "-c",
                    _SEND,
                    INTERNET,
                    str(PORT),
                    repr(until),
                ]
            )
            time.sleep(1.0)
            if case == "stop":
                stopped = next(f.pid for f in daemon.status().families if f.family == 1)
                os.kill(stopped, signal.SIGSTOP)
            elif case == "hang":
                wrapper.hang_marker.touch()
            else:
                wrapper.inert_marker.touch()
            time.sleep(0.5)
            changed_at = time.monotonic()
            put(config, CHANGED)
            samples = []
            fixed = False
            while time.monotonic() < until - 5:
                t = time.monotonic() - changed_at
                if not fixed and t >= hold:
                    fixed = True
                    if case == "stop" and os.path.exists(f"/proc/{stopped}"):
                        os.kill(stopped, signal.SIGCONT)
                    wrapper.hang_marker.unlink(missing_ok=True)
                    wrapper.inert_marker.unlink(missing_ok=True)
                samples.append((round(t, 1), _in_sync(daemon), _health(daemon)))
                if fixed and t > hold + 10:
                    break
                time.sleep(0.5)
        finally:
            os.environ["PATH"] = env_path
            if sender is not None:
                sender.kill()
                sender.wait()
            if stopped and os.path.exists(f"/proc/{stopped}"):
                os.kill(stopped, signal.SIGKILL)
            daemon.stop()
            receiver.kill()
            receiver.wait()
            out = seen_file.read_text() if seen_file.exists() else ""
        lines = [line.split() for line in out.splitlines()]
        seen = [(float(words[0]), words[1]) for words in lines if len(words) == 2]
        after = [(t, src) for t, src in seen if t >= changed_at]
        wrong = [t for t, src in after if src != netns.POD_V4]
        right = [t for t, src in after if src == netns.POD_V4]
        applied = (min(right) - changed_at) if right else None
        return Outcome(case, applied, len(wrong), len(after), samples)


def _in_sync(daemon: Masqd) -> bool | None:
    try:
        return bool(next(f.in_sync for f in daemon.status().families if f.family == 1))
    except Exception:
        return None


def _health(daemon: Masqd) -> int:
    argv = [sys.executable, "-m", "masqctl.cli", "--socket", daemon.socket, "health"]
    return subprocess.run(argv, capture_output=True, timeout=30).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.faults")
    parser.add_argument("--cases", default="stop,hang,inert")
    parser.add_argument("--backend", default="nft", choices=("nft", "legacy"))
    parser.add_argument("--hold", type=float, default=50.0, help="seconds the fault lasts")
    parser.add_argument("--masqd-flags", default="", help="more flags for masqd")
    args = parser.parse_args(argv)
    flags = shlex.split(args.masqd_flags)
    for case in args.cases.split(","):
        o = run_case(case, args.backend, args.hold, flags)
        applied = f"{o.applied_after:.1f}s" if o.applied_after is not None else "never"
        print(
            f"{case:5} {args.backend}: applied after {applied}; {o.wrong} of {o.sent} probes "
            f"left with the node's address; meanwhile {o.said()}",
            flush=True,
        )
        print(json.dumps({"case": case, "samples": o.samples}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
