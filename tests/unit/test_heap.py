"""masqd.host.heap: freed C heap goes back to the kernel when masqd trims it (glibc)."""

from __future__ import annotations

import json
import subprocess
import sys

_FREE_THEN_TRIM = """
import json
from masqd.host import heap

def rss_kib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

blocks = [bytes(4096) for _ in range(10000)]  # 40 MB of malloc'd blocks (above pymalloc's)
pin = bytes(4096)  # allocated last: the heap's top stays in use, so free() alone keeps it all
del blocks
freed = rss_kib()
heap.trim()
print(json.dumps({"freed": freed, "trimmed": rss_kib()}))
"""


def test_trim_gives_freed_heap_back_to_the_kernel() -> None:
    """40 MB freed below a live block stay in the process until trim() hands them back."""
    proc = subprocess.run(
        [sys.executable, "-c", _FREE_THEN_TRIM], capture_output=True, text=True, check=True
    )
    seen = json.loads(proc.stdout)
    assert seen["freed"] - seen["trimmed"] > 30 * 1024, seen


def test_limit_arenas_is_callable_before_threads() -> None:
    """limit_arenas goes through glibc's mallopt (present here) and changes nothing else."""
    code = (
        "from masqd.host import heap; heap.limit_arenas(2); assert heap._libc.mallopt; print('ok')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "ok"
