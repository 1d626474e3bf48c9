"""Parsing of the simulator's ``--start`` and ``--duration`` options."""

from __future__ import annotations

import datetime as dt
import re
from typing import Final

__all__ = ["WITA", "parse_duration", "parse_start"]

WITA: Final = dt.timezone(dt.timedelta(hours=8), "WITA")
_DURATION_RE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS: Final = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_CLOCK_RE: Final = re.compile(r"^(\d{1,2}):(\d{2})$")


def parse_duration(text: str) -> float:
    """'90', '90s', '30m', '2h', '1d' → seconds."""
    m = _DURATION_RE.match(text)
    if not m:
        raise ValueError(f"duration {text!r}: use seconds or a number with s, m, h or d (e.g. 30m)")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_start(text: str, now: dt.datetime) -> dt.datetime:
    """'now', 'HH:MM' (the latest such Makassar local time, WITA), ISO 8601 (no offset:
    WITA) or epoch milliseconds → an aware datetime."""
    text = text.strip()
    if text == "now":
        return now
    if text.isdigit():
        return dt.datetime.fromtimestamp(int(text) / 1000.0, dt.UTC)
    clock = _CLOCK_RE.match(text)
    if clock:
        hour, minute = int(clock.group(1)), int(clock.group(2))
        if hour > 23 or minute > 59:
            raise ValueError(f"start {text!r}: not a time of day")
        local_now = now.astimezone(WITA)
        start = local_now.replace(hour=hour, minute=minute, second=0, microsecond=0)
        if start > local_now:
            start -= dt.timedelta(days=1)
        return start
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"start {text!r}: use 'now', HH:MM (WITA), ISO 8601 or epoch milliseconds"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=WITA)
