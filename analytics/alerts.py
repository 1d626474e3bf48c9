"""Operational alerts: bunching, gap, stopped van, offline van.

Each cycle computes the set of conditions that hold *now*; the ``alerts`` table is
reconciled against it: a new condition opens an alert (one open alert per kind and van
or van pair, enforced by a partial unique index), a condition that no longer holds
resolves it (``resolved_at``).  These rows are the evidence; what an operator works
is the incident they fold into (:mod:`analytics.incidents`, reconciled right after), whose
changes the API pushes live.

* **bunching**: a van's latest headway behind the van ahead of it (same route,
  direction and checkpoint) is ≤ ``bunching_factor`` × reference headway (target H,
  else the median of the last hour's headways there), or the two vans are within
  ``bunching_distance_m`` of each other along the route in the same direction.
* **gap**: that headway is ≥ ``gap_factor`` × reference.
* **stopped**: all of a van's fixes of the last ``stopped_minutes`` lie within
  ``stopped_radius_m`` and it is more than ``terminal_radius_m`` from both terminals.
* **offline**: no fix for ``offline_minutes`` (vans seen in the last day), and its
  newest fix did not arrive within that time either (a van uploading a backlog of old
  fixes is not offline).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg

from analytics.passages import RouteLine
from analytics.settings import AnalyticsSettings

__all__ = ["AlertCondition", "evaluate_alerts", "reconcile_alerts"]

log = logging.getLogger(__name__)

_DEG_M = 111_195.0  # metres per degree of latitude on the mean sphere


@dataclass(frozen=True)
class AlertCondition:
    kind: str
    vehicle_id: str
    other_vehicle_id: str | None = None
    route: str | None = None
    direction: int | None = None
    lat: float | None = None
    lon: float | None = None
    detail: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.vehicle_id, self.other_vehicle_id or "")


def _offline(conn: psycopg.Connection, s: AnalyticsSettings) -> list[AlertCondition]:
    rows = conn.execute(
        """
        SELECT v.vehicle_id, v.route, v.lat, v.lon, v.last_ts,
               extract(epoch FROM now() - v.last_ts)::float8
        FROM vehicles v
        WHERE v.last_ts < now() - make_interval(secs => %(silent)s)
          AND v.last_ts > now() - interval '1 day'
          -- a van uploading old fixes (a store-and-forward backlog, a replay catching
          -- up) is talking to us: its newest fix arrived recently (one key lookup)
          AND NOT EXISTS (
              SELECT 1 FROM positions p
              WHERE p.vehicle_id = v.vehicle_id AND p.ts = v.last_ts
                AND p.received_at > now() - make_interval(secs => %(silent)s)
          )
        """,
        {"silent": s.offline_minutes * 60},
    ).fetchall()
    return [
        AlertCondition(
            "offline",
            vid,
            None,
            route,
            None,
            lat,
            lon,
            {"last_fix": ts.isoformat(), "silent_s": round(silent)},
        )
        for vid, route, lat, lon, ts, silent in rows
    ]


def _stopped(
    conn: psycopg.Connection, lines: Mapping[str, RouteLine], s: AnalyticsSettings
) -> list[AlertCondition]:
    window = s.stopped_minutes * 60
    # Per van, its own last minutes through the (vehicle_id, ts) key: LATERAL keeps it a
    # range scan per van. As a plain join the planner cannot see how narrow each van's
    # range is and hashes the whole positions table (4.5 s at 20 M rows, every cycle).
    rows = conn.execute(
        """
        SELECT v.vehicle_id, v.route, v.lat, v.lon, p.dlat, p.dlon, p.covered
        FROM vehicles v
        CROSS JOIN LATERAL (
            SELECT max(lat) - min(lat) AS dlat, max(lon) - min(lon) AS dlon,
                   extract(epoch FROM v.last_ts - min(ts))::float8 AS covered
            FROM positions
            WHERE vehicle_id = v.vehicle_id
              AND ts >= v.last_ts - make_interval(secs => %s) AND ts <= v.last_ts
            HAVING count(*) > 0
        ) p
        WHERE v.last_ts >= now() - make_interval(secs => %s)
        """,
        (window * 1.2, s.offline_minutes * 60),
    ).fetchall()
    out: list[AlertCondition] = []
    for vid, route, lat, lon, dlat, dlon, covered in rows:
        if covered < window:
            continue
        extent = float(np.hypot(dlat * _DEG_M, dlon * _DEG_M * np.cos(np.radians(lat))))
        if extent > s.stopped_radius_m:
            continue
        line = lines.get(route) if route else None
        if line is not None:
            along, offset = line.project(np.array([lat]), np.array([lon]))
            d = float(along[0])
            near_end = min(d, line.length_m - d) <= s.terminal_radius_m
            if offset[0] <= s.max_offset_m and near_end:
                continue
        out.append(
            AlertCondition(
                "stopped",
                vid,
                None,
                route,
                None,
                lat,
                lon,
                {"stopped_s": round(covered), "extent_m": round(extent, 1)},
            )
        )
    return out


def _headway_alerts(
    conn: psycopg.Connection,
    lines: Mapping[str, RouteLine],
    s: AnalyticsSettings,
    targets: Mapping[str, float | None],
) -> list[AlertCondition]:
    """Bunching and gap from each online van's latest passage and the van ahead of it."""
    # Per online van, its latest passage of the last two hours through the
    # (vehicle_id, ts, …) key, and the passage just before it at that checkpoint (the
    # van ahead) through the (route, direction, checkpoint_seq, ts) index: two short
    # range scans per van (LATERAL). Windowing and sorting every passage of the two
    # hours instead took 218 ms a cycle at 1 M rows of history and 441 ms at 20 M (heap
    # fetches where the visibility map is not set, a sort on disk; docs/benchmarks.md,
    # "History and the present").
    # Ties in ts at one checkpoint are ordered by vehicle_id. The reference for a route
    # without a target headway is the median of its last hour's headways: only those
    # routes (and directions) window their two hours of passages, through the same
    # index; a route with a target never needs it.
    targeted = [code for code, target in targets.items() if target]
    rows = conn.execute(
        """
        WITH latest AS (
            SELECT v.vehicle_id, v.lat, v.lon, p.ts, p.route, p.direction, p.checkpoint_seq
            FROM vehicles v
            CROSS JOIN LATERAL (
                SELECT ts, route, direction, checkpoint_seq
                FROM passages
                WHERE vehicle_id = v.vehicle_id AND ts > now() - interval '2 hours'
                ORDER BY ts DESC
                LIMIT 1
            ) p
            WHERE v.last_ts >= now() - make_interval(secs => %s)
        ), med AS (
            SELECT r.route, r.direction, h.median_s
            FROM (
                SELECT DISTINCT route, direction FROM latest
                WHERE route <> ALL(%s::text[])
            ) r
            CROSS JOIN LATERAL (
                SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY headway_s) AS median_s
                FROM (
                    SELECT ts, extract(epoch FROM ts - lag(ts) OVER w)::float8 AS headway_s
                    FROM passages
                    WHERE route = r.route AND direction = r.direction
                      AND ts > now() - interval '2 hours'
                    WINDOW w AS (PARTITION BY checkpoint_seq ORDER BY ts)
                ) h
                WHERE ts > now() - interval '1 hour' AND headway_s > 0
            ) h
        )
        SELECT l.vehicle_id, l.route, l.direction, l.checkpoint_seq, b.vehicle_id,
               extract(epoch FROM l.ts - b.ts)::float8, m.median_s, l.lat, l.lon, a.lat, a.lon
        FROM latest l
        CROSS JOIN LATERAL (
            SELECT vehicle_id, ts
            FROM passages
            WHERE route = l.route AND direction = l.direction
              AND checkpoint_seq = l.checkpoint_seq
              AND ts > now() - interval '2 hours' AND ts <= l.ts
              AND (ts, vehicle_id) < (l.ts, l.vehicle_id)
            ORDER BY ts DESC, vehicle_id DESC
            LIMIT 1
        ) b
        LEFT JOIN vehicles a ON a.vehicle_id = b.vehicle_id
        LEFT JOIN med m ON m.route = l.route AND m.direction = l.direction
        WHERE b.vehicle_id <> l.vehicle_id
        """,
        (s.offline_minutes * 60, targeted),
    ).fetchall()
    out: list[AlertCondition] = []
    for vid, route, direction, seq, ahead, h, median, lat, lon, alat, alon in rows:
        ref = targets.get(route) or median
        if not ref or h is None:
            continue
        gap_m = float("nan")
        line = lines.get(route)
        if line is not None and alat is not None and lat is not None:
            along, _ = line.project(np.array([lat, alat]), np.array([lon, alon]))
            gap_m = float(abs(along[1] - along[0]))
        detail = {
            "checkpoint_seq": seq,
            "headway_s": round(h, 1),
            "reference_s": round(ref, 1),
            "distance_m": None if not np.isfinite(gap_m) else round(gap_m),
        }
        if h <= s.bunching_factor * ref or gap_m <= s.bunching_distance_m:
            out.append(AlertCondition("bunching", vid, ahead, route, direction, lat, lon, detail))
        elif h >= s.gap_factor * ref:
            out.append(AlertCondition("gap", vid, ahead, route, direction, lat, lon, detail))
    return out


