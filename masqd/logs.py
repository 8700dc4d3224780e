"""Log setup: readable text for a terminal, or one JSON object a line for a log pipeline.

Every interval re-checks the same rules, so a standing problem would repeat the same warning
or error every few seconds. RepeatFilter lets each such line through once and then only when
it changes: the memory of a logger is cleared when that logger next reports progress at info
(a sync that changed something, a config loaded, a worker started), so a problem that comes
back after it was fixed is logged again.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time

MAX_REMEMBERED = 256
"""Distinct warnings remembered per logger; past that the memory starts afresh."""


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class RepeatFilter(logging.Filter):
    """Drops a warning or error identical to one its logger logged since its last info line."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._seen: dict[str, set[tuple[int, str]]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            if record.levelno >= logging.INFO:
                with self._lock:
                    self._seen.pop(record.name, None)
            return True
        key = (record.levelno, record.getMessage())
        with self._lock:
            seen = self._seen.setdefault(record.name, set())
            if key in seen:
                return False
            if len(seen) >= MAX_REMEMBERED:
                seen.clear()
            seen.add(key)
        return True


def setup(fmt: str = "text", level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-5s %(name)s: %(message)s"))
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # grpc and tenacity are chatty at debug; our own messages say what matters.
    logging.getLogger("grpc").setLevel(max(root.level, logging.WARNING))
