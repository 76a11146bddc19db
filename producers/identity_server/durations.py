"""Go durations as TTS's configuration writes them (`time.ParseDuration`: "24h", "1h30m", "300ms"), and a short
human form of a number of seconds for the producer's lines."""

from __future__ import annotations

import re

from core.retry import format_seconds

__all__ = ["format_seconds", "parse_go_duration"]

_GO_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,  # micro sign
    "\u03bcs": 1e-6,  # Greek mu
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_GO_PART = re.compile(r"(\d+\.?\d*|\.\d+)([a-zA-Z\u00b5\u03bc]+)")


def parse_go_duration(text: str) -> float:
    """Parse a Go `time.ParseDuration` string ("24h", "30m", "1h30m", "1.5h", "10s", "300ms") into seconds.

    Like Go: an optional sign, then one or more decimal numbers each followed by a unit
    (ns, us/µs, ms, s, m, h); a bare "0" is zero. Anything else raises ValueError.
    """
    orig = text
    if not isinstance(text, str):
        raise ValueError(f"time: invalid duration {orig!r} (a Go duration string like 24h, 30m or 1h30m is required)")
    s = text.strip()
    sign = 1.0
    if s[:1] in ("+", "-"):
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f'time: invalid duration "{orig}"')
    total = 0.0
    pos = 0
    while pos < len(s):
        m = _GO_PART.match(s, pos)
        if m is None:
            raise ValueError(f'time: invalid duration "{orig}"')
        number, unit = m.groups()
        if unit not in _GO_UNITS:
            raise ValueError(f'time: unknown unit "{unit}" in duration "{orig}"')
        total += float(number) * _GO_UNITS[unit]
        pos = m.end()
    return sign * total
