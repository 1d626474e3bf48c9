"""REST, health, metrics, errors and tokens against a real app, broker and database."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from typer.testing import CliRunner

from api.tokens import Role
from broker.runner import MosquittoBroker
from fleet.cli import app as fleet_app
from fleet.routes import load_routes
from tests.fixtures.api import Gateway, make_token, now_ms, running_api
from tests.fixtures.mqtt import add_device
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.timeout(60)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_health_ready_metrics_and_docs(db_dsn: str, broker: MosquittoBroker) -> None:
    token = make_token(db_dsn)
    with running_api(db_dsn, broker) as api:
        assert httpx.get(f"{api.base}/healthz").json() == {"status": "ok"}
        assert httpx.get(f"{api.base}/readyz").json() == {"status": "ready"}
        metrics = httpx.get(f"{api.base}/metrics", headers=_auth(token)).text
        for name in (
            "fleet_api_ws_clients",
            "fleet_api_ws_frames_sent_total",
            "fleet_api_ws_dropped_clients_total",
            "fleet_api_fixes_received_total",
        ):
            assert name in metrics
        assert httpx.get(f"{api.base}/docs").status_code == 200
        page = httpx.get(f"{api.base}/")  # the war-room page, no token needed
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        spec = httpx.get(f"{api.base}/openapi.json").json()
        assert "/api/v1/vehicles/{vehicle_id}/track" in spec["paths"]

        broker.kill()  # the broker goes away: not ready, and the reason says so

        def not_ready() -> httpx.Response | None:
            r = httpx.get(f"{api.base}/readyz")
            return r if r.status_code == 503 else None

        r = wait_for(not_ready, 10, "readyz to report the broker down")
        body = r.json()
        assert body["error"] == "not ready" and "broker" in body["detail"]
        assert "database" not in body["detail"]
        assert httpx.get(f"{api.base}/healthz").status_code == 200


def test_readyz_reports_an_unreachable_database(db_dsn: str, broker: MosquittoBroker) -> None:
    with running_api(db_dsn, broker) as api:
        with psycopg.connect(db_dsn, autocommit=True) as conn:  # cut the pool's connections
            dbname = conn.info.dbname
        admin = psycopg.conninfo.make_conninfo(db_dsn, dbname="postgres")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{dbname}" WITH ALLOW_CONNECTIONS false')
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (dbname,),
            )
        try:
            r = httpx.get(f"{api.base}/readyz", timeout=10)
            assert r.status_code == 503
            assert "database" in r.json()["detail"]
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'ALTER DATABASE "{dbname}" WITH ALLOW_CONNECTIONS true')


def test_token_required_and_errors_are_json(db_dsn: str, broker: MosquittoBroker) -> None:
    viewer = make_token(db_dsn, Role.VIEWER)
    with running_api(db_dsn, broker) as api:
        r = httpx.get(f"{api.base}/api/v1/vehicles")
        assert r.status_code == 401
        assert r.json()["error"] == "token required"
        r = httpx.get(f"{api.base}/api/v1/vehicles", headers=_auth("flt_wrong"))
        assert r.status_code == 401 and r.json()["error"] == "invalid token"
        r = httpx.get(f"{api.base}/api/v1/vehicles?token={viewer}")  # never in a URL
        assert r.status_code == 400 and r.json()["error"] == "token in URL"
        assert httpx.get(f"{api.base}/api/v1/vehicles", headers=_auth(viewer)).status_code == 200
        r = httpx.get(f"{api.base}/api/v1/nothing-here", headers=_auth(viewer))
        assert r.status_code == 404 and r.json() == {
            "error": "not found",
            "detail": "GET /api/v1/nothing-here",
        }
        r = httpx.get(f"{api.base}/api/v1/vehicles/x/track?from=yesterday", headers=_auth(viewer))
        assert r.status_code == 422
        assert r.json()["error"] == "invalid request"
        assert r.json()["detail"][0]["where"] == "query.from"
        r = httpx.get(f"{api.base}/api/v1/config", headers=_auth(viewer))
        assert r.json() == {
            "tile_url": None,
            "stale_after_s": 60,
            "ws_interval_ms": 250,
            "role": "viewer",
            "permissions": ["watch"],
        }


def test_vehicles_merge_database_and_live_state(db_dsn: str, broker: MosquittoBroker) -> None:
    token = make_token(db_dsn)
    old = datetime.now(UTC) - timedelta(hours=2)
    with psycopg.connect(db_dsn) as conn:  # as ingest would have stored them
        conn.execute(
            "INSERT INTO vehicles (vehicle_id, route, last_ts, lat, lon, speed, heading, status)"
            " VALUES ('db-only', 'B1', %s, -5.1, 119.4, 3, 10, 'online'),"
            "        ('both', 'C2', %s, -5.2, 119.5, 0, 0, 'online')",
            (old, old),
        )
    gw = Gateway(broker)
    with running_api(db_dsn, broker) as api:
        t = now_ms()
        gw.fix("both", t, -5.21, 119.51, route="C2")
        gw.fix("live-only", t, -5.3, 119.6, route="D3")
        wait_for(lambda: len(api.hub().state.vans) >= 3, 5, "live state")
        vans = {
            v["id"]: v
            for v in httpx.get(f"{api.base}/api/v1/vehicles", headers=_auth(token)).json()
        }
        assert set(vans) == {"db-only", "both", "live-only"}
        assert vans["db-only"]["status"] == "stale"  # two hours without a fix
        assert vans["both"]["ts"] == t and vans["both"]["lat"] == -5.21
        assert vans["both"]["status"] == "online"
        assert vans["live-only"]["route"] == "D3"
    gw.close()


def test_track_json_and_geojson(db_dsn: str, broker: MosquittoBroker) -> None:
    token = make_token(db_dsn)
    t0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
    with psycopg.connect(db_dsn) as conn:
        conn.execute("INSERT INTO vehicles (vehicle_id) VALUES ('v1')")
        with conn.cursor().copy(
            "COPY positions (vehicle_id, ts, lat, lon, speed, heading, route) FROM STDIN"
        ) as cp:
            for i in range(10):
                cp.write_row(
                    ("v1", t0 + timedelta(seconds=10 * i), -5.1 - i * 1e-3, 119.4, 5, 90, "B1")
                )
    with running_api(db_dsn, broker) as api:
        q = {"from": "2026-01-05T08:00:20Z", "to": "2026-01-05T08:01:00+00:00"}
        r = httpx.get(f"{api.base}/api/v1/vehicles/v1/track", params=q, headers=_auth(token))
        body = r.json()
        assert r.status_code == 200 and len(body["points"]) == 4  # 08:00:20 .. 08:00:50
        assert body["points"][0] == {
            "ts": int((t0 + timedelta(seconds=20)).timestamp() * 1000),
            "lat": pytest.approx(-5.102), "lon": 119.4, "speed": 5.0, "heading": 90.0,
            "route": "B1",
        }  # fmt: skip
        r = httpx.get(
            f"{api.base}/api/v1/vehicles/v1/track",
            params={**q, "format": "geojson"},
            headers=_auth(token),
        )
        feature = r.json()
        assert feature["type"] == "Feature" and feature["geometry"]["type"] == "LineString"
        assert feature["geometry"]["coordinates"][0] == [119.4, pytest.approx(-5.102)]
        assert len(feature["properties"]["times"]) == 4
        r = httpx.get(f"{api.base}/api/v1/vehicles/nobody/track", headers=_auth(token))
        assert r.status_code == 404 and r.json()["error"] == "unknown vehicle"
        r = httpx.get(
            f"{api.base}/api/v1/vehicles/v1/track",
            params={"from": q["to"], "to": q["from"]},
            headers=_auth(token),
        )
        assert r.status_code == 400 and r.json()["error"] == "empty time range"


def test_routes_geojson(db_dsn: str, broker: MosquittoBroker) -> None:
    token = make_token(db_dsn)
    with running_api(db_dsn, broker) as api:
        r = httpx.get(f"{api.base}/api/v1/routes", headers=_auth(token))
        assert r.status_code == 200
        doc = r.json()
        assert doc["type"] == "FeatureCollection"
        codes = {
            f["properties"].get("route") or f["properties"].get("code") for f in doc["features"]
        }
        assert set(load_routes()) <= codes


def test_alerts_active_filter(db_dsn: str, broker: MosquittoBroker) -> None:
    token = make_token(db_dsn)
    with psycopg.connect(db_dsn) as conn:
        conn.execute(
            "INSERT INTO alerts (kind, route, vehicle_id, resolved_at) VALUES"
            " ('stopped', 'B1', 'v1', NULL), ('gap', 'B1', NULL, now())"
        )
    with running_api(db_dsn, broker) as api:
        all_ = httpx.get(f"{api.base}/api/v1/alerts", headers=_auth(token)).json()
        active = httpx.get(f"{api.base}/api/v1/alerts?active=true", headers=_auth(token)).json()
        assert [a["kind"] for a in all_] == ["gap", "stopped"]  # newest first
        assert [a["kind"] for a in active] == ["stopped"]
        assert set(active[0]) == {
            "id", "kind", "route", "direction", "vehicle_id", "other_vehicle_id", "lat", "lon",
            "created_at", "resolved_at", "incident_id", "detail",
        }  # fmt: skip
        assert isinstance(active[0]["created_at"], int)


def test_admin_command_reaches_the_device(db_dsn: str, broker: MosquittoBroker) -> None:
    viewer = make_token(db_dsn, Role.VIEWER)
    admin = make_token(db_dsn, Role.ADMIN, "ops")
    add_device(broker, "van-c", "pw-van-c")
    got: list[bytes] = []
    dev = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="van-c")
    dev.username_pw_set("van-c", "pw-van-c")
    subscribed = []
    dev.on_subscribe = lambda *a: subscribed.append(1)
    dev.on_message = lambda c, u, m: got.append(m.payload)
    dev.on_connect = lambda c, u, f, rc, p: c.subscribe("fleet/van-c/cmd", 1)

    def connected() -> bool:
        try:
            dev.connect("127.0.0.1", broker.port)
        except OSError:
            return False
        return True

    wait_for(connected, 5, "device connect")
    dev.loop_start()
    with running_api(db_dsn, broker) as api:
        wait_for(lambda: subscribed, 10, "device subscription")
        body = {"cmd": "set_interval", "interval_s": 5}
        url = f"{api.base}/api/v1/vehicles/van-c/commands"
        r = httpx.post(url, json=body, headers=_auth(viewer))
        assert r.status_code == 403 and r.json()["error"] == "forbidden"
        r = httpx.post(url, json=body, headers=_auth(admin))
        assert r.status_code == 202, r.text
        wait_for(lambda: got, 5, "the command on the device's topic")
        assert b'"set_interval"' in got[0] and b'"interval_s":5' in got[0]
    dev.loop_stop()


def test_command_while_the_broker_is_down_is_a_clear_503(
    db_dsn: str, broker: MosquittoBroker
) -> None:
    """The command channel (aiomqtt) waits for the broker's PUBACK: no broker, no 202."""
    admin = make_token(db_dsn, Role.ADMIN, "ops")
    with running_api(db_dsn, broker) as api:
        broker.kill()
        url = f"{api.base}/api/v1/vehicles/van-d/commands"
        body = {"cmd": "set_interval", "interval_s": 5}
        deadline = time.monotonic() + 15
        r = httpx.post(url, json=body, headers=_auth(admin), timeout=15)
        while r.status_code == 202 and time.monotonic() < deadline:  # until it notices
            time.sleep(0.2)
            r = httpx.post(url, json=body, headers=_auth(admin), timeout=15)
        assert r.status_code == 503, r.text
        assert r.json()["error"] == "broker unavailable"


