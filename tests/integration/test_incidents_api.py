"""``/api/v1/incidents`` and the ``incident`` frame against a real app (uvicorn, Mosquitto,
PostgreSQL): the history with its filters as JSON and CSV, parameters checked, who may
acknowledge and resolve (operator and admin; viewer and planner get 403), each change
recorded with who and pushed live, resolved ones included."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg

from api.incidents import CSV_COLUMNS
from api.tokens import Role
from broker.runner import MosquittoBroker
from tests.fixtures.api import make_token, now_ms, recv_json, recv_until, running_api, ws_connect
from tests.fixtures.incidents import bunching, cycle, stopped
from tests.fixtures.waiting import wait_for


def _client(api: Any, token: str) -> httpx.Client:
    return httpx.Client(base_url=api.base, headers={"Authorization": f"Bearer {token}"})


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def test_history_filters_json_csv_and_parameter_checks(
    db_dsn: str, broker: MosquittoBroker
) -> None:
    token = make_token(db_dsn, Role.VIEWER, "wall-screen")
    before = datetime.now(UTC) - timedelta(seconds=1)
    cycle(db_dsn, bunching("b2", "b1"), bunching("b3", "b2"), stopped("d1", route="D"))
    cycle(db_dsn, stopped("d1", route="D"))  # route B's bunching clears: auto-resolved
    cycle(db_dsn, bunching("b5", "b4"), stopped("d1", route="D"))  # ... and comes back
    with running_api(db_dsn, broker) as api, _client(api, token) as c:
        every = c.get("/api/v1/incidents").json()
        assert [(i["kind"], i["route"], i["state"]) for i in every] == [
            ("bunching", "B", "open"),
            ("stopped", "D", "open"),
            ("bunching", "B", "resolved"),
        ]
        new_b, stop, old_b = every
        assert old_b["vans"] == ["b1", "b2", "b3"] and old_b["active_vans"] == []
        assert old_b["resolved_by"] == "system" and old_b["auto_resolved"] is True
        assert old_b["ended_at"] == old_b["resolved_at"] and old_b["ended_at"] is not None
        assert 0 <= old_b["duration_s"] < 60
        assert stop["vehicle_id"] == "d1" and stop["vans"] == ["d1"] and stop["ended_at"] is None
        assert abs(new_b["started_at"] - now_ms()) < 60_000
        assert new_b["direction"] == 0 and new_b["vehicle_id"] is None

        def ids(query: str) -> list[int]:
            r = c.get(f"/api/v1/incidents?{query}")
            assert r.status_code == 200, r.text
            return [i["id"] for i in r.json()]

        assert ids("active=true") == [new_b["id"], stop["id"]]
        assert ids("route=B") == [new_b["id"], old_b["id"]]
        assert ids("kind=stopped") == [stop["id"]]
        assert ids("route=B&kind=bunching&active=true&limit=1") == [new_b["id"]]
        assert ids(f"to={_iso(before)}") == []
        later = datetime.now(UTC) + timedelta(hours=1)
        assert ids(f"from={_iso(later)}") == [new_b["id"], stop["id"]]  # still going
        assert ids(f"from={_iso(before)}&to={_iso(later)}&limit=2") == [new_b["id"], stop["id"]]

        r = c.get("/api/v1/incidents?format=csv&route=B")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/csv")
        assert "incidents.csv" in r.headers["content-disposition"]
        rows = list(csv.DictReader(io.StringIO(r.text)))
        assert list(rows[0]) == list(CSV_COLUMNS)
        assert [row["id"] for row in rows] == [str(new_b["id"]), str(old_b["id"])]
        assert rows[1]["vans"] == "b1 b2 b3" and rows[1]["state"] == "resolved"
        assert rows[1]["resolved_by"] == "system" and rows[1]["auto_resolved"] == "True"
        assert datetime.fromisoformat(rows[1]["started_at"]) >= before
        empty = c.get(f"/api/v1/incidents?format=csv&to={_iso(before)}").text
        assert empty.strip() == ",".join(CSV_COLUMNS)  # the header even without rows

        one = c.get(f"/api/v1/incidents/{old_b['id']}").json()
        assert [(e["event"], e["actor"]) for e in one["events"]] == [
            ("opened", "system"),
            ("resolved", "system"),
        ]
        assert [(a["vehicle_id"], a["other_vehicle_id"]) for a in one["alerts"]] == [
            ("b2", "b1"),
            ("b3", "b2"),
        ]  # the evidence: one alert per pair
        assert all(a["resolved_at"] is not None for a in one["alerts"])
        evidence = c.get("/api/v1/alerts").json()
        assert {a["incident_id"] for a in evidence} == {new_b["id"], stop["id"], old_b["id"]}

        bad = {
            "route=not%20a%20route": (400, "invalid route code"),
            "kind=flood": (422, "invalid request"),
            "limit=0": (422, "invalid request"),
            "limit=5001": (422, "invalid request"),
            "active=perhaps": (422, "invalid request"),
            "format=xml": (422, "invalid request"),
            "from=1999-12-31T00:00:00Z": (400, "time outside the data horizon"),
            "to=0001-01-01T00:00:00Z": (400, "time outside the data horizon"),
            "from=yesterday": (422, "invalid request"),
            f"from={_iso(later)}&to={_iso(before)}": (400, "empty time range"),
        }
        for query, (status, error) in bad.items():
            r = c.get(f"/api/v1/incidents?{query}")
            assert (r.status_code, r.json()["error"]) == (status, error), query
            assert "detail" in r.json()
        for path, (status, error) in {
            "/api/v1/incidents/abc": (422, "invalid request"),
            "/api/v1/incidents/0": (422, "invalid request"),
            f"/api/v1/incidents/{2**63}": (422, "invalid request"),
            "/api/v1/incidents/987654": (404, "unknown incident"),
        }.items():
            r = c.get(path)
            assert (r.status_code, r.json()["error"]) == (status, error), path
        assert httpx.get(f"{api.base}/api/v1/incidents").status_code == 401


def test_operators_work_incidents_and_every_change_is_pushed(
    db_dsn: str, broker: MosquittoBroker
) -> None:
    tokens = {role: make_token(db_dsn, role, f"{role.value}-desk") for role in Role}
    cycle(db_dsn, stopped("old-van"))  # older than the API: never pushed
    with running_api(db_dsn, broker, alerts_poll_s=0.1) as api:
        ws = ws_connect(api, tokens[Role.VIEWER])
        assert recv_json(ws)["type"] == "snapshot"
        poller = api.app.state.incident_poller
        wait_for(lambda: poller.primed, 10, "the incident poller to learn where to start")

        cycle(db_dsn, stopped("old-van"), bunching("b2", "b1"), bunching("b3", "b2"))
        frame = recv_until(ws, lambda f: f["type"] == "incident")
        assert (frame["event"], frame["actor"]) == ("opened", "system")
        incident = frame["incident"]
        assert incident["kind"] == "bunching" and incident["route"] == "B"
        assert incident["active_vans"] == ["b1", "b2", "b3"] and incident["state"] == "open"
        iid = incident["id"]
        ack = f"/api/v1/incidents/{iid}/acknowledge"
        resolve = f"/api/v1/incidents/{iid}/resolve"

        # viewer and planner may not; neither changes anything
        for role in (Role.VIEWER, Role.PLANNER):
            with _client(api, tokens[role]) as c:
                for path in (ack, resolve):
                    r = c.post(path, json={"note": "mine"})
                    assert r.status_code == 403, (role, path, r.text)
                    assert r.json()["error"] == "forbidden"
                    assert "'work alerts'" in r.json()["detail"]
        with _client(api, tokens[Role.OPERATOR]) as op:
            assert op.get(f"/api/v1/incidents/{iid}").json()["state"] == "open"
            # a bad body is refused before anything changes
            for body in ({"note": "x" * 501}, {"note": "bell\x07"}, {"note": 5}):
                r = op.post(ack, json=body)
                assert (r.status_code, r.json()["error"]) == (422, "invalid request"), body
            r = op.post(ack, content=b"{not json", headers={"content-type": "application/json"})
            assert r.status_code == 422
            assert op.post("/api/v1/incidents/987654/acknowledge").status_code == 404

            # the operator acknowledges, with a note: recorded with who and when
            r = op.post(ack, json={"note": "radioed both drivers"})
            assert r.status_code == 200, r.text
            done = r.json()
            assert done["state"] == "acknowledged"
            assert done["acknowledged_by"] == "operator-desk"
            assert done["acknowledge_note"] == "radioed both drivers"
            assert abs(done["acknowledged_at"] - now_ms()) < 60_000
            frame = recv_until(ws, lambda f: f["type"] == "incident")
            assert (frame["event"], frame["actor"]) == ("acknowledged", "operator-desk")
            assert frame["incident"]["state"] == "acknowledged"
            again = op.post(ack)
            assert (again.status_code, again.json()["error"]) == (
                409,
                "incident already acknowledged",
            )
            assert "operator-desk" in again.json()["detail"]

        # an admin resolves it (no body at all is fine)
        with _client(api, tokens[Role.ADMIN]) as admin:
            r = admin.post(resolve)
            assert r.status_code == 200, r.text
            assert r.json()["state"] == "resolved" and r.json()["resolved_by"] == "admin-desk"
            assert r.json()["auto_resolved"] is False and r.json()["ended_at"] is None
        frame = recv_until(ws, lambda f: f["type"] == "incident")
        assert (frame["event"], frame["actor"]) == ("resolved", "admin-desk")
        with _client(api, tokens[Role.OPERATOR]) as op:
            for path in (ack, resolve):
                r = op.post(path)
                assert (r.status_code, r.json()["error"]) == (409, "incident already resolved")

        # the pair keeps bunching: nothing new; it clears: the condition ended (pushed);
        # the stopped van drives off: auto-resolved (pushed)
        cycle(db_dsn, stopped("old-van"), bunching("b2", "b1"))
        cycle(db_dsn)
        seen = [recv_until(ws, lambda f: f["type"] == "incident") for _ in range(2)]
        assert sorted((f["event"], f["actor"], f["incident"]["kind"]) for f in seen) == [
            ("ended", "system", "bunching"),
            ("resolved", "system", "stopped"),
        ]
        stop = next(f["incident"] for f in seen if f["incident"]["kind"] == "stopped")
        assert stop["vehicle_id"] == "old-van" and stop["auto_resolved"] is True

        # a page session acts only with the page's own Origin
        page = httpx.Client(base_url=api.base)
        page.post(
            "/api/v1/session", headers={"Authorization": f"Bearer {tokens[Role.OPERATOR]}"}
        ).raise_for_status()
        cycle(db_dsn, bunching("b9", "b8"))
        fresh = recv_until(ws, lambda f: f["type"] == "incident")["incident"]
        path = f"/api/v1/incidents/{fresh['id']}/acknowledge"
        r = page.post(path)
        assert (r.status_code, r.json()["error"]) == (403, "cross-origin request")
        assert page.post(path, headers={"Origin": api.base}).status_code == 200
        page.close()
        history = _client(api, tokens[Role.VIEWER]).get(f"/api/v1/incidents/{iid}").json()
        assert [(e["event"], e["actor"], e["note"]) for e in history["events"]] == [
            ("opened", "system", None),
            ("acknowledged", "operator-desk", "radioed both drivers"),
            ("resolved", "admin-desk", None),
            ("ended", "system", "the condition cleared"),
        ]
        ws.close()


def test_the_poller_waits_for_an_event_committed_late(db_dsn: str, broker: MosquittoBroker) -> None:
    """Event ids taken before a later one but committed after it are still pushed."""
    holes = 3
    token = make_token(db_dsn)
    cycle(db_dsn, stopped("v0"))
    with running_api(db_dsn, broker, alerts_poll_s=0.1) as api:
        ws = ws_connect(api, token)
        assert recv_json(ws)["type"] == "snapshot"
        wait_for(lambda: api.app.state.incident_poller.primed, 10, "the poller")
        with psycopg.connect(db_dsn) as late:
            # a transaction takes event ids and stays open ...
            (iid,) = late.execute("SELECT id FROM incidents").fetchone() or (0,)
            for _ in range(holes):
                late.execute(
                    "INSERT INTO incident_events (incident_id, event, actor)"
                    " VALUES (%s, 'acknowledged', 'late-desk')",
                    (iid,),
                )
            # ... while a later one commits and is pushed
            cycle(db_dsn, stopped("v0"), stopped("v1"))
            first = recv_until(ws, lambda f: f["type"] == "incident")
            assert first["incident"]["vehicle_id"] == "v1"
            late.commit()
        pushed = [recv_until(ws, lambda f: f["type"] == "incident") for _ in range(holes)]
        assert [f["actor"] for f in pushed] == ["late-desk"] * holes
        ws.close()
