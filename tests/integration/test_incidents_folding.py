"""Incidents fold the alerts: one per kind, route and direction for bunching and gaps, one
per van for stopped and offline; cleared → resolved by the system; a human resolve lasts
while the condition does, and a reoccurrence opens a new incident.

Seeded through the analytics' own functions: ``reconcile_alerts`` with the conditions one
cycle found (as ``evaluate_alerts`` returns them), then ``reconcile_incidents``; and once
end to end from fixes through the analytics loop.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg_pool import AsyncConnectionPool

from analytics.incidents import IncidentChanges
from analytics.loop import AnalyticsLoop
from analytics.settings import AnalyticsSettings
from api.incidents import act_on_incident
from api.tokens import Role, TokenInfo
from fleet.contract import Fix
from fleet.routes import load_routes
from tests.fixtures.analytics import insert_fixes
from tests.fixtures.incidents import bunching, cycle, stopped
from tests.fixtures.waiting import wait_for


def incidents(dsn: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            """SELECT id, kind, route, direction, vehicle_id, vans, active_vans,
                      ended_at IS NOT NULL, resolved_by
               FROM incidents ORDER BY id"""
        ).fetchall()


def events(dsn: str, incident_id: object) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT event, actor, vans FROM incident_events WHERE incident_id = %s ORDER BY id",
            (incident_id,),
        ).fetchall()


def human_resolve(dsn: str, incident_id: object, who: str = "ops-desk") -> None:
    """The API's resolve (what POST /api/v1/incidents/{id}/resolve runs)."""

    async def run() -> None:
        async with AsyncConnectionPool(dsn, kwargs={"autocommit": True}, open=False) as pool:
            operator = TokenInfo(1, who, Role.OPERATOR)
            await act_on_incident(pool, int(str(incident_id)), "resolve", operator, None)

    asyncio.run(run())


def test_bunching_pairs_on_one_route_and_direction_fold_into_one_incident(db_dsn: str) -> None:
    changes = cycle(
        db_dsn,
        bunching("b2", "b1"),
        bunching("b3", "b2"),
        bunching("b7", "b6"),
        bunching("c2", "c1", direction=1),  # the other direction: its own incident
        stopped("s1"),
        stopped("s2"),  # per van
    )
    assert changes == IncidentChanges(opened=4)
    rows = incidents(db_dsn)
    assert [(r[1], r[2], r[3], r[4], r[6]) for r in rows] == [
        ("bunching", "B", 0, None, ["b1", "b2", "b3", "b6", "b7"]),
        ("bunching", "B", 1, None, ["c1", "c2"]),
        ("stopped", "B", None, "s1", ["s1"]),
        ("stopped", "B", None, "s2", ["s2"]),
    ]
    route_b = rows[0][0]
    with psycopg.connect(db_dsn) as conn:
        evidence = conn.execute(
            "SELECT count(*) FROM alerts WHERE incident_id = %s", (route_b,)
        ).fetchone()
    assert evidence == (3,)  # the pairs stay as the evidence
    assert events(db_dsn, route_b) == [("opened", "system", ["b1", "b2", "b3", "b6", "b7"])]

    # the same conditions again: nothing changes, nothing is announced
    assert (
        cycle(
            db_dsn,
            bunching("b2", "b1"),
            bunching("b3", "b2"),
            bunching("b7", "b6"),
            bunching("c2", "c1", direction=1),
            stopped("s1"),
            stopped("s2"),
        )
        == IncidentChanges()
    )

    # pairs leave and join: one 'updated' with the vans now; `vans` keeps everyone involved
    changes = cycle(
        db_dsn,
        bunching("b3", "b2"),
        bunching("b9", "b8"),
        bunching("c2", "c1", direction=1),
        stopped("s1"),
        stopped("s2"),
    )
    assert changes == IncidentChanges(updated=1)
    row = incidents(db_dsn)[0]
    assert row[6] == ["b2", "b3", "b8", "b9"]
    assert row[5] == ["b1", "b2", "b3", "b6", "b7", "b8", "b9"]
    assert events(db_dsn, route_b)[-1] == ("updated", "system", ["b2", "b3", "b8", "b9"])


def test_a_cleared_condition_is_resolved_by_the_system(db_dsn: str) -> None:
    cycle(db_dsn, bunching("b2", "b1"), bunching("b3", "b2"), stopped("s1"))
    assert cycle(db_dsn, stopped("s1")) == IncidentChanges(resolved=1)
    (route_b, stop) = incidents(db_dsn)
    assert route_b[6] == [] and route_b[7] is True and route_b[8] == "system"
    assert stop[7] is False and stop[8] is None
    assert events(db_dsn, route_b[0])[-1] == ("resolved", "system", [])
    with psycopg.connect(db_dsn) as conn:
        lasted = conn.execute(
            "SELECT ended_at >= started_at, resolved_at = ended_at FROM incidents WHERE id = %s",
            (route_b[0],),
        ).fetchone()
    assert lasted == (True, True)
    # bunching there again later: a new incident (the old one stays in the history)
    assert cycle(db_dsn, bunching("b2", "b1"), stopped("s1")) == IncidentChanges(opened=1)
    assert [r[7] for r in incidents(db_dsn) if r[1] == "bunching"] == [True, False]


