"""Incidents: the alerts folded into what an operator works.

The ``alerts`` rows (:mod:`analytics.alerts`) are the evidence: one per condition, i.e.
per kind and van (pair), open while it holds. An incident folds them:

* **bunching**, **gap**: one incident per kind, route and direction while the condition
  holds for any pair there; its vans are the set of vans of its open alerts, updated as
  pairs join and leave;
* **stopped**, **offline**: one incident per van.

Each analytics cycle, after the alerts are reconciled, :func:`reconcile_incidents`

1. links every open alert without an incident to the unresolved incident of its scope,
   opening one when there is none (so a new pair, or a pair that bunches again after it
   cleared, on a route whose incident a human resolved opens a *new* incident);
2. for every incident whose condition still held at the previous cycle: no open alert
   left for ``FLEET_ANALYTICS_INCIDENT_CLEAR_S`` (120 s; ``clear_since`` marks when it cleared) →
   the condition ended (``ended_at``, the moment it cleared); an incident nobody resolved
   is then resolved by the system (``resolved_by = 'system'``). Otherwise the vans are
   brought up to date (announced as 'updated' while the incident is not resolved).

A human resolve (the API) does not end the condition: the resolved incident keeps the
alerts it has until they clear, so a pair that simply keeps bunching does not reopen it.
Every change is one row of ``incident_events`` (opened, updated, acknowledged, resolved,
ended) with who made it; the API polls that table and pushes each change live.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Final

import psycopg

__all__ = [
    "ROUTE_KINDS",
    "SYSTEM_ACTOR",
    "IncidentChanges",
    "incident_scope",
    "reconcile_incidents",
]

log = logging.getLogger(__name__)

#: Kinds folded per route and direction; every other kind is one incident per van.
ROUTE_KINDS: Final = frozenset({"bunching", "gap"})
#: Who changed an incident when no human did (opened, updated, auto-resolved, ended).
SYSTEM_ACTOR: Final = "system"


@dataclass(frozen=True)
class IncidentChanges:
    opened: int = 0
    updated: int = 0
    resolved: int = 0  # by the system: the condition cleared
    ended: int = 0  # already resolved by a human, now the condition cleared too


def incident_scope(
    kind: str, route: str | None, direction: int | None, vehicle_id: str | None
) -> str:
    """What an alert folds by: ``'<route>/<direction>'`` (bunching, gap) or its van."""
    if kind in ROUTE_KINDS and route is not None:
        return f"{route}/{'' if direction is None else direction}"
    return vehicle_id or ""


@dataclass(frozen=True)
class _OpenAlert:
    id: int
    kind: str
    route: str | None
    direction: int | None
    vehicle_id: str | None
    other_vehicle_id: str | None
    lat: float | None
    lon: float | None
    incident_id: int | None

    @property
    def scope(self) -> str:
        return incident_scope(self.kind, self.route, self.direction, self.vehicle_id)

    @property
    def vans(self) -> set[str]:
        return {v for v in (self.vehicle_id, self.other_vehicle_id) if v}


def _event(
    conn: psycopg.Connection, incident_id: int, event: str, vans: list[str], note: str | None = None
) -> None:
    conn.execute(
        "INSERT INTO incident_events (incident_id, event, actor, note, vans)"
        " VALUES (%s, %s, %s, %s, %s)",
        (incident_id, event, SYSTEM_ACTOR, note, vans),
    )


def _link_new_alerts(conn: psycopg.Connection, alerts: list[_OpenAlert]) -> set[int]:
    """Give every open alert without an incident one; returns the incidents opened."""
    groups: dict[tuple[str, str], list[_OpenAlert]] = defaultdict(list)
    for a in alerts:
        if a.incident_id is None:
            groups[(a.kind, a.scope)].append(a)
    opened: set[int] = set()
    for (kind, scope), members in groups.items():
        row = conn.execute(
            "SELECT id FROM incidents WHERE kind = %s AND scope = %s AND resolved_at IS NULL"
            " FOR UPDATE",
            (kind, scope),
        ).fetchone()
        if row is None:
            first = members[0]
            per_van = kind not in ROUTE_KINDS
            row = conn.execute(
                """INSERT INTO incidents (kind, scope, route, direction, vehicle_id, lat, lon)
                   VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id""",
                (
                    kind,
                    scope,
                    first.route,
                    first.direction,
                    first.vehicle_id if per_van else None,
                    first.lat,
                    first.lon,
                ),
            ).fetchone()
            assert row is not None
            opened.add(int(row[0]))
        conn.execute(
            "UPDATE alerts SET incident_id = %s WHERE id = ANY(%s)",
            (row[0], [a.id for a in members]),
        )
    return opened


def reconcile_incidents(conn: psycopg.Connection, clear_after_s: float = 0.0) -> IncidentChanges:
    """Fold the open alerts into incidents (see the module's description); run inside
    the analytics cycle's transaction, after :func:`analytics.alerts.reconcile_alerts`.

    ``clear_after_s``: an incident whose condition cleared ends only once it has stayed
    clear that long (``clear_since``); a pair that bunches again meanwhile continues the
    same incident, so a condition that flickers at the threshold is one incident, not one
    per cycle. Its end is the moment it cleared."""
    alerts = [
        _OpenAlert(*r)
        for r in conn.execute(
            "SELECT id, kind, route, direction, vehicle_id, other_vehicle_id, lat, lon,"
            " incident_id FROM alerts WHERE resolved_at IS NULL ORDER BY id"
        )
    ]
    opened = _link_new_alerts(conn, alerts)
    by_incident: dict[int, list[_OpenAlert]] = defaultdict(list)
    for a in conn.execute(
        "SELECT id, kind, route, direction, vehicle_id, other_vehicle_id, lat, lon,"
        " incident_id FROM alerts WHERE resolved_at IS NULL AND incident_id IS NOT NULL"
        " ORDER BY id"
    ):
        alert = _OpenAlert(*a)
        assert alert.incident_id is not None
        by_incident[alert.incident_id].append(alert)
    updated = resolved = ended = 0
    current = conn.execute(
        "SELECT id, active_vans, resolved_at IS NOT NULL, clear_since IS NOT NULL,"
        " clear_since <= now() - make_interval(secs => %s) FROM incidents"
        " WHERE ended_at IS NULL ORDER BY id",
        (clear_after_s,),
    ).fetchall()
    for incident_id, active, was_resolved, clearing, clear_long_enough in current:
        members = by_incident.get(incident_id, [])
        vans = sorted(set().union(*(a.vans for a in members)))
        if not vans and clear_after_s > 0 and not clear_long_enough:
            if not clearing:  # it just cleared: wait and see whether it stays clear
                conn.execute(
                    "UPDATE incidents SET clear_since = now(), active_vans = '{}' WHERE id = %s",
                    (incident_id,),
                )
                if not was_resolved:
                    updated += 1
                    _event(
                        conn,
                        incident_id,
                        "updated",
                        [],
                        f"the condition cleared; ends if it stays clear for {clear_after_s:g} s",
                    )
            continue
        if not vans:
            auto = conn.execute(
                """UPDATE incidents SET ended_at = coalesce(clear_since, now()),
                          active_vans = '{}', resolved_at = now(), resolved_by = %s
                   WHERE id = %s AND resolved_at IS NULL""",
                (SYSTEM_ACTOR, incident_id),
            ).rowcount
            if auto:
                resolved += 1
                _event(conn, incident_id, "resolved", [], "the condition cleared")
            else:  # resolved by a human (before or during this cycle)
                conn.execute(
                    "UPDATE incidents SET ended_at = coalesce(clear_since, now()),"
                    " active_vans = '{}' WHERE id = %s",
                    (incident_id,),
                )
                ended += 1
                _event(conn, incident_id, "ended", [], "the condition cleared")
            log.info("incident %s %s", incident_id, "resolved" if auto else "ended")
            continue
        if incident_id not in opened and vans == sorted(active):
            continue
        newest = members[-1]
        conn.execute(
            """UPDATE incidents SET active_vans = %s, clear_since = NULL,
                      lat = coalesce(%s, lat),
                      lon = coalesce(%s, lon),
                      vans = ARRAY(SELECT DISTINCT v FROM unnest(vans || %s::text[]) v ORDER BY v)
               WHERE id = %s""",
            (vans, newest.lat, newest.lon, vans, incident_id),
        )
        if incident_id in opened:
            _event(conn, incident_id, "opened", vans)
            log.info("incident %s opened", incident_id, extra={"vans": vans})
        elif not was_resolved:  # a resolved one's vans are kept, not announced
            updated += 1
            _event(conn, incident_id, "updated", vans)
    return IncidentChanges(len(opened), updated, resolved, ended)
