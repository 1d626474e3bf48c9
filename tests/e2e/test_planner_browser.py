"""Acceptance: the planner workspace in headless Chromium against a real API, PostgreSQL and
Mosquitto, for a simulated stretch of a route-day stored through the product's write
paths (fixes as ingest stores them; passages, traversals and the rollup by the analytics
functions).  Each chart renders with data that matches the report API, a chart's CSV
downloads, and a viewer is told plainly that the planner needs another role (its data
calls are 403).  A screenshot is saved as ``artifacts/planner.png``.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from playwright.sync_api import Page, sync_playwright

from api.tokens import Role
from broker.runner import MosquittoBroker
from devtools.browser import launch_chromium
from fleet.routes import load_routes
from tests.fixtures.api import make_token, running_api
from tests.fixtures.planner import seed_service

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
ROUTE = load_routes()["B"]
DAY = "2026-11-02"
CHECKPOINT = 6
END_MS = int(datetime(2026, 11, 2, 3, 0, tzinfo=UTC).timestamp() * 1000)  # 11:00 WITA
WINDOW = {
    "route": "B",
    "direction": 0,
    "from": f"{DAY}T00:00:00+08:00",
    "to": "2026-11-03T00:00:00+08:00",
}


def _state(page: Page, expr: str) -> Any:
    return page.evaluate(f"(() => {{ const s = window.plannerState; return {expr}; }})()")


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_planner_page_charts_match_the_reports_and_a_viewer_is_refused(
    db_dsn: str, broker: MosquittoBroker, tmp_path: Path
) -> None:
    # 2.5 h of 12 vans, into the off-peak hour from 10:00 (free-flow speeds for the heat map)
    seed_service(db_dsn, ROUTE, vans=12, minutes=150, end_ms=END_MS)
    planner = make_token(db_dsn, Role.PLANNER, "planner")
    viewer = make_token(db_dsn, Role.VIEWER, "viewer")
    with running_api(db_dsn, broker) as api, sync_playwright() as p:
        auth = {"Authorization": f"Bearer {planner}"}

        def report(path: str, **params: Any) -> Any:
            r = httpx.get(f"{api.base}/api/v1{path}", params=params, headers=auth, timeout=30)
            assert r.status_code == 200, r.text
            return r.json()

        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(
            f"{api.base}/planner/#token={planner}&route=B&direction=0"
            f"&from={DAY}&to={DAY}&checkpoint={CHECKPOINT}"
        )
        page.wait_for_function(
            "window.plannerState && plannerState.status === 'ready'", timeout=60_000
        )
        assert "token=" not in page.url and planner not in page.url
        assert errors == []
        assert _state(page, "s.progress[0] === s.progress[1] && s.progress[1] > 0")

        # (a) headways: as many points as the report counts headways at that checkpoint
        los = report("/reports/headways", **WINDOW)
        row = next(r for r in los if r["checkpoint_seq"] == CHECKPOINT)
        points = _state(page, "s.data.points")
        assert len(points) == row["count"] > 5
        assert round(sum(p["bunched"] for p in points) / len(points), 4) == row["bunched_share"]
        assert page.locator("#chart-headways canvas").count() == 1

        # (b) the time-space diagram: every passage of the day in that direction
        with psycopg.connect(db_dsn) as conn:
            stored = conn.execute(
                "SELECT count(*), count(DISTINCT vehicle_id) FROM passages"
                " WHERE route = 'B' AND direction = 0"
            ).fetchone()
        assert stored is not None
        assert _state(page, "s.marey") == {"passages": stored[0], "vans": stored[1]}
        assert page.locator("#chart-marey canvas").count() == 1

        # (c) heat maps: the hourly report's cells and the congestion report's buckets
        hourly = report("/reports/headways", by="hour", **WINDOW)
        cells = [r for r in hourly if r["checkpoint_id"] != "ALL"]
        assert _state(page, "s.heat") == {"metric": "cv", "cells": len(cells)}
        congestion = report("/reports/congestion", **WINDOW)
        travel = _state(page, "s.travel")
        assert travel["cells"] == len(congestion) > 0 and travel["withFreeflow"] > 0
        page.select_option("#heat-metric", "bunched_share")
        page.wait_for_function("plannerState.heat.metric === 'bunched_share'")

        # (d) the LOS table: the report's figures per checkpoint
        cell = page.locator(f"#los tr[data-checkpoint='B-{CHECKPOINT:03d}'] td")
        assert cell.nth(1).inner_text() == str(row["count"])
        assert cell.nth(5).inner_text() == f"{row['cv']:.3f}"
        assert cell.nth(10).inner_text() == row["los"]
        assert page.locator("#los tr.all").count() == 1

        # (e) downloads: the headways' CSV, the diagram's PNG
        with page.expect_download() as dl:
            page.click("[data-csv=headways]")
        path = tmp_path / "headways.csv"
        dl.value.save_as(path)
        got = list(csv.DictReader(io.StringIO(path.read_text())))
        assert len(got) == row["count"]
        assert {r["checkpoint_id"] for r in got} == {f"B-{CHECKPOINT:03d}"}
        with page.expect_download() as dl:
            page.click("[data-png=marey]")
        png = tmp_path / "marey.png"
        dl.value.save_as(png)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        ARTIFACTS.mkdir(exist_ok=True)
        page.select_option("#heat-metric", "cv")
        page.screenshot(path=str(ARTIFACTS / "planner.png"), full_page=True)

        # a viewer: told plainly, and its data calls are refused
        vpage = browser.new_page()
        vpage.goto(f"{api.base}/planner/#token={viewer}")
        vpage.wait_for_selector("#no-role", state="visible", timeout=30_000)
        assert "do not have the planner role" in vpage.inner_text("#no-role")
        assert "viewer" in vpage.inner_text("#no-role")
        fetch = "p => fetch(p, {credentials: 'same-origin'}).then(r => r.status)"
        for path in ("api/v1/planner/marey?route=B", "api/v1/reports/headways?route=B"):
            assert vpage.evaluate(fetch, path) == 403
        assert vpage.locator("#controls").is_hidden()
        browser.close()
