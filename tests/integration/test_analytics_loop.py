"""The analytics loop: idempotent recompute, late batches, rollups, alerts."""

from __future__ import annotations

import re
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pytest

from analytics.loop import AnalyticsLoop
from analytics.settings import AnalyticsSettings
from fleet.contract import Fix
from fleet.routes import load_routes
from fleet.settings import SettingsError
from fleet.storage.schema import MIGRATIONS, TimescalePolicy
from tests.fixtures.analytics import PAST_DAY_HORIZON, insert_fixes, simulate

ROUTES = load_routes()


def _passages(conn: psycopg.Connection) -> list[tuple[object, ...]]:
    return conn.execute(
        "SELECT vehicle_id, route, direction, checkpoint_seq, ts FROM passages ORDER BY 1, 5, 4"
    ).fetchall()


@pytest.fixture(scope="module")
def sim_run():  # type: ignore[no-untyped-def]
    return simulate({c: ROUTES[c] for c in ("A", "C")}, vans=4, minutes=40, seed=11)


def test_recompute_is_idempotent_and_late_batches_converge(db_dsn: str, sim_run) -> None:  # type: ignore[no-untyped-def]
    routes = {c: ROUTES[c] for c in ("A", "C")}
    fixes = [f for chunk in sim_run.chunks for f in chunk]
    # Hold back 8 minutes of one van's fixes and deliver them at the very end.
    van = fixes[0][0]
    ts = sorted(f.ts for v, f in fixes if v == van)
    lo, hi = ts[len(ts) // 3], ts[len(ts) // 3] + 8 * 60_000
    held = [(v, f) for v, f in fixes if v == van and lo <= f.ts < hi]
    first = [(v, f) for v, f in fixes if not (v == van and lo <= f.ts < hi)]
    loop = AnalyticsLoop(db_dsn, routes, AnalyticsSettings(overlap_s=2), PAST_DAY_HORIZON)
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        insert_fixes(conn, first)
        loop.run_once()
        before = _passages(conn)
        held_window = [
            p for p in before if p[0] == van and lo / 1000 <= p[4].timestamp() < hi / 1000
        ]
        assert held_window == [], "a gap longer than max_gap_s yields no passage"
        insert_fixes(conn, held)  # the late store-and-forward batch
        loop.run_once()
        after_late = _passages(conn)
        # Recompute everything from scratch: same rows.
        conn.execute("DELETE FROM analytics_state")
        conn.execute("DELETE FROM passages")
        conn.execute("DELETE FROM segment_traversals")
        loop.settings = AnalyticsSettings(initial_lookback_s=24 * 3600)
        loop.run_once()
        fresh = _passages(conn)
        assert len(after_late) > len(before)
        assert after_late == fresh
        # And again: a cycle over already-processed data changes nothing.
        conn.execute("DELETE FROM analytics_state")
        loop.run_once()
        assert _passages(conn) == fresh
        dup = conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM segment_traversals GROUP BY vehicle_id, route,"
            " direction, from_seq, ts HAVING count(*) > 1) d"
        ).fetchone()
        assert dup == (0,)


def test_rollups_segment_and_area_speeds(db_dsn: str, sim_run) -> None:  # type: ignore[no-untyped-def]
    routes = {c: ROUTES[c] for c in ("A", "C")}
    loop = AnalyticsLoop(
        db_dsn, routes, AnalyticsSettings(overlap_s=2, area_refresh_s=600), PAST_DAY_HORIZON
    )
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        for chunk in sim_run.chunks:
            insert_fixes(conn, chunk)
            loop.run_once()
        # Area rollups are throttled: refreshed on the first cycle, then deferred...
        assert loop._area_dirty
        deferred = conn.execute("SELECT count(*) FROM area_speeds").fetchone()[0]
        loop.stop()  # ... and flushed when the loop stops.
        assert not loop._area_dirty
        assert conn.execute("SELECT count(*) FROM area_speeds").fetchone()[0] > deferred
        n_trav, med = conn.execute(
            "SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY speed_mps)"
            " FROM segment_traversals"
        ).fetchone()
        assert n_trav > 50
        assert 2.0 < med < 15.0  # the model drives 9 m/s at most off-peak, less with stops
        # The rollup equals a recomputation from the traversals.
        mismatch = conn.execute(
            """
            SELECT count(*) FROM segment_speeds s
            JOIN LATERAL (
                SELECT count(*) AS n FROM segment_traversals t
                WHERE t.route = s.route AND t.direction = s.direction
                  AND t.from_seq = s.from_seq AND t.ts >= s.bucket
                  AND t.ts < s.bucket + interval '5 minutes') x ON true
            WHERE x.n <> s.samples
            """
        ).fetchone()
        assert mismatch == (0,)
        total = conn.execute("SELECT sum(samples) FROM segment_speeds").fetchone()
        assert total == (n_trav,)
        cells, samples, top = conn.execute(
            "SELECT count(DISTINCT cell), sum(samples), max(median_speed_mps) FROM area_speeds"
        ).fetchone()
        n_fixes = conn.execute("SELECT count(*) FROM positions").fetchone()[0]
        assert cells > 20
        assert samples >= 0.95 * n_fixes  # every fix with a speed lands in a cell
        assert top < 20