def test_a_flickering_condition_is_one_incident_until_it_stays_clear(db_dsn: str) -> None:
    hold = 0.5
    cycle(db_dsn, bunching("b2", "b1"), clear_after_s=hold)
    (first,) = incidents(db_dsn)
    # cleared: the incident waits (no vans in it now), it does not end
    assert cycle(db_dsn, clear_after_s=hold) == IncidentChanges(updated=1)
    (row,) = incidents(db_dsn)
    assert row[6] == [] and row[7] is False and row[8] is None
    # bunching again within the hold, another pair even: the same incident goes on
    assert cycle(db_dsn, bunching("b3", "b2"), clear_after_s=hold) == IncidentChanges(updated=1)
    (row,) = incidents(db_dsn)
    assert row[0] == first[0] and row[6] == ["b2", "b3"] and row[5] == ["b1", "b2", "b3"]
    # clear again, and it stays clear: ended by the system once the hold has passed, its
    # end the moment it cleared
    assert cycle(db_dsn, clear_after_s=hold) == IncidentChanges(updated=1)
    with psycopg.connect(db_dsn) as conn:
        (cleared_at,) = conn.execute("SELECT clear_since FROM incidents").fetchone()  # type: ignore[misc]
    ended = wait_for(
        lambda: cycle(db_dsn, clear_after_s=hold).resolved == 1, 10, "the hold to pass", 0.05
    )
    assert ended
    with psycopg.connect(db_dsn) as conn:
        row2 = conn.execute("SELECT ended_at, resolved_at, resolved_by FROM incidents").fetchone()
    assert row2 is not None and row2[0] == cleared_at and row2[1] > row2[0]
    assert row2[2] == "system"
    assert [e[0] for e in events(db_dsn, first[0])] == [
        "opened", "updated", "updated", "updated", "resolved",
    ]  # fmt: skip


def test_after_a_human_resolve_only_a_reoccurrence_opens_a_new_incident(db_dsn: str) -> None:
    cycle(db_dsn, bunching("b2", "b1"))
    (first,) = incidents(db_dsn)
    human_resolve(db_dsn, first[0])
    # the same pair keeps bunching: still the resolved incident's, no new one
    assert cycle(db_dsn, bunching("b2", "b1")) == IncidentChanges()
    assert len(incidents(db_dsn)) == 1
    # it clears: the resolved incident's condition ended (resolved by the human still)
    assert cycle(db_dsn) == IncidentChanges(ended=1)
    (first,) = incidents(db_dsn)
    assert first[7] is True and first[8] == "ops-desk"
    assert [e[0] for e in events(db_dsn, first[0])] == ["opened", "resolved", "ended"]
    # ... and reoccurs: a new incident
    assert cycle(db_dsn, bunching("b2", "b1")) == IncidentChanges(opened=1)
    second = incidents(db_dsn)[1]
    assert second[0] != first[0] and second[6] == ["b1", "b2"] and second[8] is None

    # a new pair on a route whose incident a human resolved, while the old pair still
    # bunches: new trouble, a new incident (the old pair stays with the resolved one)
    human_resolve(db_dsn, second[0])
    assert cycle(db_dsn, bunching("b2", "b1"), bunching("b5", "b4")) == IncidentChanges(opened=1)
    third = incidents(db_dsn)[2]
    assert third[6] == ["b4", "b5"]
    assert incidents(db_dsn)[1][6] == ["b1", "b2"]  # still holding, still resolved

    # a stopped van resolved by hand and stopped again after driving off: new incident
    cycle(db_dsn, stopped("s1"))
    stop = next(r for r in incidents(db_dsn) if r[1] == "stopped")
    human_resolve(db_dsn, stop[0])
    cycle(db_dsn, stopped("s1"))
    assert [r[0] for r in incidents(db_dsn) if r[1] == "stopped"] == [stop[0]]
    cycle(db_dsn)
    cycle(db_dsn, stopped("s1"))
    assert len([r for r in incidents(db_dsn) if r[1] == "stopped"]) == 2


def test_bunching_vans_from_their_fixes_make_one_incident(db_dsn: str) -> None:
    """End to end through the analytics loop: three vans driving route B close behind
    each other are two bunching pairs and one incident of three vans."""
    route = load_routes()["B"]
    loop = AnalyticsLoop(db_dsn, {"B": route}, AnalyticsSettings())
    now = datetime.now(UTC)
    t0 = now - timedelta(seconds=600)
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        for vid, lag_s in (("pp-a", 0), ("pp-b", 20), ("pp-c", 40)):
            fixes = []
            for k in range(0, 600, 5):
                lat, lon = route.position_at(100 + 8.0 * max(0, k - lag_s))
                ts = int((t0 + timedelta(seconds=k)).timestamp() * 1000)
                fixes.append(
                    (vid, Fix(ts=ts, lat=float(lat), lon=float(lon), speed=8.0, route="B"))
                )
            insert_fixes(conn, fixes)
        stats = loop.run_once()
        assert stats.incidents_opened == 1
        pairs = conn.execute(
            "SELECT count(*) FROM alerts WHERE kind = 'bunching' AND resolved_at IS NULL"
        ).fetchone()
        assert pairs == (2,)
        rows = conn.execute(
            "SELECT kind, route, direction, active_vans FROM incidents WHERE kind = 'bunching'"
        ).fetchall()
    assert rows == [("bunching", "B", 0, ["pp-a", "pp-b", "pp-c"])]
