"""The report registry: each planner report described once, for both front ends.

``fleet report <name>`` (:mod:`analytics.cli`) and ``GET /api/v1/reports/<name>``
(:mod:`api.routes.reports`) are built from :data:`PUBLISHED`: one command and one
endpoint per report, with the filters of :mod:`analytics.reports.params`, the report's
:class:`Variant` switch if it has one, and ``format``. A report is its SQL (one time
piece, ``%(lo)s`` ≤ t < ``%(hi)s`` plus the filters), the TypedDict of one row (whose
keys are the JSON keys and the CSV columns, in order) and the function that builds the
rows from what the SQL returned.

To add a report: write its SQL, row type and row builder in a module of this package,
describe it here with a :class:`Report`, and add it to :data:`PUBLISHED` (or make it
another report's :class:`Variant`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from analytics.reports.congestion import (
    AREA_SQL,
    CONGESTION_SQL,
    AreaRow,
    SegmentRow,
    area_rows,
    congestion_rows,
)
from analytics.reports.headways import (
    HEADWAY_PASSAGES_SQL,
    MAX_HEADWAY,
    HeadwayRow,
    HourlyHeadwayRow,
    headway_rows,
    hourly_headway_rows,
)
from analytics.reports.params import ReportError
from analytics.reports.rows import ReportInput
from analytics.reports.service import SERVICE_SQL, ServiceRow, service_rows

__all__ = [
    "AREA",
    "CONGESTION",
    "HEADWAYS",
    "HOURLY_HEADWAYS",
    "PUBLISHED",
    "REPORTS",
    "SERVICE",
    "Report",
    "Variant",
    "report_named",
]

Rows = Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class Report:
    name: str  # `fleet report <name>`, /api/v1/reports/<name>, run_report(conn, "<name>")
    summary: str  # the command's help and the endpoint's summary
    sql: str
    row: Any  # the TypedDict of one row
    build: Callable[[ReportInput], Rows]
    filename: str  # of the CSV the API sends (``<filename>.csv``)
    lead: timedelta = timedelta(0)  # rows are read from this long before ``from``
    freeflow: bool = False  # the builder needs the segments' free-flow speeds
    variant: Variant | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        """The CSV header: the row type's keys in declaration order (bases first)."""
        return tuple(self.row.__annotations__)


@dataclass(frozen=True)
class Variant:
    """A report's one alternative: ``?<param>=<value>`` on the API (default
    ``<default>``), the ``<flag>`` switch on the CLI; either runs ``report`` instead."""

    param: str
    default: str
    value: str
    flag: str
    help: str
    report: Report


HOURLY_HEADWAYS: Final = Report(
    name="headways_by_hour",
    summary="Headways per route, direction, checkpoint and local hour of day.",
    sql=HEADWAY_PASSAGES_SQL,
    row=HourlyHeadwayRow,
    build=hourly_headway_rows,
    filename="headways",
    lead=MAX_HEADWAY,  # the first headway of the window needs its predecessor
)
HEADWAYS: Final = Report(
    name="headways",
    summary="Headways per route, direction and checkpoint: mean, Cv_h, AWT, EWT, shares, LOS.",
    sql=HEADWAY_PASSAGES_SQL,
    row=HeadwayRow,
    build=headway_rows,
    filename="headways",
    lead=MAX_HEADWAY,
    variant=Variant(
        "by", "window", "hour", "--by-hour", "One row per local hour.", HOURLY_HEADWAYS
    ),
)
AREA: Final = Report(
    name="area",
    summary="Speeds per H3 cell per 5 minutes.",
    sql=AREA_SQL,
    row=AreaRow,
    build=area_rows,
    filename="area-speeds",
)
CONGESTION: Final = Report(
    name="congestion",
    summary="Segment travel times and speeds per 5 minutes with free flow and congestion level.",
    sql=CONGESTION_SQL,
    row=SegmentRow,
    build=congestion_rows,
    filename="congestion",
    freeflow=True,
    variant=Variant(
        "level", "segment", "area", "--area", "Per H3 cell instead of per segment.", AREA
    ),
)
SERVICE: Final = Report(
    name="service",
    summary="Vans in service, vehicle-km and passages per route per hour.",
    sql=SERVICE_SQL,
    row=ServiceRow,
    build=service_rows,
    filename="service",
)

#: The reports with a command and an endpoint of their own (the others are variants).
PUBLISHED: Final = (HEADWAYS, CONGESTION, SERVICE)
REPORTS: Final = {r.name: r for r in (HEADWAYS, HOURLY_HEADWAYS, CONGESTION, AREA, SERVICE)}


def report_named(name: str) -> Report:
    try:
        return REPORTS[name]
    except KeyError:
        raise ReportError(f"unknown report {name!r}; reports: {', '.join(REPORTS)}") from None
