"""Go duration strings ("60s", "1m30s", "1.5h"), as the agent's config and flags use them."""

from __future__ import annotations

import re

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
# ASCII digits only: `\d` would also take other scripts' digits, which Go rejects.
_PART = re.compile(r"([0-9]+\.?[0-9]*|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Parse a Go duration string into seconds; raise ValueError saying what is wrong."""
    s = text.strip()
    if not s:
        raise ValueError("empty duration")
    sign = 1.0
    if s[0] in "+-":
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if not s:
        raise ValueError(f"invalid duration {text!r}: a sign alone is not a duration")
    if s == "0":
        return 0.0
    total = 0.0
    pos = 0
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None:
            raise ValueError(
                f"invalid duration {text!r}: expected a number and a unit (ns, us, ms, s, m, h), "
                "e.g. 60s or 1m30s"
            )
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return sign * total


def format_duration(seconds: float) -> str:
    """Format seconds the way Go prints a time.Duration ("1m30s", "500ms", "2h0m0s").

    Works in whole nanoseconds, as Go does, so a value never prints as "1m60s" or in
    exponent form.
    """
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    u = abs(ns)
    if u < 1_000:
        return f"{sign}{u}ns"
    if u < 1_000_000:
        return f"{sign}{_fraction(u, 3)}µs"
    if u < 1_000_000_000:
        return f"{sign}{_fraction(u, 6)}ms"
    secs = _fraction(u, 9)
    whole_secs, _, frac = secs.partition(".")
    minutes, s = divmod(int(whole_secs), 60)
    text = f"{s}.{frac}s" if frac else f"{s}s"
    if minutes:
        hours, m = divmod(minutes, 60)
        text = f"{m}m{text}"
        if hours:
            text = f"{hours}h{text}"
    return sign + text


def _fraction(value: int, digits: int) -> str:
    """value / 10**digits in decimal, without trailing zeros ("1.5", "2")."""
    whole, frac = divmod(value, 10**digits)
    decimals = f"{frac:0{digits}d}".rstrip("0")
    return f"{whole}.{decimals}" if decimals else str(whole)
