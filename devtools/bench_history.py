"""``fleet bench history``: does history slow the present?

For each preload size (default 1 M and 20 M rows) a fresh database (an embedded
PostgreSQL in a temporary directory, or a scratch database on ``--dsn``'s server) gets a
realistic past, then the present is measured on top of it:

* **preload**: ``vans`` vans on the bundled routes (round-robin), each driving its
  route out and back at its own speed, one fix every ``interval_s`` — as many past days
  as the size takes, ending now — written with binary ``COPY`` in arrival order (ten
  minutes of the whole fleet at a time, ``received_at`` a second or two after ``ts``),
  as ingest would have written it. The passages and segment traversals of that past
  are computed by the product's own recompute, each van's newest fix is its row of
  ``vehicles`` (``latest_positions``), and the loop's watermark is the last arrival.
  Vacuumed as autovacuum leaves a table that only grows: its insert-triggered vacuum
  runs after ``autovacuum_vacuum_insert_scale_factor`` (0.2) of the table was inserted,
  so on average the newest ``unvacuumed_share`` (0.1) of the rows were written after the
  last ``VACUUM`` (a BRIN index has not summarized them) — the preload is copied in two
  parts with a ``VACUUM`` between; then ``ANALYZE`` (its threshold is lower).
* **analytics loop**: every ``cycle_s`` the fixes the fleet made since the previous
  cycle are inserted (``received_at`` = now, ``vehicles`` updated) and one
  :meth:`analytics.loop.AnalyticsLoop.run_once` is timed; median and max over
  ``cycles`` cycles after ``warmup_cycles``. Each SQL statement of the loop is timed too,
  so a statement that grows with history shows by name, and the slowest is run again
  under ``EXPLAIN (ANALYZE, BUFFERS)``.
* **ingest**: :func:`devtools.bench_ingest.run_ingest_bench` against the same database
  (its own Mosquitto and ``fleet ingest``), plus the PostgreSQL CPU per stored fix when
  the bench started the server.

The last line compares the sizes: ``cycle_ratio`` (largest / smallest median cycle) and
``ingest_ratio`` (smallest / largest stored rate); both should stay ≤ 1.2.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import statistics
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import psycopg

from analytics.fix_arrays import Window
from analytics.loop import STATE_NAME, AnalyticsLoop
from analytics.passages import RouteLine
from analytics.recompute import recompute_windows
from analytics.settings import AnalyticsSettings
from devtools.bench_ingest import BenchOptions as IngestOptions
from devtools.bench_ingest import run_ingest_bench
from devtools.pgcopy import COPY_HEADER, COPY_TRAILER, copy_rows, pg_timestamps
from devtools.processes import tree_cpu_seconds
from fleet.routes import Route, load_routes
from fleet.storage.embedded import EmbeddedPostgres, free_port
from fleet.storage.migrate import migrate

__all__ = [
    "HistoryOptions",
    "SizeResult",
    "measure_loop",
    "preload_history",
    "run_history_bench",
    "summary",
]

log = logging.getLogger(__name__)

CHUNK_S: Final = 600.0  # the preload is written ten minutes of the whole fleet at a time
RECOMPUTE_VANS: Final = 25  # vans per recompute call over the whole past (memory)
_NOISE_DEG: Final = 5.0 / 111_195.0
STATEMENTS_SHOWN: Final = 10  # the slowest statements of the loop printed per size


@dataclass(frozen=True)
class HistoryOptions:
    preloads: tuple[int, ...] = (1_000_000, 20_000_000)
    vans: int = 500
    interval_s: float = 5.0
    cycles: int = 12
    warmup_cycles: int = 2
    cycle_s: float = 5.0
    ingest_rate: float = 10_000
    ingest_duration_s: float = 30
    ingest_devices: int = 5000
    unvacuumed_share: float = 0.1  # newest rows written after the last VACUUM
    dsn: str | None = None  # a server to create scratch databases on (else embedded)
    workdir: Path | None = None  # where embedded servers live (default: a temp dir)
    seed: int = 1


@dataclass
class SizeResult:
    rows: int
    days: float
    preload_s: float
    recompute_s: float
    vacuum_s: float  # VACUUM of the older part of the preload + ANALYZE of everything
    cycle_s: list[float] = field(default_factory=list)
    cycle_fixes: int = 0
    statements: dict[str, float] = field(default_factory=dict)  # mean s per cycle
    explain: str = ""
    ingest: dict[str, float] = field(default_factory=dict)
    postgres_us_per_fix: float = float("nan")

    @property
    def cycle_median(self) -> float:
        return statistics.median(self.cycle_s)


# -- the fleet's motion -------------------------------------------------------------------


@dataclass(frozen=True)
class _Fleet:
    """Vans on real routes, each out and back at its own speed: position at any time."""

    routes: list[Route]
    route_of: npt.NDArray[np.int64]  # van → index into routes
    speed: npt.NDArray[np.float64]  # m/s
    phase: npt.NDArray[np.float64]  # metres into the out-and-back loop at t = 0
    offset: npt.NDArray[np.float64]  # seconds: each van reports on its own grid
    interval_s: float

    @classmethod
    def make(cls, routes: Mapping[str, Route], vans: int, interval_s: float, seed: int) -> _Fleet:
        rng = np.random.default_rng(seed)
        rs = list(routes.values())
        route_of = np.arange(vans) % len(rs)
        loops = np.array([2 * rs[r].length_m for r in route_of])
        return cls(
            rs,
            route_of,
            rng.uniform(4.0, 9.0, vans),
            rng.uniform(0.0, 1.0, vans) * loops,
            rng.uniform(0.0, interval_s, vans),
            interval_s,
        )

    def vehicle_ids(self) -> list[str]:
        return [f"hist-{i:05d}" for i in range(self.route_of.size)]

    def fixes(
        self, t0: float, t1: float, rng: np.random.Generator
    ) -> Iterator[tuple[int, npt.NDArray[np.int64], npt.NDArray[np.float64], dict[str, Any]]]:
        """Per route: (route index, vans, ts, columns) of every fix in [t0, t1), by ts."""
        k0 = np.ceil((t0 - self.offset) / self.interval_s)
        k1 = np.ceil((t1 - self.offset) / self.interval_s)
        for r, route in enumerate(self.routes):
            vans = np.flatnonzero(self.route_of == r)
            counts = (k1[vans] - k0[vans]).astype(np.int64)
            if counts.sum() == 0:
                continue
            van = np.repeat(vans, counts)
            first = np.repeat(k0[vans], counts)
            step = np.arange(van.size) - np.repeat(np.cumsum(counts) - counts, counts)
            ts = self.offset[van] + (first + step) * self.interval_s
            order = np.argsort(ts, kind="stable")
            van, ts = van[order], ts[order]
            u = (self.phase[van] + self.speed[van] * ts) % (2 * route.length_m)
            back = u >= route.length_m
            d = np.where(back, 2 * route.length_m - u, u)
            lat, lon = route.position_at(d)
            lat = lat + rng.normal(0, _NOISE_DEG / np.sqrt(2), lat.size)
            lon = lon + rng.normal(0, _NOISE_DEG / np.sqrt(2), lon.size) / np.cos(np.radians(lat))
            heading = (route.bearing_at(d) + np.where(back, 180.0, 0.0)) % 360.0
            yield r, van, ts, {"lat": lat, "lon": lon, "speed": self.speed[van], "hdg": heading}


def _copy_rows(
    fleet: _Fleet,
    ids: list[bytes],
    r: int,
    van: npt.NDArray[np.int64],
    ts: Any,
    cols: Any,
    received: float | None = None,
) -> bytes:
    """Binary COPY rows (vehicle_id, ts, lat, lon, speed, heading, route, received_at);
    ``received_at`` is ``received`` (epoch s), else 0.3-2 s after the fix (a cellular
    link and a batch)."""
    code = fleet.routes[r].code.encode()
    width = len(ids[0])
    us = pg_timestamps(ts)
    rx = us + (300_000 + (us % 1_700_000)) if received is None else pg_timestamps(received)
    return copy_rows(
        [
            ("vid", f"S{width}", np.asarray(ids, dtype=f"S{width}")[van]),
            ("ts", ">i8", us),
            ("lat", ">f8", cols["lat"]),
            ("lon", ">f8", cols["lon"]),
            ("speed", ">f4", cols["speed"]),
            ("hdg", ">f4", cols["hdg"]),
            ("route", f"S{len(code)}", code),
            ("rx", ">i8", rx),
        ],
        van.size,
    )


_COPY_SQL: Final = (
    "COPY positions (vehicle_id, ts, lat, lon, speed, heading, route, received_at)"
    " FROM STDIN (FORMAT BINARY)"
)


def _preload(
    conn: psycopg.Connection,
    fleet: _Fleet,
    t0: float,
    t1: float,
    progress: Callable[[int], None],
) -> int:
    """COPY every fix of [t0, t1) in arrival order; returns the row count."""
    rng = np.random.default_rng(7)
    ids = [v.encode() for v in fleet.vehicle_ids()]
    total = 0
    with conn.cursor() as cur, cur.copy(_COPY_SQL) as copy:
        copy.write(COPY_HEADER)
        start = t0
        while start < t1:
            end = min(t1, start + CHUNK_S)
            for r, van, ts, cols in fleet.fixes(start, end, rng):
                copy.write(_copy_rows(fleet, ids, r, van, ts, cols))
                total += van.size
                progress(van.size)
            start = end
        copy.write(COPY_TRAILER)
    return total


def _present(conn: psycopg.Connection, fleet: _Fleet, t0: float, t1: float) -> int:
    """The fleet's fixes of [t0, t1), arrived now; ``vehicles`` follows (latest position)."""
    rng = np.random.default_rng(int(t0))
    ids = [v.encode() for v in fleet.vehicle_ids()]
    n = 0
    received = time.time()
    with conn.cursor() as cur, cur.copy(_COPY_SQL) as copy:
        copy.write(COPY_HEADER)
        for r, van, ts, cols in fleet.fixes(t0, t1, rng):
            copy.write(_copy_rows(fleet, ids, r, van, ts, cols, received))
            n += van.size
        copy.write(COPY_TRAILER)
    _set_latest(conn, fleet)
    return n


