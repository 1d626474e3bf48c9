"""Planner reports: headways, congestion and service, as rows; CSV and JSON rendering.

The SQL lives here once and is run either by the CLI (sync psycopg) or by the API
(async pool): each report is a query (``*_SQL`` + ``*_params``) plus a pure function
that turns the fetched rows into report rows, so both front ends give identical output.

* **headways** — per route, direction and checkpoint (and a pooled ``ALL`` row per
  route and direction), optionally per local hour of day: the figures of
  :func:`analytics.headways.headway_stats`.
* **congestion** — per 5-minute bucket and checkpoint-to-checkpoint segment: samples,
  vans, median/p85 travel time and speed, free-flow speed (p85 of off-peak speeds) and
  congestion level; or per H3 cell (``level="area"``).
* **service** — per route and hour: vans in service (with at least one checkpoint
  passage), vehicle-km (sum of checkpoint-to-checkpoint traversals), passages.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

import h3
import numpy as np
import psycopg

from analytics.congestion import congestion_level
from analytics.headways import headway_stats

__all__ = [
    "AREA_SQL",
    "CONGESTION_SQL",
    "FREEFLOW_SQL",
    "HEADWAY_PASSAGES_SQL",
    "SERVICE_SQL",
    "ReportError",
    "ReportParams",
    "area_rows",
    "congestion_rows",
    "freeflow_params",
    "headway_rows",
    "parse_time",
    "render",
    "service_rows",
]

Row = dict[str, Any]
MAX_HEADWAY_S: Final = 3 * 3600  # a predecessor passage further back is not a headway
ALL: Final = "ALL"


class ReportError(ValueError):
    """Bad report parameters; the message says which and how to fix them."""


def parse_time(value: str | None, default: datetime) -> datetime:
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
    start: datetime
    end: datetime
    route: str | None = None
    checkpoint: int | None = None  # checkpoint seq (or parsed from an id like "B-012")
    direction: int | None = None
    by_hour: bool = False
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


# -- headways ------------------------------------------------------------------------------

HEADWAY_PASSAGES_SQL: Final = """
SELECT route, direction, checkpoint_seq, checkpoint_id, extract(epoch FROM ts)::float8
FROM passages
WHERE ts >= %(lo)s AND ts < %(hi)s
  AND (%(route)s::text IS NULL OR route = %(route)s)
  AND (%(checkpoint)s::int IS NULL OR checkpoint_seq = %(checkpoint)s)
  AND (%(direction)s::int IS NULL OR direction = %(direction)s)
ORDER BY route, direction, checkpoint_seq, ts
"""


def headway_params(
    p: ReportParams, lo: datetime | None = None, hi: datetime | None = None
) -> dict[str, Any]:
    """Parameters for HEADWAY_PASSAGES_SQL; the fetch starts MAX_HEADWAY_S early so the
    first headway of the window has its predecessor."""
    return {
        "lo": lo or p.start - timedelta(seconds=MAX_HEADWAY_S),
        "hi": hi or p.end,
        "route": p.route,
        "checkpoint": p.checkpoint,
        "direction": p.direction,
    }


def _finite(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x, 4)


def headway_rows(passages: Sequence[Sequence[Any]], p: ReportParams) -> list[Row]:
    """Report rows from (route, direction, seq, checkpoint_id, epoch_s) passages."""
    if not passages:
        return []
    route = np.array([r[0] for r in passages], dtype=object)
    direction = np.array([r[1] for r in passages], dtype=np.int64)
    seq = np.array([r[2] for r in passages], dtype=np.int64)
    cp_id = np.array([r[3] for r in passages], dtype=object)
    t = np.array([r[4] for r in passages], dtype=np.float64)
    codes, r_idx = np.unique(route, return_inverse=True)
    key = (r_idx.astype(np.int64) * 2 + direction) * 100_000 + seq
    order = np.lexsort((t, key))
    key, t, cp_id = key[order], t[order], cp_id[order]
    same = key[1:] == key[:-1]
    h = (t[1:] - t[:-1])[same]
    at = t[1:][same]
    hkey = key[1:][same]
    hcp = cp_id[1:][same]
    keep = (at >= p.start.timestamp()) & (at < p.end.timestamp()) & (h <= MAX_HEADWAY_S)
    h, at, hkey, hcp = h[keep], at[keep], hkey[keep], hcp[keep]
    hour = _local_hour(at, p.timezone) if p.by_hour else np.full(h.size, -1, dtype=np.int64)
    rows: list[Row] = []
    stream = hkey // 100_000
    for group_key in np.unique(stream * 100 + hour + 1):
        st, hr = divmod(int(group_key), 100)
        hr -= 1
        ri, d = divmod(st, 2)
        code = str(codes[ri])
        in_group = (stream == st) & (hour == hr)
        target = p.targets.get(code)
        for s in np.unique(hkey[in_group] % 100_000).tolist():
            m = in_group & (hkey % 100_000 == s)
            rows.append(_headway_row(code, d, s, str(hcp[m][0]), hr, h[m], target, p.by_hour))
        rows.append(_headway_row(code, d, None, ALL, hr, h[in_group], target, p.by_hour))
    return rows


def _local_hour(epoch_s: np.ndarray[Any, Any], timezone: str) -> np.ndarray[Any, Any]:
    """Local hour of day; the UTC offset is looked up once per distinct UTC hour."""
    tz = ZoneInfo(timezone)
    utc_hour = (epoch_s // 3600).astype(np.int64)
    uniq, inverse = np.unique(utc_hour, return_inverse=True)
    local = np.array(
        [datetime.fromtimestamp(int(u) * 3600, tz).hour for u in uniq.tolist()], dtype=np.int64
    )
    return np.asarray(local[inverse])


def _headway_row(
    route: str,
    direction: int,
    seq: int | None,
    cp_id: str,
    hour: int,
    h: np.ndarray[Any, Any],
    target: float | None,
    by_hour: bool,
) -> Row:
    stats = headway_stats(h, target)
    row: Row = {
        "route": route,
        "direction": direction,
        "checkpoint_seq": seq,
        "checkpoint_id": cp_id,
    }
    if by_hour:
        row["hour"] = hour
    for name, value in stats.as_dict().items():
        row[name] = _finite(value) if isinstance(value, float) else value
    return row


# -- congestion ----------------------------------------------------------------------------

CONGESTION_SQL: Final = """
SELECT bucket, route, direction, from_seq, to_seq, samples, vans, median_travel_s,
       p85_travel_s, median_speed_mps, p85_speed_mps, length_m
