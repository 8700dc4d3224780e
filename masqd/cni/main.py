"""`masq-cni`: the CNI plugin when CNI_COMMAND is set, otherwise the installer's command line
(`masq-cni install ...`, `masq-cni uninstall ...`)."""

from __future__ import annotations

import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    """Returns the installer's exit code; as the plugin, exits the process itself."""
    started = time.monotonic()
    args = sys.argv[1:] if argv is None else argv
    if "CNI_COMMAND" not in os.environ and args:
        from masqd.cni.install import cli

        return cli(args)
    from masqd.cni.plugin import run

    code = run(os.environ, sys.stdin.buffer, sys.stdout, started)
    # Skip the interpreter's teardown: with gRPC loaded it takes ~0.1 s, on every pod start,
    # after the result is out. Everything the plugin writes is flushed as it is written.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