def _set_latest(conn: psycopg.Connection, fleet: _Fleet) -> None:
    """Each van's row of ``vehicles`` = its newest stored fix (ingest's guarded upsert)."""
    conn.execute(
        """
        INSERT INTO vehicles AS v (vehicle_id, route, last_ts, lat, lon, speed, heading,
                                   status, status_at)
        SELECT p.vehicle_id, p.route, p.ts, p.lat, p.lon, p.speed, p.heading, 'online', now()
        FROM unnest(%s::text[]) AS f(vehicle_id)
        CROSS JOIN LATERAL (
            SELECT * FROM positions WHERE vehicle_id = f.vehicle_id ORDER BY ts DESC LIMIT 1
        ) p
        ON CONFLICT (vehicle_id) DO UPDATE SET
            route = EXCLUDED.route, last_ts = EXCLUDED.last_ts, lat = EXCLUDED.lat,
            lon = EXCLUDED.lon, speed = EXCLUDED.speed, heading = EXCLUDED.heading
        WHERE v.last_ts IS NULL OR EXCLUDED.last_ts > v.last_ts
        """,
        (fleet.vehicle_ids(),),
    )


# -- the loop, statement by statement -------------------------------------------------------


class _TimedConnection(psycopg.Connection[Any]):
    """A connection that adds each statement's execution time to ``timings``."""

    timings: dict[str, float]
    last: dict[str, tuple[Any, Any]]

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return super().execute(query, params, **kwargs)
        finally:
            text = query.decode() if isinstance(query, bytes) else str(query)
            name = " ".join(text.split())[:70]
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0
            self.last[name] = (query, params)


