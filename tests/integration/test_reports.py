"""Reports: hand-made passages through SQL, the CLI and the HTTP API (JSON and CSV)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest

from analytics.reports import PUBLISHED, REPORTS, ReportError, ReportParams, render, run_report
from api.tokens import Role
from broker.runner import MosquittoBroker
from fleet.routes import load_routes
from tests.fixtures.analytics import Traversal, insert_traversals
from tests.fixtures.api import make_token, running_api

ROUTE = load_routes()["B"]
T0 = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)  # 08:00 WITA
FROM, TO = "2026-11-02T00:00:00+00:00", "2026-11-02T06:00:00+00:00"


def _seed(conn: psycopg.Connection) -> None:
    """Checkpoint 3 (dir 0): vans at 0, 600, 1200 s; checkpoint 4: 0, 60, 660 s.
    Traversals 3→4 of two vans for the congestion and service reports."""
    rows = []
    for seq, offsets in ((3, (0, 600, 1200)), (4, (100, 160, 760))):
        for k, off in enumerate(offsets):
            rows.append((f"van-{k}", T0 + timedelta(seconds=off), "B", 0, seq, f"B-{seq:03d}"))
    with (
        conn.cursor() as cur,
        cur.copy(
            "COPY passages (vehicle_id, ts, route, direction, checkpoint_seq, checkpoint_id)"
            " FROM STDIN"
        ) as copy,
    ):
        for r in rows:
            copy.write_row(r)
    length = ROUTE.checkpoints[4].dist_m - ROUTE.checkpoints[3].dist_m
    traversals: list[Traversal] = []
    for vid, t_in, t_out in (("van-0", 0, 100), ("van-1", 600, 160 + 0)):
        if t_out <= t_in:
            continue
        tt = t_out - t_in
        at = T0 + timedelta(seconds=t_out)
        traversals.append((vid, at, "B", 0, 3, 4, tt, length, length / tt))
    insert_traversals(conn, traversals)  # and their rollup, as the analytics loop does


def _params(**kw: object) -> ReportParams:
    base: dict[str, object] = {
        "start": T0,
        "end": T0 + timedelta(hours=6),
        "route": "B",
        "targets": {"B": None},
    }
    base.update(kw)
    return ReportParams(**base)  # type: ignore[arg-type]


def test_headway_report_rows(db_dsn: str) -> None:
    with psycopg.connect(db_dsn) as conn:
        _seed(conn)
        rows = run_report(conn, "headways", _params())
    by_cp = {r["checkpoint_id"]: r for r in rows}
    assert set(by_cp) == {"B-003", "B-004", "ALL"}
    c3, c4, pooled = by_cp["B-003"], by_cp["B-004"], by_cp["ALL"]
    assert c3["count"] == 2 and c3["mean_s"] == 600 and c3["cv"] == 0 and c3["los"] == "A"
    assert c3["awt_s"] == 300 and c3["ewt_s"] == 0
    assert c4["count"] == 2 and c4["mean_s"] == 330
    assert c4["cv"] == pytest.approx(270 / 330, abs=1e-4) and c4["los"] == "F"
    assert c4["bunched_share"] == 0.5  # 60 ≤ 0.5 × median 330
    assert pooled["count"] == 4 and pooled["mean_s"] == 465
    # With a target headway of 10 min: reference and EWT follow the target.
    rows = run_report(psycopg.connect(db_dsn), "headways", _params(targets={"B": 600.0}))
    c4 = {r["checkpoint_id"]: r for r in rows}["B-004"]
    assert c4["reference_s"] == 600 and c4["bunched_share"] == 0.5
    assert c4["ewt_s"] == pytest.approx((60**2 + 600**2) / (2 * 660) - 300, abs=1e-3)


def test_headway_report_filters_and_hours(db_dsn: str) -> None:
    with psycopg.connect(db_dsn) as conn:
        _seed(conn)
        only4 = run_report(conn, "headways", _params(checkpoint=4))
        assert {r["checkpoint_id"] for r in only4} == {"B-004", "ALL"}
        none = run_report(conn, "headways", _params(direction=1))
        assert none == []
        hourly = run_report(conn, "headways_by_hour", _params())
        assert {r["hour"] for r in hourly} == {8}  # 00:00-00:20 UTC is 08:xx in Makassar
        late = run_report(conn, "headways", _params(start=T0 + timedelta(seconds=601)))
        assert {r["checkpoint_id"]: r["count"] for r in late}["B-003"] == 1


def test_congestion_and_service_rows(db_dsn: str) -> None:
    with psycopg.connect(db_dsn) as conn:
        _seed(conn)
        cong = run_report(conn, "congestion", _params(), offpeak_hours=range(24))
        service = run_report(conn, "service", _params())
    assert len(cong) == 1
    row = cong[0]
    assert row["from_seq"] == 3 and row["to_seq"] == 4 and row["samples"] == 1
    # Free flow = p85 of off-peak speeds = this traversal's speed → level 0.
    assert row["congestion_level"] == 0
    assert row["median_speed_kmh"] == pytest.approx(row["freeflow_speed_kmh"])
    assert service == [
        {
            "route": "B",
            "hour": "2026-11-02T00:00:00+00:00",
            "active_vans": 3,
            "vehicle_km": round(
                (ROUTE.checkpoints[4].dist_m - ROUTE.checkpoints[3].dist_m) / 1000, 3
            ),
            "passages": 6,
        }
    ]


def test_every_report_of_the_registry_has_its_columns(db_dsn: str) -> None:
    with psycopg.connect(db_dsn) as conn:
        _seed(conn)
        for name, report in REPORTS.items():
            rows = run_report(conn, name, _params(), offpeak_hours=range(24))
            assert all(tuple(row) == report.columns for row in rows), name
            assert render(rows, "csv", report.columns).splitlines()[0].split(",") == list(
                report.columns
            )
    assert {r.name for r in PUBLISHED} == {"headways", "congestion", "service"}


def test_bad_parameters_are_explained() -> None:
    with pytest.raises(ReportError, match="must be after"):
        _params(end=T0)
    with pytest.raises(ReportError, match="id like B-012"):
        ReportParams.checkpoint_seq("B-x")
    assert ReportParams.checkpoint_seq("B-012") == 12


def test_render_csv_and_json() -> None:
    rows = [{"a": 1, "b": None}, {"a": 2, "b": 0.5}]
    assert render(rows, "csv") == "a,b\n1,\n2,0.5\n"
    assert json.loads(render(rows, "json")) == rows


def test_cli_report_csv_json_and_output_file(db_dsn: str, tmp_path: Path) -> None:
    with psycopg.connect(db_dsn) as conn:
        _seed(conn)
    base = [
        sys.executable,
        "-m",
        "fleet.cli",
        "report",
        "headways",
        "--dsn",
        db_dsn,
        "--route",
        "B",
        "--from",
        FROM,
        "--to",
        TO,
    ]
    out = subprocess.run(
        [*base, "--format", "csv"], capture_output=True, text=True, timeout=60, check=True
    )
    table = list(csv.DictReader(io.StringIO(out.stdout)))
    assert {r["checkpoint_id"] for r in table} == {"B-003", "B-004", "ALL"}
    target = tmp_path / "h.json"
    subprocess.run(
        [*base, "--format", "json", "--output", str(target)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert len(json.loads(target.read_text())) == 3
    hourly = subprocess.run(
        [*base, "--by-hour", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert {r["hour"] for r in json.loads(hourly.stdout)} == {8}
    bad = subprocess.run(
        [*base[:-4], "--route", "NOPE"], check=False, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "unknown route 'NOPE'" in bad.stderr
    # A multi-day range shows progress on stderr and still answers.
    long = subprocess.run(
        [*base[:-2], "--to", "2026-11-05T00:00:00+00:00", "--format", "csv"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "headways: reading" in long.stderr
    assert len(list(csv.DictReader(io.StringIO(long.stdout)))) == 3


def test_api_reports_json_and_csv(db_dsn: str, broker: MosquittoBroker) -> None:
    with psycopg.connect(db_dsn) as conn:
        _seed(conn)
    token = make_token(db_dsn, Role.PLANNER, "planner")
    headers = {"Authorization": f"Bearer {token}"}
    with running_api(db_dsn, broker) as api:
        q = {"route": "B", "from": FROM, "to": TO}
        r = httpx.get(f"{api.base}/api/v1/reports/headways", params=q, headers=headers)
        assert r.status_code == 200
        assert {x["checkpoint_id"]: x["count"] for x in r.json()} == {
            "B-003": 2,
            "B-004": 2,
            "ALL": 4,
        }
        r = httpx.get(
            f"{api.base}/api/v1/reports/headways",
            params={**q, "format": "csv", "checkpoint": "B-004"},
            headers=headers,
        )
        assert r.headers["content-type"].startswith("text/csv")
        assert [x["checkpoint_id"] for x in csv.DictReader(io.StringIO(r.text))] == ["B-004", "ALL"]
        r = httpx.get(f"{api.base}/api/v1/reports/congestion", params=q, headers=headers)
        assert r.status_code == 200 and r.json()[0]["from_seq"] == 3
        r = httpx.get(f"{api.base}/api/v1/reports/service", params=q, headers=headers)
        assert r.json()[0]["active_vans"] == 3
        # The variants: per local hour, and per H3 cell (none stored: the header alone).
        r = httpx.get(
            f"{api.base}/api/v1/reports/headways", params={**q, "by": "hour"}, headers=headers
        )
        assert {x["hour"] for x in r.json()} == {8}
        r = httpx.get(
            f"{api.base}/api/v1/reports/congestion",
            params={**q, "level": "area", "format": "csv"},
            headers=headers,
        )
        assert r.headers["content-disposition"] == 'attachment; filename="area-speeds.csv"'
        assert r.text == ",".join(REPORTS["area"].columns) + "\n"
        r = httpx.get(
            f"{api.base}/api/v1/reports/headways", params={"from": "yesterday"}, headers=headers
        )
        assert r.status_code == 400 and "ISO 8601" in r.text
        assert httpx.get(f"{api.base}/api/v1/reports/headways").status_code == 401
