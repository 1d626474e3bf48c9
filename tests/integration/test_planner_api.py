"""``/api/v1/planner/*`` against a real PostgreSQL and Mosquitto: figures that match the
report API for a simulated stretch of service, the bounds, the validation and the role."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from api.tokens import Role
from broker.runner import MosquittoBroker
from fleet.routes import load_routes
from tests.fixtures.api import RunningApi, make_token, running_api
from tests.fixtures.planner import seed_service

ROUTE = load_routes()["B"]
DAY = {"from": "2026-11-02T00:00:00+08:00", "to": "2026-11-03T00:00:00+08:00"}
CHECKPOINT = 6


@pytest.fixture
def api(db_dsn: str, broker: MosquittoBroker) -> Iterator[RunningApi]:
    with running_api(db_dsn, broker) as running:
        yield running


def _get(api: RunningApi, path: str, token: str, **params: Any) -> httpx.Response:
    return httpx.get(
        f"{api.base}/api/v1{path}",
        params=params,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


@pytest.mark.timeout(180)
def test_planner_figures_match_the_reports(db_dsn: str, api: RunningApi) -> None:
    seed_service(db_dsn, ROUTE, vans=10, minutes=120)
    token = make_token(db_dsn, Role.PLANNER, "planner")
    q = {"route": "B", **DAY}

    # headway points at one checkpoint: count and shares as the headway report has them
    r = _get(api, "/planner/headway-points", token, checkpoint=CHECKPOINT, **q)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["target_s"] == ROUTE.target_headway_s and not body["truncated"]
    report = _get(api, "/reports/headways", token, checkpoint=CHECKPOINT, **q).json()
    by_dir = {row["direction"]: row for row in report if row["checkpoint_id"] != "ALL"}
    assert {s["direction"] for s in body["streams"]} == set(by_dir)
    for d, row in by_dir.items():
        pts = [p for p in body["points"] if p["direction"] == d]
        assert len(pts) == row["count"] > 3
        # the report rounds its figures to 4 decimals (analytics.reports.rows.figure)
        assert round(sum(p["bunched"] for p in pts) / len(pts), 4) == row["bunched_share"]
        assert round(sum(p["gapped"] for p in pts) / len(pts), 4) == row["gapped_share"]
        mean = sum(p["headway_s"] for p in pts) / len(pts)
        assert mean == pytest.approx(row["mean_s"], abs=1e-3)

    # CSV of the same points
    r = _get(api, "/planner/headway-points", token, checkpoint=CHECKPOINT, format="csv", **q)
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == len(body["points"]) and rows[0]["checkpoint_id"] == f"B-{CHECKPOINT:03d}"

    # Marey: every stored passage of the day, at its checkpoint's distance
    r = _get(api, "/planner/marey", token, **q)
    assert r.status_code == 200, r.text
    m = r.json()
    with psycopg.connect(db_dsn) as conn:
        stored = conn.execute("SELECT count(*) FROM passages WHERE route = 'B'").fetchone()
    assert stored is not None and m["passages"] == stored[0] > 100
    assert len(m["t"]) == len(m["dist_m"]) == len(m["van"]) == m["passages"]
    dist = {c["seq"]: c["dist_m"] for c in m["checkpoints"]}
    assert all(dist[s] == x for s, x in zip(m["checkpoint_seq"], m["dist_m"], strict=True))
    assert len(m["vehicles"]) == 10 and max(m["trip"]) + 1 >= 10
    one_dir = _get(api, "/planner/marey", token, direction=1, **q).json()
    assert set(one_dir["direction"]) == {1} and 0 < one_dir["passages"] < m["passages"]
    r = _get(api, "/planner/marey", token, format="csv", **q)
    assert r.text.splitlines()[0] == "vehicle_id,trip,ts,direction,checkpoint_seq,dist_m"
    assert len(r.text.splitlines()) == m["passages"] + 1


@pytest.mark.timeout(120)
def test_planner_endpoints_are_bounded_validated_and_need_the_planner_role(
    db_dsn: str, api: RunningApi
) -> None:
    planner = make_token(db_dsn, Role.PLANNER, "planner")
    admin = make_token(db_dsn, Role.ADMIN, "admin")
    viewer = make_token(db_dsn, Role.VIEWER, "viewer")
    operator = make_token(db_dsn, Role.OPERATOR, "operator")
    for path, extra in (("/planner/marey", {}), ("/planner/headway-points", {"checkpoint": 1})):
        q = {"route": "B", **DAY, **extra}
        assert _get(api, path, planner, **q).status_code == 200
        assert _get(api, path, admin, **q).status_code == 200
        for token in (viewer, operator):
            r = _get(api, path, token, **q)
            assert r.status_code == 403 and "plan" in r.json()["detail"]
        assert httpx.get(f"{api.base}/api/v1{path}", params=q).status_code == 401
        empty = _get(api, path, planner, **q).json()
        assert empty.get("points", empty.get("t")) == []
        # validation: each a 4xx with a message, never a 500
        for bad, status, error in (
            ({"route": "B;drop"}, 400, "invalid route code"),
            ({"route": "ZZ"}, 404, "not found"),
            ({"from": "yesterday"}, 400, "bad report parameters"),
            ({"from": "0001-01-01"}, 400, "time outside the data horizon"),
            ({"to": "2026-11-01T00:00:00+08:00"}, 400, "bad report parameters"),
            ({"direction": 2}, 422, "invalid request"),
        ):
            r = _get(api, path, planner, **{**q, **bad})
            assert (r.status_code, r.json()["error"]) == (status, error), (path, bad, r.text)
        assert _get(api, path, planner, route="B", **extra).status_code == 200  # last 24 h
        r = httpx.get(
            f"{api.base}/api/v1{path}",
            params={k: v for k, v in q.items() if k != "route"},
            headers={"Authorization": f"Bearer {planner}"},
        )
        assert r.status_code == 422
    # the spans: a day for the diagram, 31 days for the points
    week = {"route": "B", "from": "2026-11-01T00:00:00Z", "to": "2026-11-08T00:00:00Z"}
    r = _get(api, "/planner/marey", planner, **week)
    assert (r.status_code, r.json()["error"]) == (400, "time range too long")
    assert _get(api, "/planner/headway-points", planner, checkpoint=1, **week).status_code == 200
    r = _get(api, "/planner/headway-points", planner, checkpoint="B-99999", **week)
    assert (r.status_code, r.json()["error"]) == (400, "invalid checkpoint")
    quarter = {**week, "to": "2027-01-31T00:00:00Z"}
    r = _get(api, "/planner/headway-points", planner, checkpoint=1, **quarter)
    assert r.status_code == 400
