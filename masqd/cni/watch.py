"""`masq-cni install --chain --watch`: keep masq-cni in the file the runtime loads, for as long
as the DaemonSet's pod runs.

Main CNIs rewrite their configuration (Cilium's agent and flannel on every start, AWS's on
restart, CCE's agent every minute), dropping an entry they do not know; a new main CNI may come
with a file that sorts first. The watch looks at the directory every `interval` seconds and
puts masq-cni back into whatever file the runtime loads now (masqd.cni.chaining). Until the
main CNI has written its first configuration it waits, saying so once. It never exits on a
problem (a container that exits is restarted and crash-loops): each problem is logged when it
appears, repeated every `remind` seconds while it lasts, and the watch carries on. SIGTERM
ends it, leaving the chain as it is (the plugin with its default failurePolicy is harmless
while masqd restarts).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from masqd.cni import chaining, conflist

INTERVAL = 1.0
REMIND = 600.0
RETRY_INSTALL = 60.0
"""Seconds before installing the binary is tried again after it failed (a host whose C library
cannot run it will not change by itself; a full disk might)."""


def log(message: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    sys.stdout.write(f"{stamp} masq-cni: {message}\n")
    sys.stdout.flush()


class Watch:
    """One conf dir kept chained; `install` puts the binary in place (once, before the first
    chain) and raises on failure."""

    def __init__(
        self,
        conf_dir: Path,
        settings: dict[str, Any],
        install: Callable[[], None],
        *,
        explicit: Path | None = None,
        interval: float = INTERVAL,
        remind: float = REMIND,
    ) -> None:
        self.conf_dir = conf_dir
        self.settings = settings
        self.install = install
        self.explicit = explicit
        self.interval = interval
        self.remind = remind
        self.installed = False
        self.install_failed_at: float | None = None
        self.stop = threading.Event()
        self._said = ""
        self._said_at = 0.0

    def say(self, message: str, *, problem: bool = False) -> None:
        """Log a state once, and a lasting problem again every `remind` seconds."""
        now = time.monotonic()
        if message != self._said or (problem and now - self._said_at >= self.remind):
            log(message)
            self._said, self._said_at = message, now

    def step(self) -> None:
        """One look at the directory, and whatever it needs."""
        try:
            plan = chaining.current_plan(self.conf_dir, self.explicit)
            if plan.target is None:
                self.say(plan.waiting)
                return
            chaining.check(self.conf_dir, plan)
            if not self.installed:
                failed = self.install_failed_at
                if failed is not None and time.monotonic() - failed < RETRY_INSTALL:
                    self.say(self._said, problem=True)
                    return
                try:
                    self.install()
                except Exception:
                    self.install_failed_at = time.monotonic()
                    raise
                self.installed = True
            for line in chaining.apply(self.conf_dir, plan, self.settings):
                log(line)
                self._said = ""
            self.say(f"chained in {self.conf_dir / plan.target}; watching {self.conf_dir}")
        except (conflist.ConflistError, OSError) as e:
            self.say(f"not chained: {e}; trying again as {self.conf_dir} changes", problem=True)
        except Exception as e:  # the binary cannot be installed, or cannot run on this host
            self.say(f"not chained, nothing installed: {e}", problem=True)

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop.set())
        log(f"watching {self.conf_dir} every {self.interval:g}s")
        while not self.stop.is_set():
            self.step()
            self.stop.wait(self.interval)
        log("stopped; the chain is left as it is")
        return 0
