"""``fleet bench analytics``: passage detection throughput and headway report latency.

A route-day is generated straight into a scratch database with binary ``COPY``: ``vans``
vans driving one route out and back, one fix per second for ``hours`` hours (defaults:
100 vans × 16 h = 5.76 M fixes), with speed changes, dwell stops and 5 m GPS noise.
Then:

* ``fixes_per_s``: passage detection (projection + crossings, numpy) over all fixes
  already in memory, fixes per CPU-second of this process (median of 3 runs; the
  wall-clock rate is printed too — on the shared 2-core machine it depends on what
  else runs);
* ``end_to_end_fixes_per_s``: the loop's recompute path for the whole day (binary COPY
  out of PostgreSQL, detection, delete + COPY of passages, traversals rebuilt in SQL);
* ``report_ms``: the headway report for that route and day (fetch the passages, all
  checkpoints and both directions, compute every figure), as ``fleet report headways``
  and ``/api/v1/reports/headways`` run it.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

import numpy as np
import numpy.typing as npt
import psycopg

from analytics.fix_arrays import Window, load_window_fixes
from analytics.passages import RouteLine, detect_crossings
from analytics.recompute import recompute_windows
from analytics.reports import ReportParams, run_report
from devtools.pgcopy import COPY_HEADER, COPY_TRAILER, copy_rows, pg_timestamps
from fleet.routes import Route
from fleet.storage.migrate import migrate

__all__ = ["BenchResult", "generate_day", "run_bench"]

log = logging.getLogger(__name__)

COPY_ROWS: Final = 200_000


@dataclass(frozen=True)
class BenchResult:
    fixes: int
    passages: int
    copy_s: float
    detect_s: float  # CPU seconds of this process (the machine is shared)
    detect_wall_s: float
    end_to_end_s: float
    report_ms: float
    report_rows: int

    @property
    def fixes_per_s(self) -> float:
        return self.fixes / self.detect_s

    @property
    def end_to_end_fixes_per_s(self) -> float:
        return self.fixes / self.end_to_end_s


def generate_day(
    route: Route, vans: int, hours: float, seed: int = 1
) -> tuple[
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
]:
    """(t_offset_s, lat, lon, speed) per van: arrays of shape (vans, hours·3600)."""
    rng = np.random.default_rng(seed)
    n = int(hours * 3600)
    # Speed per van and minute (4-12 m/s), dwell stops: ~2 per km of 4-30 s.
    per_min = rng.uniform(4.0, 12.0, (vans, n // 60 + 1))
    speed = np.repeat(per_min, 60, axis=1)[:, :n]
    dwell = rng.random((vans, n)) < 2.0 / 1000 * 8.0  # ≈ 2 stops per km at 8 m/s
    lengths = rng.integers(4, 30, (vans, n))
    stop_until = np.where(dwell, np.arange(n) + lengths, 0)
    stopped = np.maximum.accumulate(stop_until, axis=1) > np.arange(n)
    speed = np.where(stopped, 0.0, speed)
    loop = 2 * route.length_m
    start = rng.uniform(0, loop, (vans, 1))
    u = (start + np.cumsum(speed, axis=1)) % loop
    d = np.where(u < route.length_m, u, loop - u)
    lat, lon = route.position_at(d.ravel())
    noise = 5.0 / 111_195.0
    lat = lat + rng.normal(0, noise / np.sqrt(2), lat.size)
    lon = lon + rng.normal(0, noise / np.sqrt(2), lon.size) / np.cos(np.radians(lat))
    t = np.broadcast_to(np.arange(n, dtype=np.float64), (vans, n))
    return t, lat.reshape(vans, n), lon.reshape(vans, n), speed


def _copy_day(
    conn: psycopg.Connection,
    route: Route,
    vans: int,
    hours: float,
    day: datetime,
    progress: Callable[[int], None] | None,
) -> int:
    """COPY the generated fixes in PostgreSQL's binary format (fixed-width rows)."""
    t, lat, lon, speed = generate_day(route, vans, hours)
    ids = [f"bench-{i:04d}".encode() for i in range(vans)]
    code = route.code.encode()
    total = t.size
    width = len(ids[0])
    rows = copy_rows(
        [
            ("vid", f"S{width}", np.repeat(np.array(ids), t.shape[1])),
            ("ts", ">i8", pg_timestamps(day.timestamp() + t.ravel())),
            ("lat", ">f8", lat.ravel()),
            ("lon", ">f8", lon.ravel()),
            ("speed", ">f4", speed.ravel()),
            ("route", f"S{len(code)}", code),
        ],
        total,
    )
    row_bytes = len(rows) // max(total, 1)
    with (
        conn.cursor() as cur,
        cur.copy(
            "COPY positions (vehicle_id, ts, lat, lon, speed, route) FROM STDIN (FORMAT BINARY)"
        ) as copy,
    ):
        copy.write(COPY_HEADER)
        for i in range(0, total, COPY_ROWS):
            copy.write(rows[i * row_bytes : (i + COPY_ROWS) * row_bytes])
            if progress:
                progress(min(COPY_ROWS, total - i))
        copy.write(COPY_TRAILER)
    conn.execute(
        "INSERT INTO vehicles (vehicle_id, route) SELECT unnest(%s::text[]), %s"
        " ON CONFLICT DO NOTHING",
        ([i.decode() for i in ids], route.code),
    )
    return total


