"""How long a caller waits for a Resync, against the bare iptables command it stands for.

    python -m bench.resync_latency [--rounds 30] [--backends nft,legacy]

Two figures per backend, each the median (min-max) of the rounds, with the ratio of medians:

- **changed**: `Resync(family=IPv4, wait)` after someone flushed our IPv4 chain, so masqd must
  read the table, see the difference and restore the chain, against a bare
  `iptables-restore --noflush -w 5` of the very text masqd restores, after the same flush.
  (`iptables-save` + `iptables-restore`, the least any correct sync must do, is shown too.)
- **no-op**: `Resync(family=IPv4, wait)` with nothing to change, against a bare
  `iptables-save -t nat` (a no-op sync must read, and should do nothing more).

How: for each backend the bench re-executes itself inside a fresh network namespace
(`ip netns exec mqbench-rl-… python -m bench.resync_latency --inside`), deleted afterwards;
the inner run refuses to start outside such a namespace. Inside, masqd runs **in the bench
process** the way `masqd` starts it: a Supervisor whose workers are forked before gRPC is
imported, then the ApiServer on a unix socket; the bench calls it through a real gRPC channel
with masqctl's client library. Drift checks are off (an hour), so nothing but the bench's own
requests syncs. "Changed" is forced by flushing the chain with iptables before each round
(untimed) rather than by alternating config files: a file change is also picked up by masqd's
own file watch, which would race the Resync and sometimes leave it nothing to do. Timed
actions alternate (masqd, bare, bare, masqd, ...) so drift on a shared machine hits both, and
the first two rounds of each are dropped.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

NS_PREFIX = "mqbench-rl-"
CHAIN = "IP-MASQ-AGENT"
CONFIG = "nonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16]\nmasqOutBound: true\n"
WARMUP = 2


# -- the outer run: one namespace per backend, then the table -------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.resync_latency",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=30, help="timed rounds per figure (≥ 20)")
    parser.add_argument("--backends", default="nft,legacy", help="comma-separated")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="nft", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inside:
        return inside(args.backend, args.rounds)
    if os.geteuid() != 0:
        print("the bench needs root: it creates network namespaces", file=sys.stderr)
        return 2
    if args.rounds < 20:
        parser.error("--rounds must be at least 20")
    results = [in_fresh_namespace(b, args.rounds) for b in args.backends.split(",")]
    print(table(results, args.rounds))
    return 0


def in_fresh_namespace(backend: str, rounds: int) -> dict[str, Any]:
    name = f"{NS_PREFIX}{os.getpid()}-{backend}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        argv = [sys.executable, "-m", "bench.resync_latency", "--inside", "--backend", backend]
        print(f"{backend}: {rounds} rounds per figure in namespace {name} ...", file=sys.stderr)
        proc = subprocess.run(
            ["ip", "netns", "exec", name, *argv, "--rounds", str(rounds)],
            stdout=subprocess.PIPE,
            text=True,
            timeout=600,
            check=True,
        )
        return dict(json.loads(proc.stdout.splitlines()[-1]))
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def table(results: list[dict[str, Any]], rounds: int) -> str:
    lines = [
        f"Resync wait-for-completion latency through the API, in process; ms, median (min-max) "
        f"of {rounds} rounds",
        f"{'figure':<38} {'backend':<7} {'masqd':>20} {'bare':>20} {'ratio':>6}",
    ]
    for r in results:
        for label, ours, bare in (
            ("changed Resync vs iptables-restore", "changed", "restore"),
            ("changed Resync vs save + restore", "changed_again", "save_restore"),
            ("no-op Resync vs iptables-save -t nat", "noop", "save"),
        ):
            a, b = r[ours], r[bare]
            ratio = a["median"] / b["median"]
            lines.append(
                f"{label:<38} {r['backend']:<7} {_stats(a):>20} {_stats(b):>20} {ratio:>6.2f}"
            )
    return "\n".join(lines)


def _stats(s: dict[str, float]) -> str:
    return f"{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f})"


# -- the inner run, in the namespace --------------------------------------------------------


def inside(backend: str, rounds: int) -> int:
    here = subprocess.run(["ip", "netns", "identify"], capture_output=True, text=True).stdout
    if not here.strip().startswith(NS_PREFIX):
        print("refusing to run outside a bench namespace", file=sys.stderr)
        return 2
    from masqd.core.model import Family
    from masqd.core.rules import RenderOptions, render_restore
    from masqd.core.settings import Settings
    from masqd.daemon import Daemon

    with tempfile.TemporaryDirectory(prefix="masqd-bench-") as tmp:
        config = os.path.join(tmp, "ip-masq-agent")
        with open(config, "w") as f:
            f.write(CONFIG)
        settings = Settings(
            config_path=config,
            socket=os.path.join(tmp, "masqd.sock"),
            iptables_mode=backend,
            render=RenderOptions(),
            drift_check_interval=3600.0,
        )
        daemon = Daemon(settings).start()
        supervisor = daemon.supervisor
        assert supervisor is not None
        from masqd.client import Client

        client = Client(settings.socket, timeout=10.0)
        try:
            _wait_in_sync(client)
            desired = supervisor.desired(Family.IPV4) or []
            text = render_restore(desired, CHAIN, with_jump=False)
            tool = f"iptables-{backend}"

            def resync(changed: bool) -> Callable[[], None]:
                def call() -> None:
                    (result,) = client.resync("ipv4", timeout=10.0).results
                    if not result.ok or result.changed != changed:
                        raise RuntimeError(f"unexpected sync result: {result}")

                return call

            def flush() -> None:
                _run([tool, "-w", "5", "-t", "nat", "-F", CHAIN])

            def save() -> None:
                _run([f"{tool}-save", "-t", "nat"])

            def restore() -> None:
                _run([f"{tool}-restore", "--noflush", "-w", "5"], text)

            def save_and_restore() -> None:
                save()
                restore()

            changed, bare_restore = _interleaved(rounds, resync(True), restore, flush)
            changed_again, save_restore = _interleaved(
                rounds, resync(True), save_and_restore, flush
            )
            noop, bare_save = _interleaved(rounds, resync(False), save, lambda: None)
        finally:
            client.close()
            daemon.stop()
    print(
        json.dumps(
            {
                "backend": backend,
                "changed": changed,
                "restore": bare_restore,
                "changed_again": changed_again,
                "save_restore": save_restore,
                "noop": noop,
                "save": bare_save,
            }
        )
    )
    return 0


def _wait_in_sync(client: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.status()
        if status.families and all(f.in_sync for f in status.families):
            return
        time.sleep(0.05)
    raise RuntimeError("masqd did not get in sync")


def _run(argv: list[str], stdin: str | None = None) -> None:
    # No timeout: with one, subprocess polls for the exit in 1 ms sleeps (see bench.common.run).
    subprocess.run(argv, input=stdin, capture_output=True, text=True, check=True)


def _interleaved(
    rounds: int, a: Callable[[], Any], b: Callable[[], Any], prepare: Callable[[], None]
) -> tuple[dict[str, float], dict[str, float]]:
    """Time a and b (each after an untimed prepare), alternating order; ms stats of each."""
    times: tuple[list[float], list[float]] = ([], [])
    for i in range(rounds + WARMUP):
        order = ((0, a), (1, b)) if i % 2 == 0 else ((1, b), (0, a))
        for which, action in order:
            prepare()
            start = time.perf_counter()
            action()
            elapsed = (time.perf_counter() - start) * 1000
            if i >= WARMUP:
                times[which].append(elapsed)
    return _summary(times[0]), _summary(times[1])


def _summary(samples: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "n": len(samples),
    }


if __name__ == "__main__":
    sys.exit(main())