class _TimedLoop(AnalyticsLoop):
    def __init__(self, dsn: str, routes: Mapping[str, Route]) -> None:
        super().__init__(dsn, routes, AnalyticsSettings())
        self.timings: dict[str, float] = defaultdict(float)
        self.statements: dict[str, tuple[Any, Any]] = {}  # name → its last (query, params)

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            conn = _TimedConnection.connect(self.dsn, autocommit=False)
            conn.timings, conn.last = self.timings, self.statements
            self._conn = conn
        return self._conn


def _explain(dsn: str, query: Any, params: Any) -> str:
    text = query.decode() if isinstance(query, bytes) else str(query)
    with psycopg.connect(dsn) as conn:
        try:
            plan = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS) {text}", params).fetchall()
        finally:
            conn.rollback()  # a DELETE or INSERT explained with ANALYZE ran: undo it
    return "\n".join(str(r[0]) for r in plan)


# -- orchestration --------------------------------------------------------------------------


@contextlib.contextmanager
def _database(opts: HistoryOptions, root: Path) -> Iterator[tuple[str, int | None]]:
    """A fresh database: (dsn, postmaster pid when the bench started the server)."""
    if opts.dsn is not None:
        name = f"bench_history_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(opts.dsn, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield psycopg.conninfo.make_conninfo(opts.dsn, dbname=name), None
        finally:
            with psycopg.connect(opts.dsn, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        return
    pg = EmbeddedPostgres(root / "postgres", port=free_port())
    pg.start()
    try:
        yield pg.dsn, pg.pid()
    finally:
        pg.stop(mode="immediate")
        shutil.rmtree(root / "postgres", ignore_errors=True)


def run_history_bench(
    opts: HistoryOptions,
    say: Callable[[str], None],
    progress: Callable[[int, int], None] = lambda _n, _total: None,
) -> list[SizeResult]:
    """Measure the loop and ingest at each preload size; ``progress(rows, total)``."""
    routes = load_routes()
    root = opts.workdir or Path(tempfile.mkdtemp(prefix="fleet-bench-history-"))
    results = []
    try:
        for rows in opts.preloads:
            with _database(opts, root) as (dsn, pg_pid):
                results.append(_one_size(opts, routes, rows, dsn, pg_pid, say, progress))
    finally:
        if opts.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    return results


def _one_size(
    opts: HistoryOptions,
    routes: Mapping[str, Route],
    rows: int,
    dsn: str,
    pg_pid: int | None,
    say: Callable[[str], None],
    progress: Callable[[int, int], None],
) -> SizeResult:
    migrate(dsn)
    fleet, t1, result = preload_history(opts, routes, rows, dsn, say, progress)
    measure_loop(opts, routes, fleet, dsn, t1, result, say)
    if opts.ingest_duration_s > 0:
        _measure_ingest(opts, dsn, pg_pid, result, say)
    return result


def preload_history(
    opts: HistoryOptions,
    routes: Mapping[str, Route],
    rows: int,
    dsn: str,
    say: Callable[[str], None],
    progress: Callable[[int, int], None],
) -> tuple[_Fleet, float, SizeResult]:
    """Write ``rows`` of the fleet's past ending now into the (migrated) database;
    returns the fleet, the end of the past (epoch s) and the result to fill in."""
    fleet = _Fleet.make(routes, opts.vans, opts.interval_s, opts.seed)
    span = rows / opts.vans * opts.interval_s
    now = time.time()
    t0, t1 = now - span, now
    say(f"preload {rows:,} rows: {opts.vans} vans, {span / 86400:.2f} days ending now")
    done = 0

    def bar(n: int) -> None:
        nonlocal done
        done += n
        progress(done, rows)

    t_split = t1 - span * opts.unvacuumed_share
    with psycopg.connect(dsn) as conn:
        a = time.perf_counter()
        total = _preload(conn, fleet, t0, t_split, bar)
        conn.commit()
        preload_s = time.perf_counter() - a
    a = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM positions")  # autovacuum's last run (the insert threshold)
    vacuum_s = time.perf_counter() - a
    with psycopg.connect(dsn) as conn:
        a = time.perf_counter()
        total += _preload(conn, fleet, t_split, t1, bar)
        _set_latest(conn, fleet)
        conn.commit()
        preload_s += time.perf_counter() - a
        say(f"copied {total:,} rows in {preload_s:.1f} s ({total / preload_s:,.0f} rows/s)")
        a = time.perf_counter()
        lines = {code: RouteLine(r) for code, r in routes.items()}
        vids = fleet.vehicle_ids()
        lo, hi = datetime.fromtimestamp(t0, UTC), datetime.fromtimestamp(t1, UTC)
        passages = 0
        for i in range(0, len(vids), RECOMPUTE_VANS):
            windows = [Window(v, lo, hi) for v in vids[i : i + RECOMPUTE_VANS]]
            passages += recompute_windows(conn, lines, windows).passages
            conn.commit()
        conn.execute(
            "INSERT INTO analytics_state (name, watermark)"
            " SELECT %s, max(received_at) FROM positions",
            (STATE_NAME,),
        )
        conn.commit()
        recompute_s = time.perf_counter() - a
        say(f"history's passages: {passages:,} in {recompute_s:.1f} s")
    a = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE passages")
        conn.execute("VACUUM ANALYZE segment_traversals")
        conn.execute("ANALYZE")
        conn.execute("CHECKPOINT")  # the past's dirty pages were written long ago, too
    vacuum_s += time.perf_counter() - a
    result = SizeResult(rows, span / 86400, preload_s, recompute_s, vacuum_s)
    say(
        f"vacuum (older {1 - opts.unvacuumed_share:.0%} of positions) and analyze: {vacuum_s:.1f} s"
    )
    return fleet, t1, result


def _measure_ingest(
    opts: HistoryOptions,
    dsn: str,
    pg_pid: int | None,
    result: SizeResult,
    say: Callable[[str], None],
) -> None:
    cpu0 = tree_cpu_seconds(pg_pid)
    ingest = IngestOptions(
        rate=opts.ingest_rate,
        duration_s=opts.ingest_duration_s,
        devices=opts.ingest_devices,
        dsn=dsn,
    )
    a = time.perf_counter()
    result.ingest = run_ingest_bench(ingest, say)
    seconds = time.perf_counter() - a
    stored = result.ingest.get("stored", 0.0)
    if pg_pid is not None and stored:
        result.postgres_us_per_fix = (tree_cpu_seconds(pg_pid) - cpu0) / stored * 1e6
    say(
        f"rows={result.rows} ingest rate={result.ingest['rate']:.0f} "
        f"p50_ms={result.ingest['p50_ms']:.0f} p99_ms={result.ingest['p99_ms']:.0f} "
        f"postgres_us_per_fix={result.postgres_us_per_fix:.1f} (whole run, {seconds:.0f} s)"
    )


def measure_loop(
    opts: HistoryOptions,
    routes: Mapping[str, Route],
    fleet: _Fleet,
    dsn: str,
    t_from: float,
    result: SizeResult,
    say: Callable[[str], None],
) -> None:
    loop = _TimedLoop(dsn, routes)
    try:
        with psycopg.connect(dsn) as conn:
            for k in range(opts.warmup_cycles + opts.cycles):
                due = t_from + opts.cycle_s
                time.sleep(max(0.0, due - time.time()))
                t_to = time.time()
                fixes = _present(conn, fleet, t_from, t_to)
                conn.commit()
                t_from = t_to
                if k == opts.warmup_cycles:
                    loop.timings.clear()
                stats = loop.run_once()
                if k >= opts.warmup_cycles:
                    result.cycle_s.append(stats.seconds)
                    result.cycle_fixes += fixes
    finally:
        loop.stop(timeout=1)
    n = max(1, opts.cycles)
    result.statements = {q: s / n for q, s in loop.timings.items()}
    # the slowest query (a write explained out of its transaction could conflict)
    reads = [q for q in loop.timings if q.upper().startswith(("SELECT", "WITH"))]
    slowest = max(reads, key=lambda q: loop.timings[q])
    query, params = loop.statements[slowest]
    try:
        result.explain = _explain(dsn, query, params)
    except psycopg.Error as exc:
        result.explain = f"EXPLAIN failed: {exc}"
    say(
        f"rows={result.rows} loop: median cycle {result.cycle_median * 1000:.0f} ms, "
        f"max {max(result.cycle_s) * 1000:.0f} ms, "
        f"{result.cycle_fixes / n:.0f} new fixes per cycle"
    )
    for q, s in sorted(result.statements.items(), key=lambda kv: -kv[1])[:STATEMENTS_SHOWN]:
        say(f"  {s * 1000:7.1f} ms/cycle  {q}")
    say(f"  slowest query, EXPLAIN (ANALYZE, BUFFERS):\n{result.explain}")


def summary(results: list[SizeResult]) -> str:
    """The last line: both ratios of the largest size against the smallest."""
    small, big = min(results, key=lambda r: r.rows), max(results, key=lambda r: r.rows)
    cycle_ratio = big.cycle_median / max(small.cycle_median, 1e-9)
    line = (
        f"rows={small.rows},{big.rows} "
        f"cycle_ms={small.cycle_median * 1000:.0f},{big.cycle_median * 1000:.0f} "
    )
    if small.ingest and big.ingest:
        line += (
            f"ingest_rate={small.ingest['rate']:.0f},{big.ingest['rate']:.0f} "
            f"ingest_p99_ms={small.ingest['p99_ms']:.0f},{big.ingest['p99_ms']:.0f} "
            f"ingest_ratio={small.ingest['rate'] / max(big.ingest['rate'], 1e-9):.2f} "
            f"p99_ratio={big.ingest['p99_ms'] / max(small.ingest['p99_ms'], 1e-9):.2f} "
        )
    return line + f"cycle_ratio={cycle_ratio:.2f}"