def run_bench(
    admin_dsn: str,
    route: Route,
    vans: int = 100,
    hours: float = 16.0,
    keep: bool = False,
    progress: Callable[[int], None] | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> BenchResult:
    """Create a scratch database on the server of ``admin_dsn``, measure, drop it."""
    name = f"bench_analytics_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    dsn = psycopg.conninfo.make_conninfo(admin_dsn, dbname=name)
    try:
        migrate(dsn)
        return _measure(dsn, route, vans, hours, progress, say)
    finally:
        if not keep:
            with psycopg.connect(admin_dsn, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            say(f"kept the scratch database: {dsn}")


def _measure(
    dsn: str,
    route: Route,
    vans: int,
    hours: float,
    progress: Callable[[int], None] | None,
    say: Callable[[str], None],
) -> BenchResult:
    line = RouteLine(route)
    lines = {route.code: line}
    # A day in Makassar: 05:00 WITA = 21:00 UTC the day before.
    day = datetime(2026, 11, 2, 21, 0, tzinfo=UTC)
    with psycopg.connect(dsn) as conn:
        t0 = time.perf_counter()
        total = _copy_day(conn, route, vans, hours, day, progress)
        conn.commit()
        copy_s = time.perf_counter() - t0
        say(f"generated and copied {total:,} fixes in {copy_s:.1f} s")
        conn.execute("ANALYZE positions")
        conn.commit()
        windows = [
            Window(
                f"bench-{i:04d}",
                day - timedelta(minutes=1),
                day + timedelta(hours=hours, minutes=1),
            )
            for i in range(vans)
        ]
        fixes = load_window_fixes(conn, windows, [route.code])
        conn.rollback()
        step = 10  # vans per detection call, to keep the N×K arrays cache-sized
        starts = np.searchsorted(fixes.window, np.arange(0, vans + step, step))
        cpu_runs, wall_runs = [], []
        passages = 0
        for _ in range(3):
            c0, w0 = time.process_time(), time.perf_counter()
            passages = 0
            for a, b in itertools.pairwise(starts):
                det = detect_crossings(
                    line, fixes.window[a:b], fixes.t[a:b], fixes.lat[a:b], fixes.lon[a:b]
                )
                passages += len(det.crossings)
            cpu_runs.append(time.process_time() - c0)
            wall_runs.append(time.perf_counter() - w0)
        detect_s = float(np.median(cpu_runs))
        detect_wall_s = float(np.median(wall_runs))
        say(
            f"detected {passages:,} passages: median of 3 runs {detect_s:.2f} s CPU,"
            f" {detect_wall_s:.2f} s wall (numpy, in memory; the machine is shared)"
        )
        t0 = time.perf_counter()
        result = recompute_windows(conn, lines, windows)
        conn.commit()
        e2e_s = time.perf_counter() - t0
        say(f"loop recompute (read, detect, write passages + traversals): {e2e_s:.1f} s")
        conn.execute("ANALYZE passages")
        conn.commit()
        params = ReportParams(
            start=day,
            end=day + timedelta(hours=24),
            route=route.code,
            targets={route.code: route.target_headway_s},
        )
        run_report(conn, "headways", params)  # warm the cache once
        timings = []
        rows = []
        for _ in range(3):
            t0 = time.perf_counter()
            rows = run_report(conn, "headways", params)
            timings.append((time.perf_counter() - t0) * 1000)
        report_ms = float(np.median(timings))
        say(
            f"headway report: {len(rows)} rows from {result.passages:,} passages, "
            f"median of 3 runs {report_ms:.0f} ms"
        )
    return BenchResult(
        total, result.passages, copy_s, detect_s, detect_wall_s, e2e_s, report_ms, len(rows)
    )
