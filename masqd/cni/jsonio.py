"""JSON in and out for the plugin, through the C accelerator that the json package wraps.

The json package compiles half a dozen regular expressions when imported, pulling in re and
enum: more than the rest of a pod's ADD costs. Its C scanner and encoder (`_json`) need none of
that; they are driven here with json's own defaults (strict strings, ASCII output, NaN and
Infinity accepted as Python's json accepts them), so `loads` and `dumps` give what `json.loads`
and `json.dumps` give (tests/unit/test_cni_jsonio.py compares them on real configs). Without
`_json` (an interpreter built without it), this falls back to the json package.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

try:
    import _json
except ImportError:  # pragma: no cover - every CPython build here has it
    _json = None  # type: ignore[assignment]

_WHITESPACE = " \t\n\r"


class _Context:
    """The attributes json.JSONDecoder hands the C scanner, at their defaults."""

    def __init__(self) -> None:
        self.strict = True
        self.object_hook = None
        self.object_pairs_hook = None
        self.parse_float = float
        self.parse_int = int
        constants = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}
        self.parse_constant = constants.__getitem__
        self.memo: dict[str, str] = {}


def _no_default(value: object) -> object:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


if _json is not None:
    _scan = _json.make_scanner(_Context())  # type: ignore[arg-type]  # duck-typed decoder
    _encode = _json.make_encoder(
        None, _no_default, _json.encode_basestring_ascii, None, ": ", ", ", False, False, True
    )


def loads(text: str) -> Any:
    """One JSON value; ValueError (json.JSONDecodeError, when the C scanner reports it) for
    anything else, RecursionError for nesting deeper than the interpreter's stack allows."""
    if _json is None:
        import json

        return json.loads(text)
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = _scan(text, start)
    except StopIteration as e:
        raise ValueError(f"Expecting value: char {e.value}") from None
    except SystemError:
        # The scanner reports a syntax error with json.decoder's JSONDecodeError, which it
        # finds only when json is already imported; it is not (that is the point), so json
        # itself says what is wrong.
        import json

        return json.loads(text)
    if text[end:].strip(_WHITESPACE):
        raise ValueError(f"Extra data: char {end}")
    return value


def dumps(value: Any) -> str:
    """json.dumps(value) with its defaults (ASCII, ", " and ": " separators)."""
    if _json is None:
        import json

        return json.dumps(value)
    return "".join(_encode(value, 0))
