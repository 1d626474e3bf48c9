"""Query values checked before they reach a query: times, codes and ids, bounded numbers.

A bad value is a 400 ``ApiError`` whose detail names the parameter and what is allowed.
(The generic checks — UTF-8, no control characters — run earlier, in
:mod:`api.http_guards`.)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

from api.errors import ApiError
from fleet.contract import ROUTE_RE, VEHICLE_ID_RE

__all__ = [
    "HORIZON_START",
    "MAX_CHECKPOINT_SEQ",
    "MAX_FUTURE",
    "checked_checkpoint",
    "checked_route",
    "checked_time",
    "checked_vehicle_id",
]

# The data horizon: no fix of this fleet is older than 2000 (GPS receivers before that
# are not in service) and none is from more than a day ahead (clock skew, time zones).
HORIZON_START: Final = datetime(2000, 1, 1, tzinfo=UTC)
MAX_FUTURE: Final = timedelta(days=1)
MAX_CHECKPOINT_SEQ: Final = 9999
MAX_CHECKPOINT_CHARS: Final = 40


def checked_time(name: str, value: datetime | None) -> datetime | None:
    """``value`` as an aware UTC time inside the data horizon (naive means UTC)."""
    if value is None:
        return None
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    latest = datetime.now(UTC) + MAX_FUTURE
    if not HORIZON_START <= aware <= latest:
        raise ApiError(
            400,
            "time outside the data horizon",
            f"{name}={value.isoformat()}: give a time between {HORIZON_START:%Y-%m-%d} "
            f"and {latest:%Y-%m-%dT%H:%MZ}",
        )
    return aware.astimezone(UTC)


def checked_route(name: str, value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if not ROUTE_RE.match(value):
        raise ApiError(
            400,
            "invalid route code",
            f"{name}={value[:40]!r}: a route code is 1-16 letters, digits, '_', '.' or '-'",
        )
    return value


def checked_vehicle_id(value: str) -> str:
    if not VEHICLE_ID_RE.match(value):
        raise ApiError(
            400,
            "invalid vehicle id",
            f"{value[:80]!r}: a vehicle id is 1-64 letters, digits, '_', '.' or '-'",
        )
    return value


def checked_checkpoint(name: str, value: str | None) -> str | None:
    """A checkpoint sequence number (``12``) or id (``B-012``) with a bounded number."""
    if value is None or value == "":
        return None
    tail = value.rsplit("-", 1)[-1]
    if len(value) > MAX_CHECKPOINT_CHARS or not (tail.isascii() and tail.isdigit()):
        raise ApiError(
            400,
            "invalid checkpoint",
            f"{name}={value[:40]!r}: give a sequence number or an id like B-012",
        )
    if int(tail) > MAX_CHECKPOINT_SEQ:
        raise ApiError(
            400, "invalid checkpoint", f"{name}: sequence {tail[:25]} > {MAX_CHECKPOINT_SEQ}"
        )
    return value
