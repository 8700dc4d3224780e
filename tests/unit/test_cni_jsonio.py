"""masqd.cni.jsonio, the plugin's JSON through json's C accelerator, against the json package:
the same values in, the same text out, the same errors, on the configs real CNIs write."""

from __future__ import annotations

import json
from typing import Any

import pytest

from masqd.cni import jsonio
from tests.support import cni_cases

EDGE_CASES = [
    "0",
    "-1.5e300",
    '"x"',
    "null",
    " [1, 2.5, null, true, false] \n",
    '{"a": "\\u00e9\\u0000\\ud83d\\ude00", "b": {"c": [[], {}]}}',
    '{"dup": 1, "dup": 2}',
    '"\\t\\"\\\\/"',
    "NaN",
    "[-Infinity, Infinity]",
    "123456789012345678901234567890",
]


@pytest.mark.parametrize("case", cni_cases.case_names())
def test_real_configs_read_and_write_as_json_does(case: str) -> None:
    text = cni_cases.case_bytes(case).decode()
    value = jsonio.loads(text)
    assert value == json.loads(text)
    assert jsonio.dumps(value) == json.dumps(value)


@pytest.mark.parametrize("text", EDGE_CASES)
def test_edge_cases_as_json_does(text: str) -> None:
    value = jsonio.loads(text)
    expected = json.loads(text)
    assert json.dumps(value) == json.dumps(expected)  # NaN != NaN: compare the text
    assert jsonio.dumps(value) == json.dumps(expected)


@pytest.mark.parametrize(
    "text", ["", "   ", "{", "[1,]", "[1] x", '{"a":}', "{'a': 1}", '"\x01"', "tru"]
)
def test_invalid_json_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        jsonio.loads(text)


def test_too_deep_is_a_recursion_error() -> None:
    with pytest.raises(RecursionError):
        jsonio.loads("[" * 100_000)


@pytest.mark.parametrize("value", [{1: "int key"}, {"set": {1}}, [object()]], ids=repr)
def test_what_json_cannot_write_is_refused_alike(value: Any) -> None:
    try:
        expected: str | type[Exception] = json.dumps(value)
    except TypeError:
        expected = TypeError
    if expected is TypeError:
        with pytest.raises(TypeError):
            jsonio.dumps(value)
    else:
        assert jsonio.dumps(value) == expected