def evaluate_alerts(
    conn: psycopg.Connection,
    lines: Mapping[str, RouteLine],
    settings: AnalyticsSettings,
    targets: Mapping[str, float | None],
) -> list[AlertCondition]:
    """All alert conditions that hold now."""
    return (
        _offline(conn, settings)
        + _stopped(conn, lines, settings)
        + _headway_alerts(conn, lines, settings, targets)
    )


def reconcile_alerts(conn: psycopg.Connection, conditions: list[AlertCondition]) -> tuple[int, int]:
    """Open new alerts, resolve vanished ones; returns (opened, resolved)."""
    wanted = {c.key: c for c in conditions}
    open_rows = conn.execute(
        "SELECT id, kind, coalesce(vehicle_id, ''), coalesce(other_vehicle_id, '')"
        " FROM alerts WHERE resolved_at IS NULL"
    ).fetchall()
    open_keys = {(k, v, o): i for i, k, v, o in open_rows}
    resolved = [i for key, i in open_keys.items() if key not in wanted]
    if resolved:
        for (aid,) in conn.execute(
            "UPDATE alerts SET resolved_at = now() WHERE id = ANY(%s) RETURNING id", (resolved,)
        ).fetchall():
            log.info("alert resolved", extra={"alert_id": aid})
    opened = 0
    for key, c in wanted.items():
        if key in open_keys:
            continue
        row = conn.execute(
            """
            INSERT INTO alerts (kind, route, direction, vehicle_id, other_vehicle_id, lat, lon,
                                detail)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb)
            ON CONFLICT DO NOTHING
            RETURNING id
            """,
            (
                c.kind,
                c.route,
                c.direction,
                c.vehicle_id,
                c.other_vehicle_id,
                c.lat,
                c.lon,
                json.dumps(c.detail),
            ),
        ).fetchone()
        if row is not None:
            opened += 1
            log.info(
                "alert opened",
                extra={"alert_id": row[0], "kind": c.kind, "vehicle_id": c.vehicle_id},
            )
    return opened, len(resolved)
