"""GTFS: the static export's structure, and the realtime feed against the vans' positions."""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
from google.transit import gtfs_realtime_pb2

from analytics.gtfs_static import (
    GTFS_COLUMNS,
    Observed,
    export_gtfs,
    fetch_observed,
)
from analytics.loop import AnalyticsLoop
from analytics.settings import AnalyticsSettings
from broker.runner import MosquittoBroker
from fleet.contract import Fix
from fleet.routes import load_routes
from tests.fixtures.analytics import insert_fixes, insert_traversals, simulate
from tests.fixtures.api import make_token, running_api

ROUTES = load_routes()

# Required files and columns of the GTFS Schedule reference (frequency-based feed).
REQUIRED = {
    "agency.txt": {"agency_name", "agency_url", "agency_timezone"},
    "stops.txt": {"stop_id", "stop_lat", "stop_lon"},
    "routes.txt": {"route_id", "route_type"},
    "trips.txt": {"route_id", "service_id", "trip_id"},
    "stop_times.txt": {"trip_id", "stop_id", "stop_sequence", "arrival_time", "departure_time"},
    "calendar.txt": {
        "service_id",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
        "start_date",
        "end_date",
    },
    "frequencies.txt": {"trip_id", "start_time", "end_time", "headway_secs"},
    "shapes.txt": {"shape_id", "shape_pt_lat", "shape_pt_lon", "shape_pt_sequence"},
}


def _read(d: Path, name: str) -> list[dict[str, str]]:
    with (d / name).open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _secs(hms: str) -> int:
    h, m, s = (int(x) for x in hms.split(":"))
    return h * 3600 + m * 60 + s


def check_feed(d: Path) -> None:
    """Structural check: files, columns, referential integrity, time sanity."""
    for name, cols in REQUIRED.items():
        assert (d / name).exists(), name
        with (d / name).open(newline="", encoding="utf-8") as f:
            header = set(next(csv.reader(f)))
        assert cols <= header, (name, cols - header)
    stops = {r["stop_id"] for r in _read(d, "stops.txt")}
    routes = {r["route_id"] for r in _read(d, "routes.txt")}
    services = {r["service_id"] for r in _read(d, "calendar.txt")}
    shapes = {r["shape_id"] for r in _read(d, "shapes.txt")}
    trips = _read(d, "trips.txt")
    trip_ids = {t["trip_id"] for t in trips}
    assert len(trip_ids) == len(trips)
    for t in trips:
        assert t["route_id"] in routes and t["service_id"] in services
        assert t["shape_id"] in shapes and t["direction_id"] in ("0", "1")
    by_trip: dict[str, list[dict[str, str]]] = {}
    for st in _read(d, "stop_times.txt"):
        assert st["trip_id"] in trip_ids and st["stop_id"] in stops
        by_trip.setdefault(st["trip_id"], []).append(st)
    assert set(by_trip) == trip_ids
    for rows in by_trip.values():
        seqs = [int(r["stop_sequence"]) for r in rows]
        times = [_secs(r["arrival_time"]) for r in rows]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert times == sorted(times) and times[0] == 0
        dists = [float(r["shape_dist_traveled"]) for r in rows]
        assert dists == sorted(dists)
    freqs = _read(d, "frequencies.txt")
    assert {f["trip_id"] for f in freqs} == trip_ids
    for f in freqs:
        assert f["exact_times"] == "0"
        assert _secs(f["end_time"]) > _secs(f["start_time"]) and int(f["headway_secs"]) > 0
    for r in _read(d, "routes.txt"):
        assert r["route_type"] == "3" and len(r["route_color"]) == 6
    for s in _read(d, "stops.txt"):
        assert -90 <= float(s["stop_lat"]) <= 90 and -180 <= float(s["stop_lon"]) <= 180


def test_static_export_structure_and_observed_frequencies(db_dsn: str, tmp_path: Path) -> None:
    routes = {c: ROUTES[c] for c in ("A", "L")}
    run = simulate(routes, vans=5, minutes=45, seed=5, end_ms=int(time.time() * 1000))
    loop = AnalyticsLoop(db_dsn, routes, AnalyticsSettings())
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        for chunk in run.chunks:
            insert_fixes(conn, chunk)
        loop.run_once()
        observed = fetch_observed(
            conn, datetime.now(UTC) + timedelta(minutes=1), 1, "Asia/Makassar"
        )
    assert observed.headway_s and observed.travel_s
    export_gtfs(tmp_path, routes, observed)
    check_feed(tmp_path)
    freqs = _read(tmp_path, "frequencies.txt")
    observed_trips = {f["trip_id"] for f in freqs if int(f["headway_secs"]) != 420}
    assert observed_trips, "frequencies come from observed headways"
    # Relative stop times follow the observed median travel times.
    st = [r for r in _read(tmp_path, "stop_times.txt") if r["trip_id"] == "A-0"]
    key = ("A", 0, 0)
    if key in observed.travel_s:
        assert _secs(st[1]["arrival_time"]) == round(observed.travel_s[key])


