"""Acceptance: `fleet sim --vehicles 300` through `fleet ingest` into PostgreSQL gives
stored positions on every route, with vans bunched together for minutes."""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import psycopg
import pytest

from broker.runner import MosquittoBroker
from fleet.geometry import LocalProjection, haversine_m
from fleet.routes import load_routes
from tests.fixtures.sim import SimProcess
from tests.fixtures.waiting import wait_for

WITA = dt.timezone(dt.timedelta(hours=8))
BUCKET_S = 10
CLOSE_M = 100.0
MIN_RUN_S = 300  # "several minutes"
TERMINAL_M = 300.0  # vans laying over at a terminal are queued, not bunched


def _morning_start(now: dt.datetime) -> dt.datetime:
    """The latest 07:00 WITA (morning peak) that is at least an hour ago."""
    start = now.astimezone(WITA).replace(hour=7, minute=0, second=0, microsecond=0)
    while start > now - dt.timedelta(hours=1):
        start -= dt.timedelta(days=1)
    return start


def _longest_close_runs(rows: list[tuple[str, str, dt.datetime, float, float]]) -> dict:
    """Per same-route pair of vans: the longest stretch (s) they stayed within CLOSE_M,
    on 10 s buckets (last fix per van and bucket), away from the terminals; one bucket
    apart is tolerated (a single bad GPS fix does not end a bunch)."""
    routes = load_routes()
    terminals = {c: [(r.lat[0], r.lon[0]), (r.lat[-1], r.lon[-1])] for c, r in routes.items()}
    proj = LocalProjection(-5.15, 119.44)
    snap: dict[tuple[str, int], dict[str, tuple[float, float]]] = defaultdict(dict)
    for vid, route, ts, lat, lon in rows:
        if any(haversine_m(lat, lon, tl, tn) < TERMINAL_M for tl, tn in terminals[route]):
            continue
        bucket = int(ts.timestamp()) // BUCKET_S
        snap[(route, bucket)][vid] = (lat, lon)
    close_in: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    for (route, bucket), vans in snap.items():
        ids = sorted(vans)
        x, y = proj.to_xy([vans[v][0] for v in ids], [vans[v][1] for v in ids])
        d = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :])
        for i, j in zip(*np.nonzero(np.triu(d < CLOSE_M, k=1)), strict=True):
            close_in[(route, ids[i], ids[j])].append(bucket)
    best = {}
    for pair, buckets in close_in.items():
        buckets.sort()
        run_start, longest = buckets[0], 0
        for prev, cur in zip(buckets, buckets[1:]):
            if cur - prev > 2:
                run_start = cur
            longest = max(longest, cur - run_start)
        best[pair] = longest * BUCKET_S
    return best


@pytest.mark.slow
def test_300_vans_stored_on_every_route_with_visible_bunching(
    broker: MosquittoBroker, ingest_worker, db_dsn: str, tmp_path: Path
) -> None:
    start = _morning_start(dt.datetime.now(dt.UTC))
    sim = SimProcess(
        [
            "--vehicles",
            "300",
            "--speedup",
            "10",
            "--duration",
            "8m",
            "--start",
            start.isoformat(),
            "--seed",
            "3",
            "--data-dir",
            str(broker.layout.root.parent),
            "--port",
            str(broker.port),
        ],
        tmp_path / "sim.log",
    )
    try:
        assert sim.wait(150) == 0, sim.log()
    finally:
        sim.stop()
    m = re.search(r"sim done: vehicles=300 .* fixes=(\d+) acked=(\d+)", sim.log())
    assert m, sim.log()
    published, acked = int(m.group(1)), int(m.group(2))
    assert acked > 300 * 480 // 5 * 0.9

    def stored() -> int:
        with psycopg.connect(db_dsn) as conn:
            return conn.execute("SELECT count(*) FROM positions").fetchone()[0]

    wait_for(lambda: stored() >= acked, 60, f"{acked} positions stored")
    with psycopg.connect(db_dsn) as conn:
        # every acknowledged fix is stored, once (a van switched off with a fix in flight
        # may have it stored without seeing the PUBACK)
        assert acked <= stored() <= published
        per_route = dict(
            conn.execute(
                "SELECT route, count(DISTINCT vehicle_id) FROM positions GROUP BY route"
            ).fetchall()
        )
        rows = conn.execute(
            "SELECT vehicle_id, route, ts, lat, lon FROM positions ORDER BY ts"
        ).fetchall()
    codes = list(load_routes())
    expected = {
        c: 300 // len(codes) + (1 if i < 300 % len(codes) else 0) for i, c in enumerate(codes)
    }
    assert per_route == expected
    best = _longest_close_runs(rows)
    bunched = {pair: s for pair, s in best.items() if s >= MIN_RUN_S}
    assert len(bunched) >= 3, sorted(best.values())[-10:]
    assert len({route for route, _, _ in bunched}) >= 2
