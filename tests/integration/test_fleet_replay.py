"""Fleet replay: ``/api/v1/fleet/at`` and ``/api/v1/fleet/replay`` against a real app,
broker and database, with history stored through ingest's own writer."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from broker.runner import MosquittoBroker
from fleet.contract import Fix
from tests.fixtures.api import make_token, running_api
from tests.fixtures.replay import store_fixes, store_status

pytestmark = pytest.mark.timeout(90)

T0_MS = (int(time.time()) - 3 * 3600) * 1000  # three hours ago, on a whole second


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def _get(api: Any, token: str, path: str, **params: Any) -> httpx.Response:
    return httpx.get(
        f"{api.base}/api/v1{path}",
        params=params,
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


def _fix(ts: int, lat: float, lon: float, route: str | None = "B1") -> Fix:
    return Fix(ts=ts, lat=lat, lon=lon, speed=5.0, heading=90.0, route=route)


def test_fleet_at_time_gives_each_vans_last_position_and_status_then(
    db_dsn: str, broker: MosquittoBroker
) -> None:
    s = 1000
    store_fixes(
        db_dsn,
        [
            # a: several fixes; at T0 the one 30 s before counts (online)
            ("pp-a", _fix(T0_MS - 300 * s, -5.10, 119.40)),
            ("pp-a", _fix(T0_MS - 30 * s, -5.11, 119.41)),
            ("pp-a", _fix(T0_MS + 20 * s, -5.12, 119.42)),  # after T0: not yet
            # b: last fix 100 s before T0 → stale (FLEET_STALE_AFTER_S 60); other route
            ("pp-b", _fix(T0_MS - 100 * s, -5.20, 119.50, "C2")),
            # c: only after T0 → not on the map at T0
            ("pp-c", _fix(T0_MS + 5 * s, -5.30, 119.60)),
            # d: 20 minutes before → outside the default 15-minute look-back
            ("pp-d", _fix(T0_MS - 1200 * s, -5.40, 119.70)),
            # e: exactly at T0 (at or before t)
            ("pp-e", _fix(T0_MS, -5.50, 119.80)),
            # f: a fix without a route code keeps its van's route
            ("pp-f", _fix(T0_MS - 600 * s, -5.60, 119.90, "B1")),
            ("pp-f", _fix(T0_MS - 10 * s, -5.61, 119.91, None)),
        ],
    )
    token = make_token(db_dsn)
    with running_api(db_dsn, broker) as api:
        r = _get(api, token, "/fleet/at", t=_iso(T0_MS))
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["t"] == T0_MS and doc["lookback_s"] == 900 and doc["stale_after_s"] == 60
        got = {v["id"]: v for v in doc["vehicles"]}
        assert sorted(got) == ["pp-a", "pp-b", "pp-e", "pp-f"]
        assert got["pp-a"] == {
            "id": "pp-a",
            "route": "B1",
            "ts": T0_MS - 30 * s,
            "lat": -5.11,
            "lon": 119.41,
            "speed": 5.0,
            "heading": 90.0,
            "status": "online",
        }
        assert (got["pp-b"]["status"], got["pp-b"]["route"]) == ("stale", "C2")
        assert (got["pp-e"]["ts"], got["pp-e"]["status"]) == (T0_MS, "online")
        assert (got["pp-f"]["lat"], got["pp-f"]["route"]) == (-5.61, "B1")

        # a longer look-back finds d; a route filter keeps only its vans
        r = _get(api, token, "/fleet/at", t=_iso(T0_MS), lookback_s=1800)
        assert "pp-d" in {v["id"] for v in r.json()["vehicles"]}
        r = _get(api, token, "/fleet/at", t=_iso(T0_MS), route="C2")
        assert [v["id"] for v in r.json()["vehicles"]] == ["pp-b"]
        assert r.json()["routes"] == ["C2"]
        r = httpx.get(
            f"{api.base}/api/v1/fleet/at?t={_iso(T0_MS)}&route=C2&route=B1".replace("+", "%2B"),
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.json()["routes"] == ["B1", "C2"] and len(r.json()["vehicles"]) == 4
        r = _get(api, token, "/fleet/at", t=_iso(T0_MS), route="C2,B1")
        assert r.json()["routes"] == ["B1", "C2"]

        # 25 s later: a moved on (its fix at T0 + 20 s), c appeared
        r = _get(api, token, "/fleet/at", t=_iso(T0_MS + 25 * s))
        got = {v["id"]: v for v in r.json()["vehicles"]}
        assert got["pp-a"]["lat"] == -5.12 and "pp-c" in got


def test_fleet_at_time_shows_offline_vans_and_the_alerts_open_then(
    db_dsn: str, broker: MosquittoBroker
) -> None:
    now_ms = int(time.time() * 1000)
    store_fixes(db_dsn, [("pp-will", _fix(now_ms - 20_000, -5.1, 119.4))])
    store_status(db_dsn, "pp-will", "offline")  # its last will, stored now
    t0 = datetime.fromtimestamp(T0_MS / 1000, UTC)
    with psycopg.connect(db_dsn) as conn:  # alerts are the analytics' rows, not positions
        for vid, created, resolved in (
            ("open", t0 - timedelta(minutes=5), None),
            ("resolved-later", t0 - timedelta(minutes=10), t0 + timedelta(minutes=1)),
            ("resolved-before", t0 - timedelta(minutes=10), t0 - timedelta(minutes=1)),
            ("created-after", t0 + timedelta(seconds=1), None),
        ):
            conn.execute(
                "INSERT INTO alerts (kind, route, vehicle_id, created_at, resolved_at)"
                " VALUES ('stopped', 'B1', %s, %s, %s)",
                (vid, created, resolved),
            )
    token = make_token(db_dsn)
    with running_api(db_dsn, broker) as api:
        before = _get(api, token, "/fleet/at", t=_iso(now_ms - 10_000)).json()
        assert [(v["id"], v["status"]) for v in before["vehicles"]] == [("pp-will", "online")]
        after = _get(api, token, "/fleet/at", t=_iso(now_ms + 60_000)).json()
        assert [(v["id"], v["status"]) for v in after["vehicles"]] == [("pp-will", "offline")]

        doc = _get(api, token, "/fleet/at", t=_iso(T0_MS)).json()
        assert [a["vehicle_id"] for a in doc["alerts"]] == ["open", "resolved-later"]
        assert doc["alerts"][0]["kind"] == "stopped"
        assert doc["alerts"][0]["created_at"] == T0_MS - 300_000
        assert _get(api, token, "/fleet/at", t=_iso(T0_MS), route="C2").json()["alerts"] == []


def test_replay_streams_positions_in_time_order_in_pages(
    db_dsn: str, broker: MosquittoBroker
) -> None:
    stored = [
        (f"pp-{v}", _fix(T0_MS + i * 5000 + v * 1000, -5.1 - i * 1e-3, 119.4, f"R{v}"))
        for v in range(3)
        for i in range(10)
    ]
    stored.append(("pp-1", _fix(T0_MS + 60_000, -5.0, 119.0, "R1")))  # at `to`: excluded
    stored.append(("pp-x", _fix(T0_MS + 1000, -5.0, 119.0, "R1")))  # same ts as pp-1's
    assert store_fixes(db_dsn, stored) == len(stored)
    expected = sorted(
        [[f.ts, vid, f.lat, f.lon, f.speed, f.heading, f.route] for vid, f in stored],
        key=lambda r: (r[0], r[1]),
    )
    expected = [r for r in expected if r[0] < T0_MS + 60_000]
    token = make_token(db_dsn)
    window = {"from": _iso(T0_MS), "to": _iso(T0_MS + 60_000)}
    with running_api(db_dsn, broker) as api:
        rows: list[list[Any]] = []
        after: str | None = None
        pages = 0
        while True:
            params = {**window, "limit": 7, **({"after": after} if after else {})}
            r = _get(api, token, "/fleet/replay", **params)
            assert r.status_code == 200, r.text
            doc = r.json()
            assert doc["fields"] == ["ts", "id", "lat", "lon", "speed", "heading", "route"]
            assert len(doc["rows"]) <= 7
            rows += doc["rows"]
            pages += 1
            after = doc["next"]
            if after is None:
                break
        assert rows == expected and pages == 5  # 31 rows in pages of 7

        one = _get(api, token, "/fleet/replay", **window, route="R2").json()
        assert {r[1] for r in one["rows"]} == {"pp-2"} and len(one["rows"]) == 10
        assert one["next"] is None

        # the cursor belongs to its window
        first = _get(api, token, "/fleet/replay", **window, limit=3).json()
        later = {"from": _iso(T0_MS + 30_000), "to": _iso(T0_MS + 60_000)}
        r = _get(api, token, "/fleet/replay", **later, after=first["next"])
        assert r.status_code == 400 and r.json()["error"] == "invalid cursor"


BAD_PARAMETERS: list[tuple[str, dict[str, Any], int, str]] = [
    ("/fleet/at", {}, 422, "invalid request"),
    ("/fleet/at", {"t": "yesterday"}, 422, "invalid request"),
    ("/fleet/at", {"t": "1990-01-01T00:00:00Z"}, 400, "time outside the data horizon"),
    ("/fleet/at", {"t": "2999-01-01T00:00:00Z"}, 400, "time outside the data horizon"),
    ("/fleet/at", {"t": "2025-01-01T00:00:00Z", "lookback_s": 0}, 422, "invalid request"),
    ("/fleet/at", {"t": "2025-01-01T00:00:00Z", "lookback_s": 3601}, 422, "invalid request"),
    ("/fleet/at", {"t": "2025-01-01T00:00:00Z", "route": "no route!"}, 400,
     "invalid route code"),
    ("/fleet/at", {"t": "2025-01-01T00:00:00Z", "route": ",".join(["A"] * 51)}, 400,
     "invalid route code"),
    ("/fleet/replay", {"from": "2025-01-01T00:00:00Z"}, 422, "invalid request"),
    ("/fleet/replay", {"from": "2025-01-01T01:00:00Z", "to": "2025-01-01T01:00:00Z"}, 400,
         "empty time range"),
    ("/fleet/replay", {"from": "2025-01-01T00:00:00Z", "to": "2025-01-01T06:00:01Z"}, 400,
         "time range too long"),
    ("/fleet/replay", {"from": "0001-01-01T00:00:00Z", "to": "2025-01-01T00:00:00Z"}, 400,
         "time outside the data horizon"),
    ("/fleet/replay", {"from": "2025-01-01T00:00:00Z", "to": "2025-01-01T01:00:00Z",
                       "limit": 50_001}, 422, "invalid request"),
    ("/fleet/replay", {"from": "2025-01-01T00:00:00Z", "to": "2025-01-01T01:00:00Z",
                       "after": "12~pp-1"}, 400, "invalid cursor"),
    ("/fleet/replay", {"from": "2025-01-01T00:00:00Z", "to": "2025-01-01T01:00:00Z",
                       "after": "99999999999999999~x"}, 400, "invalid cursor"),
    ("/fleet/replay", {"from": "2025-01-01T00:00:00Z", "to": "2025-01-01T01:00:00Z",
                       "after": "1735690000000000~bad id!"}, 400, "invalid cursor"),
]  # fmt: skip


def test_replay_parameters_are_checked(db_dsn: str, broker: MosquittoBroker) -> None:
    token = make_token(db_dsn)
    with running_api(db_dsn, broker) as api:
        for path, params, status, error in BAD_PARAMETERS:
            r = _get(api, token, path, **params)
            assert (r.status_code, r.json()["error"]) == (status, error), (params, r.text)
            assert "detail" in r.json()
        r = httpx.get(f"{api.base}/api/v1/fleet/at", params={"t": "2025-01-01T00:00:00Z"})
        assert r.status_code == 401 and r.json()["error"] == "token required"
