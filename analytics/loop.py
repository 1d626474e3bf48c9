"""The analytics loop, run in a thread of the ingest process.

Every ``interval_s`` one cycle, in one transaction:

1. take the ``received_at`` watermark (table ``analytics_state``) and find the vans with
   rows that arrived since ``watermark − overlap_s`` (the overlap catches rows of
   ingest transactions that were still open at the previous cycle; reprocessing is
   idempotent). The scan is bounded by ``ts`` too: ingest refuses fixes outside
   [now − ``FLEET_MAX_AGE_S``, now + ``FLEET_MAX_FUTURE_S``] (:class:`fleet.contract.Validation`),
   so rows that arrived in the window lie in that horizon around it (plus
   :data:`HORIZON_SLACK`), and a hypertable partitioned by ``ts`` excludes older chunks;
2. for each such van, recompute passages over [first new fix − max_gap_s, last new fix
   + max_gap_s] (:mod:`analytics.recompute`): late store-and-forward batches
   are picked up by arrival time, whatever their fix times;
3. refresh the 5-minute segment rollups and, at most every ``area_refresh_s``, the H3
   area speeds of the buckets the new fixes fell in (whole buckets are re-read, so
   this is the costly part of a live cycle);
4. evaluate alerts, reconcile them and fold them into incidents
   (:mod:`analytics.incidents`);
5. advance the watermark and commit. On TimescaleDB the segment rollup, a continuous
   aggregate, is refreshed right after the commit
   (``refresh_continuous_aggregate`` cannot run inside a transaction); should that
   fail, its policy catches up within minutes.

A transaction-scoped advisory lock makes one loop at a time do the work when several
ingest workers run it (scale-out): the others skip the cycle.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import psycopg

from analytics.alerts import evaluate_alerts, reconcile_alerts
from analytics.congestion import (
    refresh_area_speeds,
    refresh_segment_speeds,
    segment_speeds_is_aggregate,
)
from analytics.fix_arrays import Window
from analytics.incidents import reconcile_incidents
from analytics.passages import RouteLike, RouteLine
from analytics.recompute import recompute_windows
from analytics.settings import AnalyticsSettings
from fleet.contract import Validation
from fleet.routes import load_routes
from fleet.settings import IngestSettings, load

__all__ = ["AnalyticsLoop", "CycleStats"]

log = logging.getLogger(__name__)

_LOCK_KEY: Final = 0x6E1EE8  # pg_try_advisory_xact_lock: one analytics cycle at a time
STATE_NAME: Final = "analytics"
#: Beyond the validation horizon: a fix is checked when ingest decodes it and stamped
#: ``received_at`` when its batch commits, which a database outage can delay (ingest
#: retries the batch), plus clock skew between the ingest hosts and the database.
HORIZON_SLACK: Final = timedelta(days=1)


@dataclass(frozen=True)
class CycleStats:
    vans: int
    fixes: int
    passages: int
    alerts_opened: int
    alerts_resolved: int
    watermark: datetime | None
    seconds: float
    skipped: bool = False
    incidents_opened: int = 0
    incidents_resolved: int = 0  # by the system: the condition cleared


class AnalyticsLoop:
    """Passages, rollups and alerts from the positions table, in a background thread.

    ``routes`` is ``fleet.routes.load_routes()``'s result (route code → Route);
    ``horizon`` the validation ingest applies (default: ingest's defaults), which bounds
    the fix times of newly arrived rows.
    ``run_once()`` does one cycle synchronously (tests, benchmarks); ``start()`` /
    ``stop()`` run it every ``settings.interval_s`` in a daemon thread.
    """

    def __init__(
        self,
        dsn: str,
        routes: Mapping[str, RouteLike],
        settings: AnalyticsSettings | None = None,
        horizon: Validation | None = None,
    ) -> None:
        self.dsn = dsn
        self.settings = settings or AnalyticsSettings()
        self.horizon = horizon or Validation()
        params = self.settings.detection
        self.lines = {code: RouteLine(r, params) for code, r in routes.items()}
        self.targets: dict[str, float | None] = {
            code: getattr(r, "target_headway_s", None) for code, r in routes.items()
        }
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection | None = None
        self._area_dirty: set[datetime] = set()  # buckets with new fixes, not yet rolled up
        self._area_refreshed = 0.0
        self.last: CycleStats | None = None
        self.cycles = 0
        self.errors = 0

    @classmethod
    def from_env(cls, dsn: str) -> AnalyticsLoop:
        """Settings from ``FLEET_ANALYTICS_*`` (SettingsError if invalid), their routes,
        and the horizon ingest validates fixes with (``FLEET_MAX_AGE_S``,
        ``FLEET_MAX_FUTURE_S``: the same variables as the worker in this process)."""
        settings = load(AnalyticsSettings)
        routes = load_routes(settings.routes_path, settings.checkpoint_spacing_m)
        ingest = load(IngestSettings)
        horizon = Validation(
            max_future_ms=ingest.max_future_s * 1000, max_age_ms=ingest.max_age_s * 1000
        )
        return cls(dsn, routes, settings, horizon)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="analytics", daemon=True)
        self._thread.start()
        log.info("analytics loop started", extra={"interval_s": self.settings.interval_s})

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the thread after its current cycle (which then also flushes area rollups)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._area_dirty:
            try:
                self.run_once()
            except psycopg.Error as exc:
                log.warning("final analytics cycle failed: %s", exc)
        self._close()
        log.info("analytics loop stopped")

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.run_once()
            except psycopg.Error as exc:
                self.errors += 1
                self._close()
                log.warning("analytics cycle failed, retrying next cycle: %s", exc)
            except Exception:
                self.errors += 1
                self._close()
                log.exception("analytics cycle failed")
            elapsed = time.monotonic() - started
            self._stop.wait(max(0.0, self.settings.interval_s - elapsed))

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.dsn, autocommit=False)
        return self._conn

    # -- one cycle ------------------------------------------------------------------------

    def run_once(self, until: datetime | None = None) -> CycleStats:
        """One cycle; ``until`` caps the arrival time considered (default: now)."""
        started = time.monotonic()
        conn = self._connection()
        s = self.settings
        with conn.transaction():
            got = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (_LOCK_KEY,)).fetchone()
            if not got or not got[0]:
                return CycleStats(0, 0, 0, 0, 0, None, 0.0, skipped=True)
            row = conn.execute(
                "SELECT watermark FROM analytics_state WHERE name = %s FOR UPDATE", (STATE_NAME,)
            ).fetchone()
            now_row = conn.execute("SELECT now()").fetchone()
            assert now_row is not None
            now: datetime = now_row[0]
            end = min(until, now) if until else now
            if row is None:
                since = now - timedelta(seconds=s.initial_lookback_s)
            else:
                since = row[0] - timedelta(seconds=s.overlap_s)
            upto = end
            aggregate = segment_speeds_is_aggregate(conn)
            vans, fixes, passages, buckets, changed = self._recompute(conn, since, upto)
            if not aggregate:
                refresh_segment_speeds(conn, changed)  # commits with the traversals
            self._area_dirty.update(buckets)
            if self._area_dirty and (
                time.monotonic() - self._area_refreshed >= s.area_refresh_s or self._stop.is_set()
            ):
                refresh_area_speeds(conn, self._area_dirty, s.h3_resolution)
                self._area_dirty = set()
                self._area_refreshed = time.monotonic()
            conditions = evaluate_alerts(conn, self.lines, s, self.targets)
            opened, resolved = reconcile_alerts(conn, conditions)
            incidents = reconcile_incidents(conn, s.incident_clear_s)
            watermark = max(upto, row[0]) if row is not None else upto
            conn.execute(
                """
                INSERT INTO analytics_state (name, watermark) VALUES (%s, %s)
                ON CONFLICT (name) DO UPDATE SET watermark = EXCLUDED.watermark,
                                                 updated_at = now()
                """,
                (STATE_NAME, watermark),
            )
        if aggregate:
            refresh_segment_speeds(conn, changed)  # not inside a transaction block
        stats = CycleStats(
            vans,
            fixes,
            passages,
            opened,
            resolved,
            watermark,
            time.monotonic() - started,
            incidents_opened=incidents.opened,
            incidents_resolved=incidents.resolved,
        )
        self.last = stats
        self.cycles += 1
        if vans:
            log.debug("analytics cycle", extra=stats.__dict__)
        return stats

    def _recompute(
        self, conn: psycopg.Connection, since: datetime, upto: datetime
    ) -> tuple[int, int, int, list[datetime], list[tuple[str, datetime, datetime]]]:
        """Passages and traversals of the vans with rows that arrived in (since, upto];
        returns (vans, fixes, passages, 5-minute buckets of the new fixes, the
        (route, lo, hi) ranges whose segment rollup changed)."""
        s = self.settings
        margin = timedelta(seconds=s.max_gap_s)
        rows = conn.execute(
            """
            SELECT vehicle_id, min(ts), max(ts),
                   array_agg(DISTINCT date_bin(interval '5 minutes', ts,
                                               timestamptz '2000-01-01 00:00:00+00'))
            FROM positions
            WHERE received_at > %(since)s AND received_at <= %(upto)s
              AND ts >= %(ts_lo)s AND ts <= %(ts_hi)s
            GROUP BY vehicle_id
            """,
            {"since": since, "upto": upto, **self._ts_bounds(since, upto)},
        ).fetchall()
        if not rows:
            return 0, 0, 0, [], []
        windows = [Window(vid, lo - margin, hi + margin) for vid, lo, hi, _ in rows]
        buckets = sorted({b for *_, bs in rows for b in bs})
        result = recompute_windows(conn, self.lines, windows, s.max_traversal_s)
        reach = timedelta(seconds=s.max_traversal_s)
        changed = [(sp.route, sp.lo - reach, sp.hi + reach) for sp in result.spans or []]
        return len(windows), result.fixes, result.passages, buckets, changed

    def _ts_bounds(self, since: datetime, upto: datetime) -> dict[str, datetime]:
        """Fix times that rows received in (since, upto] can have (ingest's horizon)."""
        h = self.horizon
        return {
            "ts_lo": since - timedelta(milliseconds=h.max_age_ms) - HORIZON_SLACK,
            "ts_hi": upto + timedelta(milliseconds=h.max_future_ms) + HORIZON_SLACK,
        }
