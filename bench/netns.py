"""The driver's side of a figure: a fresh network namespace, the figure re-executed inside it.

`ip netns exec NS python -m bench.<module> ...` runs the figure's process in the namespace, so
everything it writes (iptables rules, the masqd it starts) lives and dies with the namespace.
The namespace is deleted in `finally`, also when the figure fails or is interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence

from bench.common import NAMESPACE_PREFIX, Report

_counter = itertools.count()


@contextlib.contextmanager
def namespace(label: str) -> Iterator[str]:
    """An empty network namespace with loopback up, deleted afterwards."""
    name = f"{NAMESPACE_PREFIX}{os.getpid() % 100000}-{next(_counter)}-{label}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=30)
    try:
        subprocess.run(
            ["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


class FigureFailed(RuntimeError):
    """A figure's process exited badly or printed no result."""


def run_figure(module: str, args: Sequence[str], label: str, timeout: float = 600) -> Report:
    """Run `python -m bench.<module> ARGS` in a fresh namespace and return what it reported."""
    with namespace(label) as ns:
        argv = ["ip", "netns", "exec", ns, sys.executable, "-m", f"bench.{module}", *args]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise FigureFailed(f"{' '.join(argv[4:])} exited {proc.returncode}:\n{_tail(proc.stderr)}")
    try:
        return Report.parse(proc.stdout)
    except ValueError as e:
        raise FigureFailed(f"{' '.join(argv[4:])}: {e}:\n{_tail(proc.stderr)}") from e


def info_main(
    module: str, inside: Callable[[str, int], None], argv: list[str] | None, rounds: int
) -> int:
    """The command line of an info-only bench (`python -m bench.<module> [--rounds N]`): run
    `inside(mode, rounds)` for each backend, each in a fresh namespace (the module re-executed
    there with --inside MODE), and print one table of their rows."""
    from bench.__main__ import BACKENDS, table

    parser = argparse.ArgumentParser(prog=f"python -m bench.{module}")
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--inside", choices=BACKENDS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inside:
        inside(args.inside, args.rounds)
        return 0
    rows = []
    for mode in BACKENDS:
        more = ["--inside", mode, "--rounds", str(args.rounds)]
        rows += run_figure(module, more, f"{module[:8]}-{mode}").rows
    print(table(rows))
    return 0


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])