def _put_van(
    conn: psycopg.Connection, vid: str, route: str, points: list[tuple[datetime, float, float]]
) -> None:
    fixes = [
        (vid, Fix(ts=int(t.timestamp() * 1000), lat=la, lon=lo, speed=0.0, route=route))
        for t, la, lo in points
    ]
    insert_fixes(conn, fixes)


def test_alerts_open_and_resolve(db_dsn: str) -> None:
    route = ROUTES["B"]
    now = datetime.now(UTC)
    # incidents end as soon as their condition clears (the hold-down against flapping has
    # its own test in test_incidents_folding.py)
    settings = AnalyticsSettings(stopped_minutes=3, incident_clear_s=0)
    loop = AnalyticsLoop(db_dsn, {"B": route}, settings)
    mid_lat, mid_lon = route.position_at(route.length_m / 2)
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        # Offline: last fix 20 minutes ago, and that is when it arrived (the write path
        # stamps arrival with the commit's now(): the row is aged afterwards).
        _put_van(conn, "pp-off", "B", [(now - timedelta(minutes=20), mid_lat, mid_lon)])
        conn.execute(
            "UPDATE positions SET received_at = now() - interval '20 minutes'"
            " WHERE vehicle_id = 'pp-off'"
        )
        # Not offline: uploading a backlog of fixes from 20 minutes ago right now.
        _put_van(conn, "pp-backlog", "B", [(now - timedelta(minutes=20), mid_lat, mid_lon)])
        # Stopped mid-route for 4 minutes (fix every 10 s, a few metres of jitter).
        rng = np.random.default_rng(3)
        pts = [
            (
                now - timedelta(seconds=s),
                mid_lat + rng.normal(0, 2e-5),
                mid_lon + rng.normal(0, 2e-5),
            )
            for s in range(240, -1, -10)
        ]
        _put_van(conn, "pp-stop", "B", pts)
        # Bunching: two vans driving direction 0 twenty seconds apart.
        for vid, lag_s in (("pp-lead", 0), ("pp-follow", 20)):
            t0 = now - timedelta(seconds=600)
            pts = []
            for k in range(0, 600, 5):
                d = 100 + 8.0 * max(0, k - lag_s)
                la, lo = route.position_at(d)
                pts.append((t0 + timedelta(seconds=k), float(la), float(lo)))
            _put_van(conn, vid, "B", pts)
        loop.run_once()
        open_alerts = {
            (k, v, o)
            for k, v, o in conn.execute(
                "SELECT kind, vehicle_id, other_vehicle_id FROM alerts WHERE resolved_at IS NULL"
            )
        }
        assert ("offline", "pp-off", None) in open_alerts
        assert not any(v == "pp-backlog" for _, v, _ in open_alerts)
        assert ("stopped", "pp-stop", None) in open_alerts
        assert ("bunching", "pp-follow", "pp-lead") in open_alerts
        assert not any(k == "stopped" and v in ("pp-lead", "pp-follow") for k, v, _ in open_alerts)
        # ... each folded into an incident, announced as an 'opened' event
        opened = {
            (k, tuple(vans))
            for k, vans in conn.execute(
                "SELECT i.kind, i.active_vans FROM incident_events e"
                " JOIN incidents i ON i.id = e.incident_id WHERE e.event = 'opened'"
            )
        }
        assert ("offline", ("pp-off",)) in opened
        assert ("stopped", ("pp-stop",)) in opened
        assert ("bunching", ("pp-follow", "pp-lead")) in opened
        # A second cycle does not duplicate anything.
        loop.run_once()
        assert conn.execute("SELECT count(*) FROM alerts").fetchone() == (len(open_alerts),)
        # The offline van reports again and the stopped van drives off: both resolve.
        _put_van(conn, "pp-off", "B", [(datetime.now(UTC), mid_lat, mid_lon)])
        far_lat, far_lon = route.position_at(route.length_m / 2 + 600)
        _put_van(conn, "pp-stop", "B", [(datetime.now(UTC), float(far_lat), float(far_lon))])
        loop.run_once()
        resolved = {
            (k, v)
            for k, v in conn.execute(
                "SELECT kind, vehicle_id FROM alerts WHERE resolved_at IS NOT NULL"
            )
        }
        assert ("offline", "pp-off") in resolved
        assert ("stopped", "pp-stop") in resolved
        auto = {
            (k, v)
            for k, v in conn.execute(
                "SELECT kind, vehicle_id FROM incidents"
                " WHERE resolved_by = 'system' AND ended_at IS NOT NULL"
            )
        }
        assert {("offline", "pp-off"), ("stopped", "pp-stop")} <= auto


