"""Running a report: the SQL piece by piece (a day each, for the CLI's progress bar) on
a sync connection, or in one query on an async one (the API), then the row builder."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, time, timedelta
from typing import Any

import psycopg

from analytics.congestion import FREEFLOW_SQL, FreeFlow, freeflow_by_segment, freeflow_params
from analytics.reports.params import ReportParams
from analytics.reports.registry import Report, report_named
from analytics.reports.rows import ReportInput

__all__ = ["report_chunks", "run_report", "run_report_async", "time_pieces"]


def time_pieces(lo: datetime, hi: datetime) -> list[tuple[datetime, datetime]]:
    """[lo, hi) cut at UTC midnights: pieces of at most a day, no hour split in two."""
    out: list[tuple[datetime, datetime]] = []
    t = lo
    while t < hi:
        midnight = datetime.combine(t.astimezone(UTC).date() + timedelta(days=1), time(), UTC)
        out.append((t, min(midnight, hi)))
        t = midnight
    return out


def _pieces(report: Report, p: ReportParams) -> list[tuple[datetime, datetime]]:
    return time_pieces(p.start - report.lead, p.end)


def _sql_params(p: ReportParams, lo: datetime, hi: datetime) -> dict[str, Any]:
    return {
        "lo": lo,
        "hi": hi,
        "route": p.route,
        "checkpoint": p.checkpoint,
        "direction": p.direction,
    }


def _freeflow_params(
    p: ReportParams, offpeak_hours: Iterable[int], lookback_days: int
) -> dict[str, object]:
    return freeflow_params(p.end, p.route, offpeak_hours, lookback_days, p.timezone)


def report_chunks(kind: str | Report, p: ReportParams) -> int:
    """How many pieces :func:`run_report` reads (for a progress bar)."""
    return len(_pieces(_report(kind), p))


def run_report(
    conn: psycopg.Connection,
    kind: str | Report,
    p: ReportParams,
    offpeak_hours: Iterable[int] = (),
    freeflow_lookback_days: int = 28,
    on_chunk: Callable[[], None] | None = None,
) -> list[Mapping[str, Any]]:
    """A report's rows, read a piece (≤ one day) at a time; ``on_chunk`` after each."""
    report = _report(kind)
    fetched: list[Any] = []
    for lo, hi in _pieces(report, p):
        fetched.extend(conn.execute(report.sql, _sql_params(p, lo, hi)).fetchall())
        if on_chunk is not None:
            on_chunk()
    freeflow: FreeFlow = {}
    if report.freeflow:
        ff = _freeflow_params(p, offpeak_hours, freeflow_lookback_days)
        freeflow = freeflow_by_segment(conn.execute(FREEFLOW_SQL, ff).fetchall())
    return list(report.build(ReportInput(fetched, p, freeflow)))


async def run_report_async(
    conn: psycopg.AsyncConnection,
    report: Report,
    p: ReportParams,
    offpeak_hours: Iterable[int] = (),
    freeflow_lookback_days: int = 28,
) -> list[Mapping[str, Any]]:
    """The same rows in one query per statement (the API bounds the window per call)."""
    cur = await conn.execute(report.sql, _sql_params(p, p.start - report.lead, p.end))
    fetched = await cur.fetchall()
    freeflow: FreeFlow = {}
    if report.freeflow:
        ff = _freeflow_params(p, offpeak_hours, freeflow_lookback_days)
        freeflow = freeflow_by_segment(await (await conn.execute(FREEFLOW_SQL, ff)).fetchall())
    return list(report.build(ReportInput(fetched, p, freeflow)))


def _report(kind: str | Report) -> Report:
    return report_named(kind) if isinstance(kind, str) else kind
