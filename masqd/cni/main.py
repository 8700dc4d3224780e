"""`masq-cni`: the CNI plugin when CNI_COMMAND is set, otherwise the installer's command line
(`masq-cni install ...`, `masq-cni uninstall ...`)."""

from __future__ import annotations

import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    args = sys.argv[1:] if argv is None else argv
    if "CNI_COMMAND" not in os.environ and args:
        from masqd.cni.install import cli

        return cli(args)
    from masqd.cni.plugin import run

    return run(os.environ, sys.stdin.buffer, sys.stdout, started)
