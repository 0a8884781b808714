"""Durations as lk and livekit-server write them: "30s", "2m", "1m30s", "500ms", "1h", or plain
seconds ("45", "2.5") — a subset of Go's time.ParseDuration."""

from __future__ import annotations

import math
import re

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds; raises ValueError with a message a user can act on."""
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        if not value or _DURATION.sub("", value):
            raise ValueError(f"invalid duration {text!r} (use e.g. 30s, 2m, 1h30m)") from None
        seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION.findall(value))
    if seconds < 0 or math.isnan(seconds) or math.isinf(seconds):
        raise ValueError(f"invalid duration {text!r}")
    return seconds
