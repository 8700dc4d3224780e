"""Scraping a masqd's HTTP endpoint from inside its namespace, and iptables that can be broken.

The HTTP server listens on the node namespace's loopback, so the client runs there too
(`ip netns exec NODE python -c ...`). IptablesWrapper puts a directory in front of PATH whose
`*-restore` scripts fail (or report the xtables lock held) while a marker file exists, and
whose `*-save` scripts note each call, so tests can break and count iptables without touching
the real binaries.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support import netns

DEFAULT_ADDRESS = "127.0.0.1:9153"

_FETCH = """
import sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=15) as r:
        code, body = r.status, r.read()
except urllib.error.HTTPError as e:
    code, body = e.code, e.read()
sys.stdout.write(f"{code}\\n{body.decode()}")
"""


def fetch(ns: str, path: str, address: str = DEFAULT_ADDRESS) -> tuple[int, str]:
    """GET http://address/path from inside namespace ns: (status code, body)."""
    out = netns.run(ns, sys.executable, "-c", _FETCH, f"http://{address}{path}")
    code, _, body = out.partition("\n")
    return int(code), body


class Samples(dict[tuple[str, frozenset[tuple[str, str]]], float]):
    """One scrape: sample values by name and labels."""

    # The metric's name is positional only, so that `name` can be a label too.
    def get_value(self, name: str, /, **labels: str) -> float | None:
        return self.get((name, frozenset(labels.items())))

    def value(self, name: str, /, **labels: str) -> float:
        found = self.get_value(name, **labels)
        assert found is not None, f"no sample {name}{labels} in the scrape"
        return found

    def matching(self, name: str, /, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
        want = set(labels.items())
        return {k[1]: v for k, v in self.items() if k[0] == name and want <= k[1]}


def scrape(ns: str, address: str = DEFAULT_ADDRESS) -> Samples:
    code, text = fetch(ns, "/metrics", address)
    assert code == 200, text
    samples = Samples()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


# The markers are looked at once the input has arrived: a real restore meets the kernel and the
# lock only then, and masqd starts its next restore long before it has rules to feed it.
_RESTORE = """#!/bin/sh
input=$(mktemp)
cat > "$input"
if [ -e "{fail}" ]; then
  echo "iptables-restore: line 3 failed" >&2
  rc=1
elif [ -e "{lock}" ]; then
  echo "Another app is currently holding the xtables lock. Stopped waiting after 5s." >&2
  rc=4
else
  {real} "$@" < "$input"
  rc=$?
fi
rm -f "$input"
exit $rc
"""
_SAVE = """#!/bin/sh
echo "$0 $*" >> "{calls}"
exec {real} "$@"
"""


@dataclass
class IptablesWrapper:
    """Wrappers for one backend's save/restore; prepend `path` to masqd's PATH."""

    path: Path

    @classmethod
    def create(cls, directory: Path, backend: str) -> IptablesWrapper:
        directory.mkdir()
        wrapper = cls(directory)
        for base in ("iptables", "ip6tables"):
            for action, template in (("restore", _RESTORE), ("save", _SAVE)):
                name = f"{base}-{backend}-{action}"
                real = shutil.which(name)
                assert real is not None, f"{name} is not installed"
                script = directory / name
                script.write_text(
                    template.format(
                        fail=wrapper.fail_marker,
                        lock=wrapper.lock_marker,
                        calls=wrapper.calls_file,
                        real=real,
                    )
                )
                script.chmod(0o755)
        return wrapper

    @property
    def fail_marker(self) -> Path:
        return self.path / "fail"

    @property
    def lock_marker(self) -> Path:
        return self.path / "lock"

    @property
    def calls_file(self) -> Path:
        return self.path / "save-calls"

    def environ_path(self) -> str:
        return f"{self.path}{os.pathsep}{os.environ.get('PATH', '')}"

    def counter_reads(self) -> int:
        """How many `iptables-save -c` (the scrape's counter reads) ran so far."""
        if not self.calls_file.exists():
            return 0
        return sum(1 for line in self.calls_file.read_text().splitlines() if " -c" in line)