def test_static_export_without_observations_uses_targets(tmp_path: Path) -> None:
    export_gtfs(tmp_path, ROUTES, Observed({}, {}))
    check_feed(tmp_path)
    freqs = {f["trip_id"]: f for f in _read(tmp_path, "frequencies.txt")}
    assert freqs["A-0"]["headway_secs"] == str(round(ROUTES["A"].target_headway_s or 600))
    assert set(GTFS_COLUMNS) == {p.name for p in tmp_path.iterdir()}


def test_static_export_cli(db_dsn: str, tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "fleet.cli",
            "gtfs",
            "export",
            str(tmp_path / "feed"),
            "--dsn",
            db_dsn,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "wrote 9 files" in out.stdout
    check_feed(tmp_path / "feed")


def test_realtime_feed_matches_latest_positions(db_dsn: str, broker: MosquittoBroker) -> None:
    route = ROUTES["B"]
    now = datetime.now(UTC)
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        # Free flow: fast off-peak traversals of segment 3→4 two days ago (10:00 WITA).
        length = route.checkpoints[4].dist_m - route.checkpoints[3].dist_m
        ff_day = (now - timedelta(days=2)).replace(hour=2, minute=0)
        free = [
            (f"old-{k}", ff_day + timedelta(minutes=k), "B", 0, 3, 4, length / 10.0, length, 10.0)
            for k in range(5)
        ]
        # Now: two vans take three times as long on it (congestion level 2 → SEVERE).
        slow = [
            (
                f"now-{k}",
                now - timedelta(minutes=2),
                "B",
                0,
                3,
                4,
                length / 10.0 * 3,
                length,
                10 / 3,
            )
            for k in range(2)
        ]
        insert_traversals(conn, free + slow)  # and their rollup, as the analytics loop does
        # A van on that segment in direction 0, one elsewhere without passages.
        d = (route.checkpoints[3].dist_m + route.checkpoints[4].dist_m) / 2
        la, lo = route.position_at(d)
        insert_fixes(
            conn,
            [
                (
                    "pp-B-001",
                    Fix(
                        ts=int(now.timestamp() * 1000) - 1000,
                        lat=float(la),
                        lon=float(lo),
                        speed=2.5,
                        heading=90.0,
                        route="B",
                    ),
                ),
                (
                    "pp-B-002",
                    Fix(
                        ts=int(now.timestamp() * 1000) - 3000,
                        lat=-5.14,
                        lon=119.43,
                        speed=0.0,
                        heading=10.0,
                        route="B",
                    ),
                ),
            ],
        )
        conn.execute(
            "INSERT INTO passages VALUES ('pp-B-001', %s, 'B', 0, 3, 'B-003')",
            (now - timedelta(seconds=30),),
        )
        latest = {
            r[0]: r
            for r in conn.execute(
                "SELECT vehicle_id, route, lat, lon, heading, speed,"
                " floor(extract(epoch FROM ts))::bigint FROM latest_positions"
            )
        }
    token = make_token(db_dsn)
    with running_api(db_dsn, broker) as api:
        r = httpx.get(
            f"{api.base}/gtfs-rt/vehicle-positions.pb", headers={"Authorization": f"Bearer {token}"}
        )
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/x-protobuf"
        layer = httpx.get(
            f"{api.base}/api/v1/reports/congestion/live",
            headers={"Authorization": f"Bearer {token}"},
        ).json()
    feed = gtfs_realtime_pb2.FeedMessage()
    feed.ParseFromString(r.content)
    assert feed.header.gtfs_realtime_version == "2.0"
    assert abs(feed.header.timestamp - now.timestamp()) < 60
    got = {e.id: e.vehicle for e in feed.entity}
    assert set(got) == set(latest)
    for vid, (_, rt, lat, lon, heading, speed, ts) in latest.items():
        vp = got[vid]
        assert vp.vehicle.id == vid and vp.trip.route_id == rt
        assert vp.position.latitude == pytest.approx(lat, abs=1e-6)
        assert vp.position.longitude == pytest.approx(lon, abs=1e-6)
        assert vp.position.bearing == pytest.approx(heading)
        assert vp.position.speed == pytest.approx(speed)
        assert vp.timestamp == ts
    moving = got["pp-B-001"]
    assert moving.trip.direction_id == 0 and moving.trip.trip_id == "B-0"
    assert moving.congestion_level == gtfs_realtime_pb2.VehiclePosition.SEVERE_CONGESTION
    # The live congestion map layer shows the same segment.
    (seg,) = layer["features"]
    assert seg["properties"]["from_seq"] == 3 and seg["properties"]["to_seq"] == 4
    assert seg["properties"]["congestion_level"] == pytest.approx(2.0)
    assert seg["properties"]["gtfs_congestion"] == 4
    first, last = seg["geometry"]["coordinates"][0], seg["geometry"]["coordinates"][-1]
    assert first == pytest.approx([route.checkpoints[3].lon, route.checkpoints[3].lat], abs=1e-5)
    assert last == pytest.approx([route.checkpoints[4].lon, route.checkpoints[4].lat], abs=1e-5)
    assert got["pp-B-002"].congestion_level == (
        gtfs_realtime_pb2.VehiclePosition.UNKNOWN_CONGESTION_LEVEL
    )
