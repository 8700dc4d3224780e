"""masqd.core.yamldoc and the config reader on hostile files: each is refused within 1 s and
50 MB with a short message naming the limit; ordinary documents read exactly as PyYAML's safe
loader reads them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from masqd.core import yamldoc
from masqd.core.config import ConfigError, parse_config
from tests.support.hostile import HOSTILE, laughs
from tests.support.paths import GOLDEN, ROOT


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_file_is_refused_at_once_with_a_short_message(name: str) -> None:
    text, expect = HOSTILE[name]
    start = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"{name}: {elapsed:.2f}s"
    message = str(info.value)
    assert expect in message and len(message) < 200, message


# VmHWM, not getrusage's ru_maxrss: that keeps the peak of the process before its exec (here
# a fork of pytest).
_MEASURE = """
import sys, time
from masqd.core.config import ConfigError, parse_config
text = sys.stdin.read()
start = time.perf_counter()
try:
    parse_config(text)
except ConfigError as e:
    peak = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
    print(len(str(e)), time.perf_counter() - start, peak)
"""


def test_hostile_files_cost_a_process_less_than_50_MB() -> None:
    """Measured in a process of its own: its peak resident size, interpreter included."""
    for name, (text, _) in HOSTILE.items():
        out = subprocess.run(
            [sys.executable, "-c", _MEASURE],
            input=text,
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=30,
            check=True,
        ).stdout.split()
        length, seconds, peak_kb = int(out[0]), float(out[1]), int(out[2])
        assert length < 200 and seconds < 1.0 and peak_kb < 50 * 1024, (name, out)


def test_an_error_quotes_at_most_an_excerpt_of_the_value() -> None:
    """A bomb small enough to be built (9^4 values) is quoted in a few dozen characters."""
    with pytest.raises(ConfigError) as info:
        parse_config(laughs(4, "masqOutBound"))
    message = str(info.value)
    assert message.startswith("masqOutBound: must be true or false, not a list [[[")
    assert len(message) < 200
    with pytest.raises(ConfigError) as info:
        parse_config("nonMasqueradeCIDRs: ['" + "x" * 100_000 + "']")
    assert len(str(info.value)) < 200


def test_the_limits_leave_room_for_what_a_real_file_holds() -> None:
    """32 levels, 1,000 keys, a 64-character number, and a 1 MiB file of CIDRs all read."""
    assert yamldoc.load("x: " + "[" * 31 + "]" * 31).value == {"x": _nest(31)}
    keys = {f"k{i}": i for i in range(1000)}
    assert yamldoc.load(json.dumps(keys)).value == keys
    assert yamldoc.load("n: " + "9" * 64).value == {"n": int("9" * 64)}
    cidrs = [f"10.{i // 256 % 256}.{i % 256}.0/24" for i in range(50_000)]
    text = json.dumps({"nonMasqueradeCIDRs": cidrs, "cidrLimit": 50_000})
    assert len(text) < 1 << 20
    assert len(parse_config(text).config.non_masquerade_cidrs) == 50_000


def _nest(levels: int) -> list[object]:
    value: list[object] = []
    for _ in range(levels - 1):
        value = [value]
    return value


def _corpus() -> list[Path]:
    return sorted(GOLDEN.glob("*.yaml"))


@pytest.mark.parametrize("path", _corpus(), ids=lambda p: p.name)
def test_an_ordinary_file_reads_as_the_safe_loader_reads_it(path: Path) -> None:
    text = path.read_text()
    assert yamldoc.load(text).value == yaml.safe_load(text)


@pytest.mark.parametrize(
    "text",
    [
        "a: &x [1, 2]\nb: *x\n",
        "base: &b {masqOutBound: true}\nother:\n  <<: *b\n  masqLinkLocal: false\n",
        "x: yes\ny: 0x1f\nz: 1.5e3\nw: ~\nd: 2001-01-01\n",
        "s: !!str 42\n",
        '{"json": [1, 2, {"k": null}]}',
    ],
)
def test_yaml_features_read_as_the_safe_loader_reads_them(text: str) -> None:
    assert yamldoc.load(text).value == yaml.safe_load(text)


def test_an_alias_inside_its_own_anchor_is_a_loop_not_a_bomb() -> None:
    value = yamldoc.load("loop: &l [*l, *l, *l]\n").value
    assert value["loop"][0] is value["loop"]


def test_without_libyaml_the_pure_python_parser_is_used(tmp_path: Path) -> None:
    """The fallback for a PyYAML built without libyaml: the same limits, the same values."""
    code = (
        "import sys, yaml._yaml; sys.modules['yaml._yaml'] = None\n"
        "from masqd.core import yamldoc\n"
        "assert 'CParser' not in repr(yamldoc._Loader.__mro__)\n"
        "assert yamldoc.load('a: [1, {b: c}]').value == {'a': [1, {'b': 'c'}]}\n"
        "try:\n"
        "    yamldoc.load('x: ' + '[' * 5000)\n"
        "except yamldoc.Refused as e:\n"
        "    print(e)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=30
    )
    assert out.returncode == 0, out.stderr
    assert "nested more than 32 levels" in out.stdout
