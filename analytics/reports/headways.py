"""The headway report: per route, direction and checkpoint (and a pooled ``ALL`` row per
route and direction), optionally per local hour of day: the figures of
:func:`analytics.headways.headway_stats`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, TypedDict
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from analytics.headways import headway_stats
from analytics.reports.rows import ReportInput, figure

__all__ = [
    "ALL",
    "HEADWAY_PASSAGES_SQL",
    "MAX_HEADWAY",
    "HeadwayFigures",
    "HeadwayRow",
    "HourlyHeadwayRow",
    "headway_rows",
    "hourly_headway_rows",
]

MAX_HEADWAY: Final = timedelta(hours=3)  # a predecessor passage further back is no headway
ALL: Final = "ALL"
_STREAM: Final = 100_000  # key = stream * _STREAM + checkpoint seq

HEADWAY_PASSAGES_SQL: Final = """
SELECT route, direction, checkpoint_seq, checkpoint_id, extract(epoch FROM ts)::float8
FROM passages
WHERE ts >= %(lo)s AND ts < %(hi)s
  AND (%(route)s::text IS NULL OR route = %(route)s)
  AND (%(checkpoint)s::int IS NULL OR checkpoint_seq = %(checkpoint)s)
  AND (%(direction)s::int IS NULL OR direction = %(direction)s)
ORDER BY route, direction, checkpoint_seq, ts
"""


class _Stream(TypedDict):
    route: str
    direction: int
    checkpoint_seq: int | None  # None on the pooled row
    checkpoint_id: str  # or ALL


class _Hour(TypedDict):
    hour: int  # local hour of day


class HeadwayFigures(TypedDict):
    count: int
    mean_s: float | None
    median_s: float | None
    std_s: float | None
    cv: float | None
    awt_s: float | None
    ewt_s: float | None
    bunched_share: float | None
    gapped_share: float | None
    reference_s: float | None
    target_s: float | None
    los: str


class HeadwayRow(_Stream, HeadwayFigures):
    """One checkpoint (or ``ALL``) of a route and direction over the whole window."""


class HourlyHeadwayRow(_Stream, _Hour, HeadwayFigures):
    """One checkpoint (or ``ALL``) of a route and direction in one local hour of day."""


@dataclass(frozen=True)
class _Group:
    stream: _Stream
    hour: int  # -1 when not split by hour
    headways: npt.NDArray[np.float64]
    target_s: float | None

    def figures(self) -> HeadwayFigures:
        s = headway_stats(self.headways, self.target_s)
        return {
            "count": s.count,
            "mean_s": figure(s.mean_s),
            "median_s": figure(s.median_s),
            "std_s": figure(s.std_s),
            "cv": figure(s.cv),
            "awt_s": figure(s.awt_s),
            "ewt_s": figure(s.ewt_s),
            "bunched_share": figure(s.bunched_share),
            "gapped_share": figure(s.gapped_share),
            "reference_s": figure(s.reference_s),
            "target_s": figure(s.target_s),
            "los": s.los,
        }


def headway_rows(data: ReportInput) -> list[HeadwayRow]:
    """Rows from (route, direction, seq, checkpoint_id, epoch_s) passages."""
    return [{**g.stream, **g.figures()} for g in _groups(data, by_hour=False)]


def hourly_headway_rows(data: ReportInput) -> list[HourlyHeadwayRow]:
    """The same per local hour of day (``FLEET_ANALYTICS_TIMEZONE``)."""
    return [{**g.stream, "hour": g.hour, **g.figures()} for g in _groups(data, by_hour=True)]


def _groups(data: ReportInput, by_hour: bool) -> Iterator[_Group]:
    """Headways whose later passage lies in the window, per checkpoint then pooled, per
    route and direction (and hour), vectorised over all passages."""
    passages, p = data.rows, data.params
    if not passages:
        return
    route = np.array([r[0] for r in passages], dtype=object)
    direction = np.array([r[1] for r in passages], dtype=np.int64)
    seq = np.array([r[2] for r in passages], dtype=np.int64)
    cp_id = np.array([r[3] for r in passages], dtype=object)
    t = np.array([r[4] for r in passages], dtype=np.float64)
    codes, r_idx = np.unique(route, return_inverse=True)
    key = (r_idx.astype(np.int64) * 2 + direction) * _STREAM + seq
    order = np.lexsort((t, key))
    key, t, cp_id = key[order], t[order], cp_id[order]
    same = key[1:] == key[:-1]
    h = (t[1:] - t[:-1])[same]
    at = t[1:][same]
    hkey = key[1:][same]
    hcp = cp_id[1:][same]
    keep = (
        (at >= p.start.timestamp()) & (at < p.end.timestamp()) & (h <= MAX_HEADWAY.total_seconds())
    )
    h, at, hkey, hcp = h[keep], at[keep], hkey[keep], hcp[keep]
    hour = _local_hour(at, p.timezone) if by_hour else np.full(h.size, -1, dtype=np.int64)
    stream = hkey // _STREAM
    for group_key in np.unique(stream * 100 + hour + 1):
        st, hr = divmod(int(group_key), 100)
        hr -= 1
        ri, d = divmod(st, 2)
        code = str(codes[ri])
        in_group = (stream == st) & (hour == hr)
        target = p.targets.get(code)
        for s in np.unique(hkey[in_group] % _STREAM).tolist():
            m = in_group & (hkey % _STREAM == s)
            key_s: _Stream = {
                "route": code,
                "direction": d,
                "checkpoint_seq": s,
                "checkpoint_id": str(hcp[m][0]),
            }
            yield _Group(key_s, hr, h[m], target)
        pooled: _Stream = {
            "route": code,
            "direction": d,
            "checkpoint_seq": None,
            "checkpoint_id": ALL,
        }
        yield _Group(pooled, hr, h[in_group], target)


def _local_hour(epoch_s: npt.NDArray[np.float64], timezone: str) -> npt.NDArray[np.int64]:
    """Local hour of day; the UTC offset is looked up once per distinct UTC hour."""
    tz = ZoneInfo(timezone)
    utc_hour = (epoch_s // 3600).astype(np.int64)
    uniq, inverse = np.unique(utc_hour, return_inverse=True)
    local = np.array(
        [datetime.fromtimestamp(int(u) * 3600, tz).hour for u in uniq.tolist()], dtype=np.int64
    )
    return np.asarray(local[inverse])
