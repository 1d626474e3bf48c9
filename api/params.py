"""Query values checked before they reach a query: times, codes and ids, bounded numbers.

A bad value is a 400 ``ApiError`` whose detail names the parameter and what is allowed.
(The generic checks — UTF-8, no control characters — run earlier, in
:mod:`api.http_guards`.)
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from analytics.context import analytics_context
from analytics.reports import ReportError, ReportParams, read_params
from analytics.reports.params import Check
from api.errors import ApiError
from fleet.contract import ROUTE_RE, VEHICLE_ID_RE

BodyT = TypeVar("BodyT", bound=BaseModel)

__all__ = [
    "HORIZON_START",
    "MAX_CHECKPOINT_SEQ",
    "MAX_FUTURE",
    "checked_checkpoint",
    "checked_route",
    "checked_time",
    "checked_vehicle_id",
    "json_body",
    "report_params",
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


_CHECKS: Final[dict[str, Check]] = {
    "route": checked_route,
    "checkpoint": checked_checkpoint,
    "from": checked_time,
    "to": checked_time,
}


def report_params(values: Mapping[str, Any], max_span: timedelta, hint: str = "") -> ReportParams:
    """The analytics' report parameters from query values, each checked as above
    (400 ``bad report parameters``), covering at most ``max_span`` (400 ``time range too
    long``; ``hint`` says what to do instead)."""
    ctx = analytics_context()
    try:
        p = read_params(values, timezone=ctx.settings.timezone, targets=ctx.targets, checks=_CHECKS)
    except ReportError as exc:
        raise ApiError(400, "bad report parameters", str(exc)) from None
    if p.end - p.start > max_span:
        days = max_span.days
        detail = f"at most {days} day{'s' if days != 1 else ''} per call{hint}"
        raise ApiError(400, "time range too long", detail)
    return p


async def json_body(request: Request, model: type[BodyT], *, empty: BodyT | None = None) -> BodyT:
    """The request body as ``model``, read in the route after the permission check
    (FastAPI reads a declared body before the dependencies run) and bounded by
    :mod:`api.http_guards`; 422 ``invalid request`` with each problem's place. An empty
    body is ``empty`` when given."""
    raw = await request.body()
    if empty is not None and not raw.strip():
        return empty
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        problems = [
            {"where": ".".join(["body", *(str(p) for p in e["loc"])]), "problem": e["msg"]}
            for e in exc.errors(include_url=False)
        ]
        raise ApiError(422, "invalid request", problems) from None