def test_token_cli_create_list_revoke(db_dsn: str, broker: MosquittoBroker) -> None:
    runner = CliRunner()
    out = runner.invoke(
        fleet_app, ["token", "create", "--name", "alice", "--role", "admin", "--dsn", db_dsn]
    )
    assert out.exit_code == 0, out.output
    secret = out.output.strip().splitlines()[-1]
    assert secret.startswith("flt_")
    with psycopg.connect(db_dsn) as conn:  # only the hash is stored
        stored = conn.execute("SELECT token_sha256 FROM api_tokens").fetchone()[0]
        assert secret.encode() not in bytes(stored)
    with running_api(db_dsn, broker) as api:
        assert httpx.get(f"{api.base}/api/v1/vehicles", headers=_auth(secret)).status_code == 200
        listing = runner.invoke(fleet_app, ["token", "list", "--dsn", db_dsn]).output
        assert "alice" in listing and "admin" in listing and "active" in listing
        assert secret not in listing
        out = runner.invoke(fleet_app, ["token", "revoke", "alice", "--dsn", db_dsn])
        assert out.exit_code == 0 and "revoked 1" in out.output
        r = httpx.get(f"{api.base}/api/v1/vehicles", headers=_auth(secret))
        assert r.status_code == 401
        out = runner.invoke(fleet_app, ["token", "revoke", "alice", "--dsn", db_dsn])
        assert out.exit_code == 2 and "no active token" in out.output


def test_demo_token_is_seeded(db_dsn: str, broker: MosquittoBroker) -> None:
    with running_api(db_dsn, broker, api_demo_token="demo-secret-123") as api:

        def ok() -> bool:
            r = httpx.get(f"{api.base}/api/v1/config", headers=_auth("demo-secret-123"))
            return r.status_code == 200

        wait_for(ok, 10, "the demo token to work")
