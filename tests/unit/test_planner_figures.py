"""analytics.planner: headway points and Marey lines, worked by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from analytics.planner import headway_points, marey_lines
from fleet.routes import load_routes

T0 = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)
S0 = T0.timestamp()


def test_headway_points_follow_the_report_rule() -> None:
    # checkpoint 5, direction 0: passages at -100 (before the window), 0, 60, 660, 1260 s;
    # direction 1: 10, 20. Target 300 s: bunched h ≤ 150, gapped h ≥ 450.
    rows = [(0, 5, "B-005", f"v{k}", S0 + off) for k, off in enumerate((-100, 0, 60, 660, 1260))]
    rows += [(1, 5, "B-005", "w0", S0 + 10), (1, 5, "B-005", "w1", S0 + 20)]
    streams, points = headway_points(rows, T0, T0 + timedelta(hours=1), 300.0)
    assert [(s["direction"], s["count"], s["reference_s"]) for s in streams] == [
        (0, 4, 300.0),
        (1, 1, 300.0),
    ]
    d0 = [p for p in points if p["direction"] == 0]
    assert [p["headway_s"] for p in d0] == [100.0, 60.0, 600.0, 600.0]
    assert [p["bunched"] for p in d0] == [True, True, False, False]
    assert [p["gapped"] for p in d0] == [False, False, True, True]
    assert (d0[0]["vehicle_id"], d0[0]["previous_vehicle_id"]) == ("v1", "v0")
    assert [p["ts"] for p in points] == sorted(p["ts"] for p in points)
    assert points[0]["ts"] == "2026-11-02T00:00:00.000+00:00"


def test_headway_points_without_target_use_the_window_median() -> None:
    rows = [(0, 2, "B-002", f"v{k}", S0 + off) for k, off in enumerate((0, 60, 600, 1200))]
    streams, points = headway_points(rows, T0, T0 + timedelta(hours=1), None)
    assert streams[0]["reference_s"] == 540.0  # median of 60, 540, 600
    assert [p["bunched"] for p in points] == [True, False, False]
    assert headway_points([], T0, T0 + timedelta(hours=1), None) == ([], [])


def test_marey_lines_break_per_van_and_pause() -> None:
    route = load_routes()["B"]
    cp = {c.seq: c.dist_m for c in route.checkpoints}
    rows = [
        ("b", S0 + 0, 0, 0),
        ("a", S0 + 5, 0, 1),
        ("b", S0 + 60, 0, 1),
        ("a", S0 + 70, 0, 2),
        ("a", S0 + 4000, 1, 2),  # after a pause longer than max_gap_s: a new trip
        ("a", S0 + 4060, 1, 1),
        ("a", S0 + 4100, 0, 999),  # a checkpoint the route does not have: dropped
        ("b", S0 + 500, 0, 0),  # outbound again (the return is filtered out): a new trip
        ("b", S0 + 560, 0, 1),
        ("b", S0 + 620, 1, 1),  # turned round: a new trip
    ]
    lines = marey_lines(rows, route, max_gap_s=1800.0)
    assert lines.vehicles == ["a", "b"]
    assert lines.van.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1]
    assert lines.trip.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4]
    assert lines.dist_m.tolist() == [cp[1], cp[2], cp[2], cp[1], cp[0], cp[1], cp[0], cp[1], cp[1]]
    cols = lines.columns()
    assert cols["t"][0] == int((S0 + 5) * 1000)
    assert lines.rows()[2]["direction"] == 1 and lines.rows()[8]["trip"] == 4
    assert len(marey_lines([], route, 1800.0)) == 0
