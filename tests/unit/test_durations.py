"""Go duration strings: what parse_duration accepts and how format_duration prints, as Go does."""

from __future__ import annotations

import pytest

from masqd.core.durations import format_duration, parse_duration

# Go's own time.ParseDuration test table (the cases a float can represent exactly enough).
VALID = [
    ("0", 0.0),
    ("5s", 5.0),
    ("30s", 30.0),
    ("1478s", 1478.0),
    ("-5s", -5.0),
    ("+5s", 5.0),
    ("-0", 0.0),
    ("+0", 0.0),
    ("5.0s", 5.0),
    ("5.6s", 5.6),
    ("5.s", 5.0),
    (".5s", 0.5),
    ("1.004s", 1.004),
    ("100.00100s", 100.001),
    ("10ns", 10e-9),
    ("11us", 11e-6),
    ("12µs", 12e-6),  # U+00B5 micro sign
    ("12μs", 12e-6),  # U+03BC Greek mu
    ("13ms", 0.013),
    ("14s", 14.0),
    ("15m", 900.0),
    ("16h", 57600.0),
    ("3h30m", 12600.0),
    ("10.5s4m", 250.5),
    ("-2m3.4s", -123.4),
    ("1h2m3s4ms5us6ns", 3723.004005006),
    ("39h9m14.425s", 140954.425),
    ("1m30s", 90.0),
    ("1.5h", 5400.0),
    ("2h", 7200.0),
    ("24h", 86400.0),
]

INVALID = [
    "",
    "3",  # a number without a unit
    "-",
    "+",
    "s",
    ".",
    "-.",
    ".s",
    "+.s",
    "1d",  # Go has no day unit
    "60 s",
    "1e3s",  # no exponent form
    "0x10s",
    "\u0666\u0660s",  # Arabic-Indic "60": Python's \\d would take them, Go does not
    "1h30",  # a trailing number without a unit
    "five seconds",
    "\x85\x85",
]


@pytest.mark.parametrize(("text", "seconds"), VALID)
def test_parse_duration_accepts_go_syntax(text: str, seconds: float) -> None:
    """Every duration Go's time.ParseDuration accepts parses to the same number of seconds."""
    assert parse_duration(text) == pytest.approx(seconds, abs=1e-12)


@pytest.mark.parametrize("text", INVALID)
def test_parse_duration_rejects_what_go_rejects(text: str) -> None:
    """Strings Go rejects raise ValueError quoting the input."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (1e-9, "1ns"),
        (1.1e-6, "1.1µs"),
        (2.2e-3, "2.2ms"),
        (0.5, "500ms"),
        (1, "1s"),
        (3.3, "3.3s"),
        (60, "1m0s"),
        (90, "1m30s"),
        (4 * 60 + 5.001, "4m5.001s"),
        (3600, "1h0m0s"),
        (5 * 3600 + 6 * 60 + 7.001, "5h6m7.001s"),
        (86400, "24h0m0s"),
        (-90, "-1m30s"),
        (119.9999, "1m59.9999s"),
        (1e-8, "10ns"),
    ],
)
def test_format_duration_prints_like_go(seconds: float, text: str) -> None:
    """format_duration prints what Go's Duration.String prints: never "1m60s" or exponent form."""
    assert format_duration(seconds) == text


@pytest.mark.parametrize("text", ["1s", "1m30s", "2h0m0s", "24h0m0s", "1.5s", "500ms"])
def test_format_then_parse_round_trips(text: str) -> None:
    """A formatted duration parses back to the same value."""
    assert format_duration(parse_duration(text)) == text
