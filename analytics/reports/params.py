"""Report parameters: the filters every report takes, described once for the CLI and the API.

Each :class:`Parameter` is shown by both front ends under its public ``name``
(``?route=`` on the API, ``--route`` on the CLI) with the same help text and bounds;
:func:`read_params` turns the values a front end received into :class:`ReportParams`.
A front end adds its own checks through ``checks`` (the API's hardening of untrusted
input in ``api.params``, the CLI's list of known routes) without restating the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

__all__ = [
    "CHECKPOINT",
    "DEFAULT_WINDOW",
    "DIRECTION",
    "FILTERS",
    "FORMAT",
    "FROM",
    "ROUTE",
    "TO",
    "Check",
    "Parameter",
    "ReportError",
    "ReportParams",
    "parse_time",
    "read_params",
]

DEFAULT_WINDOW: Final = timedelta(days=1)  # ``from`` defaults to this long before ``to``


class ReportError(ValueError):
    """Bad report parameters; the message says which and how to fix them."""


@dataclass(frozen=True)
class Parameter:
    """One report parameter as both front ends show it."""

    name: str  # the query parameter and the CLI option (``--<name>``)
    key: str  # the Python identifier the front ends pass it as (``from`` is a keyword)
    help: str
    type: type[str] | type[int] = str
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] = ()


ROUTE: Final = Parameter("route", "route", "Route code, e.g. B.")
CHECKPOINT: Final = Parameter(
    "checkpoint", "checkpoint", "Checkpoint sequence number or id (12 or B-012)."
)
DIRECTION: Final = Parameter("direction", "direction", "0 outbound, 1 return.", int, 0, 1)
FROM: Final = Parameter("from", "start", "ISO 8601 start (default: 24 h before `to`).")
TO: Final = Parameter("to", "end", "ISO 8601 end (default: now).")
FORMAT: Final = Parameter("format", "fmt", "json or csv.", choices=("json", "csv"))

#: The filters of every report, in the order the front ends list them (then ``format``).
FILTERS: Final = (ROUTE, CHECKPOINT, DIRECTION, FROM, TO)

#: A front end's own check of a value its caller gave: ``check(name, value)`` returns the
#: value (possibly normalised) or raises the front end's error.
Check = Callable[[str, Any], Any]


def parse_time(value: str | None, default: datetime | None = None) -> datetime | None:
    """ISO 8601 (``2026-11-23``, ``2026-11-23T07:00``, ``...+08:00``); naive = UTC."""
    if value is None or value == "":
        return default
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise ReportError(
            f"time {value!r} is not ISO 8601 (e.g. 2026-11-23 or 2026-11-23T07:00+08:00)"
        ) from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


@dataclass(frozen=True)
class ReportParams:
    """What a report is asked for: a time window [start, end) and optional filters."""

    start: datetime
    end: datetime
    route: str | None = None
    checkpoint: int | None = None  # checkpoint seq (or parsed from an id like "B-012")
    direction: int | None = None
    timezone: str = "Asia/Makassar"
    targets: Mapping[str, float | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ReportError(f"--to ({self.end.isoformat()}) must be after --from")
        if self.direction not in (None, 0, 1):
            raise ReportError("direction must be 0 (outbound) or 1 (return)")
        try:
            ZoneInfo(self.timezone)
        except Exception:
            raise ReportError(f"unknown time zone {self.timezone!r}") from None

    @staticmethod
    def checkpoint_seq(value: str | int | None) -> int | None:
        """``12`` or ``"12"`` or ``"B-012"`` → 12."""
        if value is None or value == "":
            return None
        if isinstance(value, int):
            return value
        tail = value.rsplit("-", 1)[-1]
        if not tail.isdigit():
            raise ReportError(f"checkpoint {value!r}: give a sequence number or an id like B-012")
        return int(tail)


def read_params(
    values: Mapping[str, Any],
    *,
    timezone: str,
    targets: Mapping[str, float | None],
    checks: Mapping[str, Check] | None = None,
    now: datetime | None = None,
) -> ReportParams:
    """:class:`ReportParams` from a front end's values, keyed by :attr:`Parameter.key`.

    ``checks`` (by parameter name) see each value the caller gave — times already
    parsed — before the defaults apply (``to`` = now, ``from`` = 24 h before ``to``).
    Raises :class:`ReportError`, or whatever a check raises.
    """

    def given(param: Parameter, value: Any) -> Any:
        if value is None or value == "":
            return None
        check = (checks or {}).get(param.name)
        return value if check is None else check(param.name, value)

    end = given(TO, parse_time(values.get(TO.key))) or now or datetime.now(UTC)
    start = given(FROM, parse_time(values.get(FROM.key))) or end - DEFAULT_WINDOW
    return ReportParams(
        start=start,
        end=end,
        route=given(ROUTE, values.get(ROUTE.key)),
        checkpoint=ReportParams.checkpoint_seq(given(CHECKPOINT, values.get(CHECKPOINT.key))),
        direction=given(DIRECTION, values.get(DIRECTION.key)),
        timezone=timezone,
        targets=targets,
    )