def test_start_stop_runs_cycles_in_a_thread(db_dsn: str) -> None:
    loop = AnalyticsLoop(db_dsn, {"B": ROUTES["B"]}, AnalyticsSettings(interval_s=0.05))
    loop.start()
    try:
        deadline = datetime.now(UTC) + timedelta(seconds=10)
        while loop.cycles < 3 and datetime.now(UTC) < deadline:
            loop._stop.wait(0.02)
        assert loop.cycles >= 3
        assert loop.errors == 0
    finally:
        loop.stop()
    with psycopg.connect(db_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM analytics_state").fetchone() == (1,)


def test_from_env_reads_settings_and_routes(db_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_ANALYTICS_INTERVAL_S", "2.5")
    loop = AnalyticsLoop.from_env(db_dsn)
    assert loop.settings.interval_s == 2.5
    assert set(loop.lines) == set(ROUTES)
    monkeypatch.setenv("FLEET_ANALYTICS_OFFPEAK_HOURS", "25")
    with pytest.raises(SettingsError, match="FLEET_ANALYTICS_OFFPEAK_HOURS"):
        AnalyticsLoop.from_env(db_dsn)


def test_timescale_rollup_has_the_plain_tables_columns(db_dsn: str) -> None:
    """TimescaleDB is not installed here: check at least that migration 2's TimescaleDB
    SQL formats and that its continuous aggregate exposes the plain table's columns."""
    m = next(m for m in MIGRATIONS if m.version == 2)
    sql = m.timescale_sql.format(**asdict(TimescalePolicy()))
    select = sql[sql.index("SELECT time_bucket") : sql.index("FROM segment_traversals")]
    names = set(re.findall(r"AS (\w+)", select)) | {"route", "direction", "from_seq", "to_seq"}
    with psycopg.connect(db_dsn) as conn:
        plain = {
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_name = 'segment_speeds'"
            )
        }
    assert names == plain
    assert "add_continuous_aggregate_policy('segment_speeds'" in sql


def test_scan_of_new_rows_is_bounded_by_the_ingest_horizon(
    db_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows that arrive now carry fix times within ingest's horizon: the loop reads only
    those (so a hypertable partitioned by ts excludes older chunks)."""
    monkeypatch.setenv("FLEET_MAX_AGE_S", "86400")
    loop = AnalyticsLoop.from_env(db_dsn)
    assert loop.horizon.max_age_ms == 86_400_000
    now = datetime.now(UTC)
    lat, lon = ROUTES["B"].position_at(1000.0)
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        _put_van(conn, "pp-recent", "B", [(now - timedelta(minutes=1), lat, lon)])
        # ingest with FLEET_MAX_AGE_S=86400 refuses this; beyond the horizon and its slack
        _put_van(conn, "pp-ancient", "B", [(now - timedelta(days=3), lat, lon)])
    stats = loop.run_once()
    assert stats.vans == 1 and stats.fixes == 1


def test_route_without_target_headway_is_judged_by_its_median(db_dsn: str) -> None:
    """Four vans a minute apart, a fifth five minutes behind the fourth, on a route with
    no target headway: the reference is the median of the last hour's headways (60 s),
    so the fifth is a gap (300 s ≥ 2 × 60 s) and the others are neither bunched nor gaps."""
    route = replace(ROUTES["B"], target_headway_s=None)
    loop = AnalyticsLoop(db_dsn, {"B": route}, AnalyticsSettings())
    now = datetime.now(UTC)
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        for k, lag_s in enumerate((0, 60, 120, 180, 480)):
            t0 = now - timedelta(seconds=900)
            pts = []
            for t in range(0, 900, 5):
                la, lo = route.position_at(100 + 6.0 * max(0, t - lag_s))
                pts.append((t0 + timedelta(seconds=t), float(la), float(lo)))
            _put_van(conn, f"pp-med-{k}", "B", pts)
        loop.run_once()
        open_alerts = {
            (kind, v, o)
            for kind, v, o in conn.execute(
                "SELECT kind, vehicle_id, other_vehicle_id FROM alerts"
                " WHERE resolved_at IS NULL AND kind IN ('bunching', 'gap')"
            )
        }
    assert open_alerts == {("gap", "pp-med-4", "pp-med-3")}