FROM segment_speeds
WHERE bucket >= %(lo)s AND bucket < %(hi)s
  AND (%(route)s::text IS NULL OR route = %(route)s)
  AND (%(checkpoint)s::int IS NULL OR from_seq = %(checkpoint)s OR to_seq = %(checkpoint)s)
  AND (%(direction)s::int IS NULL OR direction = %(direction)s)
ORDER BY route, direction, from_seq, bucket
"""

FREEFLOW_SQL: Final = """
SELECT route, direction, from_seq, percentile_cont(0.85) WITHIN GROUP (ORDER BY speed_mps)
FROM segment_traversals
WHERE ts >= %(ff_lo)s AND ts < %(ff_hi)s
  AND (%(route)s::text IS NULL OR route = %(route)s)
  AND extract(hour FROM ts AT TIME ZONE %(tz)s)::int = ANY(%(hours)s::int[])
GROUP BY route, direction, from_seq
"""

AREA_SQL: Final = """
SELECT bucket, cell, samples, vans, median_speed_mps, p85_speed_mps
FROM area_speeds WHERE bucket >= %(lo)s AND bucket < %(hi)s
ORDER BY cell, bucket
"""


def congestion_params(
    p: ReportParams, lo: datetime | None = None, hi: datetime | None = None
) -> dict[str, Any]:
    return {
        "lo": lo or p.start,
        "hi": hi or p.end,
        "route": p.route,
        "checkpoint": p.checkpoint,
        "direction": p.direction,
    }


def freeflow_params(
    p: ReportParams, offpeak_hours: Iterable[int], lookback_days: int
) -> dict[str, Any]:
    return {
        "ff_lo": p.end - timedelta(days=lookback_days),
        "ff_hi": p.end,
        "route": p.route,
        "tz": p.timezone,
        "hours": sorted(offpeak_hours),
    }


def congestion_rows(rows: Sequence[Sequence[Any]], freeflow: Sequence[Sequence[Any]]) -> list[Row]:
    ff = {(str(r), int(d), int(s)): float(v) for r, d, s, v in freeflow if v}
    out: list[Row] = []
    for bucket, route, d, fs, ts_, n, vans, med_t, p85_t, med_v, p85_v, length in rows:
        ff_speed = ff.get((route, int(d), int(fs)))
        ff_travel = length / ff_speed if ff_speed else float("nan")
        out.append(
            {
                "bucket": bucket.isoformat(),
                "route": route,
                "direction": int(d),
                "from_seq": int(fs),
                "to_seq": int(ts_),
                "length_m": round(float(length), 1),
                "samples": int(n),
                "vans": int(vans),
                "median_travel_s": _finite(med_t),
                "p85_travel_s": _finite(p85_t),
                "median_speed_kmh": _finite(med_v * 3.6),
                "p85_speed_kmh": _finite(p85_v * 3.6),
                "freeflow_speed_kmh": _finite(ff_speed * 3.6) if ff_speed else None,
                "freeflow_travel_s": _finite(ff_travel),
                "congestion_level": _finite(congestion_level(float(med_t), ff_travel)),
            }
        )
    return out


def area_rows(rows: Sequence[Sequence[Any]]) -> list[Row]:
    out: list[Row] = []
    for bucket, cell, n, vans, med, p85 in rows:
        lat, lon = h3.cell_to_latlng(cell)
        out.append(
            {
                "bucket": bucket.isoformat(),
                "cell": cell,
                "lat": round(lat, 6),
                "lon": round(lon, 6),
                "samples": int(n),
                "vans": int(vans),
                "median_speed_kmh": _finite(med * 3.6),
                "p85_speed_kmh": _finite(p85 * 3.6),
            }
        )
    return out


# -- service -------------------------------------------------------------------------------

SERVICE_SQL: Final = """
WITH pas AS (
    SELECT route, date_trunc('hour', ts) AS hour, count(DISTINCT vehicle_id) AS vans,
           count(*) AS passages
    FROM passages
    WHERE ts >= %(lo)s AND ts < %(hi)s AND (%(route)s::text IS NULL OR route = %(route)s)
      AND (%(checkpoint)s::int IS NULL OR checkpoint_seq = %(checkpoint)s)
      AND (%(direction)s::int IS NULL OR direction = %(direction)s)
    GROUP BY 1, 2
), km AS (
    SELECT route, date_trunc('hour', ts) AS hour, sum(length_m) / 1000.0 AS vehicle_km
    FROM segment_traversals
    WHERE ts >= %(lo)s AND ts < %(hi)s AND (%(route)s::text IS NULL OR route = %(route)s)
      AND (%(direction)s::int IS NULL OR direction = %(direction)s)
    GROUP BY 1, 2
)
SELECT pas.route, pas.hour, pas.vans, coalesce(km.vehicle_km, 0), pas.passages
FROM pas LEFT JOIN km USING (route, hour)
ORDER BY pas.route, pas.hour
"""


def service_rows(rows: Sequence[Sequence[Any]]) -> list[Row]:
    return [
        {
            "route": r,
            "hour": hour.isoformat(),
            "active_vans": int(vans),
            "vehicle_km": round(float(km), 3),
            "passages": int(n),
        }
        for r, hour, vans, km, n in rows
    ]


# -- rendering -----------------------------------------------------------------------------


def render(rows: list[Row], fmt: Literal["json", "csv"]) -> str:
    if fmt == "json":
        return json.dumps(rows, ensure_ascii=False, indent=None, separators=(",", ":"))
    buf = io.StringIO()
    columns: list[str] = []
    for row in rows:
        for k in row:
            if k not in columns:
                columns.append(k)
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buf.getvalue()


# -- running the reports on a sync connection (CLI, benchmarks) --------------------------

CHUNK: Final = timedelta(days=1)


def time_chunks(
    lo: datetime, hi: datetime, step: timedelta = CHUNK
) -> list[tuple[datetime, datetime]]:
    """[lo, hi) cut into ``step``-long pieces (the CLI's progress bar advances per piece)."""
    out: list[tuple[datetime, datetime]] = []
    t = lo
    while t < hi:
        out.append((t, min(t + step, hi)))
        t += step
    return out


def run_report(
    conn: psycopg.Connection,
    kind: Literal["headways", "congestion", "area", "service"],
    p: ReportParams,
    offpeak_hours: Iterable[int] = (),
    freeflow_lookback_days: int = 28,
    on_chunk: Callable[[], None] | None = None,
) -> list[Row]:
    """Fetch a report chunk by chunk (one day each) and build its rows."""
    if kind == "headways":
        base = headway_params(p)
        pieces = time_chunks(base["lo"], base["hi"])
    else:
        pieces = time_chunks(p.start, p.end)
    fetched: list[Any] = []
    for lo, hi in pieces:
        if kind == "headways":
            params = headway_params(p, lo, hi)
            query = HEADWAY_PASSAGES_SQL
        elif kind == "service":
            params, query = congestion_params(p, lo, hi), SERVICE_SQL
        elif kind == "area":
            params, query = congestion_params(p, lo, hi), AREA_SQL
        else:
            params, query = congestion_params(p, lo, hi), CONGESTION_SQL
        fetched.extend(conn.execute(query, params).fetchall())
        if on_chunk is not None:
            on_chunk()
    if kind == "headways":
        return headway_rows(fetched, p)
    if kind == "service":
        return service_rows(fetched)
    if kind == "area":
        return area_rows(fetched)
    ff = conn.execute(
        FREEFLOW_SQL, freeflow_params(p, offpeak_hours, freeflow_lookback_days)
    ).fetchall()
    return congestion_rows(fetched, ff)


def report_chunks(kind: str, p: ReportParams) -> int:
    """How many pieces run_report will fetch (for a progress bar)."""
    if kind == "headways":
        base = headway_params(p)
        return len(time_chunks(base["lo"], base["hi"]))
    return len(time_chunks(p.start, p.end))
