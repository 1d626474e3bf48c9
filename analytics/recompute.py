"""Recompute passages and segment traversals for van time windows, idempotently.

For each (van, route) the detector reports the span between its first and last stable
fix in the window; every crossing strictly inside that span depends only on fixes in
the window.  So the stored passages strictly inside the span are deleted and replaced
by the new ones, and nothing outside it is touched: running the same window twice, or
overlapping windows, or a late store-and-forward batch that lands in the middle of
already-processed data, all leave exactly one row per true passage.

Segment traversals (successive passages of one van at adjacent checkpoints, same
direction) are then rebuilt in SQL over the affected span plus ``max_traversal_s`` on
both sides, from the passages table itself.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg

from analytics.fix_arrays import Window, load_window_fixes
from analytics.passages import RouteLine, detect_crossings

__all__ = ["RecomputeResult", "RouteSpan", "recompute_windows"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RouteSpan:
    vehicle_id: str
    route: str
    lo: datetime
    hi: datetime


@dataclass
class RecomputeResult:
    fixes: int = 0
    passages: int = 0
    spans: list[RouteSpan] | None = None


def _ts(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def recompute_windows(
    conn: psycopg.Connection,
    lines: Mapping[str, RouteLine],
    windows: list[Window],
    max_traversal_s: float = 1800.0,
) -> RecomputeResult:
    """Detect passages in the windows and replace the stored ones (caller commits)."""
    codes = list(lines)
    fixes = load_window_fixes(conn, windows, codes)
    result = RecomputeResult(fixes=len(fixes), spans=[])
    passage_rows: list[tuple[str, datetime, str, int, int, str]] = []
    spans: list[RouteSpan] = []
    for r_idx, code in enumerate(codes):
        mask = fixes.route == r_idx
        if not mask.any():
            continue
        line = lines[code]
        det = detect_crossings(
            line, fixes.window[mask], fixes.t[mask], fixes.lat[mask], fixes.lon[mask]
        )
        for g, lo, hi in zip(det.span_group, det.span_lo, det.span_hi, strict=True):
            if hi > lo:
                spans.append(RouteSpan(windows[int(g)].vehicle_id, code, _ts(lo), _ts(hi)))
        c = det.crossings
        seqs = line.checkpoint_seq[c.checkpoint]
        for g, seq, cp, direction, t in zip(
            c.group.tolist(),
            seqs.tolist(),
            c.checkpoint.tolist(),
            c.direction.tolist(),
            c.t.tolist(),
            strict=True,
        ):
            passage_rows.append(
                (windows[g].vehicle_id, _ts(t), code, direction, seq, line.checkpoint_ids[cp])
            )
    result.spans = spans
    result.passages = len(passage_rows)
    if not spans:
        return result
    vids = [s.vehicle_id for s in spans]
    rts = [s.route for s in spans]
    los = [s.lo for s in spans]
    his = [s.hi for s in spans]
    # The new passages go to a staging table first; then only what changed is written:
    # a stored passage strictly inside a span that is not detected again is deleted, a
    # detected one not stored yet is inserted, and the others — most of each window,
    # which the loop re-reads every cycle — are left alone. Deleting and re-inserting
    # them all left thousands of dead rows a cycle, which autovacuum clears only after a
    # share of the table's size (docs/benchmarks.md, "History and the present").
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS passages_stage (LIKE passages INCLUDING DEFAULTS)"
    )
    conn.execute("TRUNCATE passages_stage")
    if passage_rows:
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY passages_stage"
                " (vehicle_id, ts, route, direction, checkpoint_seq, checkpoint_id) FROM STDIN"
            ) as copy,
        ):
            for row in passage_rows:
                copy.write_row(row)
    conn.execute(
        """
        DELETE FROM passages p
        USING unnest(%s::text[], %s::text[], %s::timestamptz[], %s::timestamptz[])
              AS s(vehicle_id, route, lo, hi)
        WHERE p.vehicle_id = s.vehicle_id AND p.route = s.route
          AND p.ts > s.lo AND p.ts < s.hi
          AND NOT EXISTS (
              SELECT 1 FROM passages_stage n
              WHERE n.vehicle_id = p.vehicle_id AND n.ts = p.ts AND n.route = p.route
                AND n.checkpoint_seq = p.checkpoint_seq AND n.direction = p.direction
                AND n.checkpoint_id = p.checkpoint_id
          )
        """,
        (vids, rts, los, his),
    )
    if passage_rows:
        # A crossing timed exactly at a span edge (clipped interpolation) may already be
        # stored; it must not fail the whole cycle.
        conn.execute("INSERT INTO passages SELECT * FROM passages_stage ON CONFLICT DO NOTHING")
    _rebuild_traversals(conn, lines, spans, max_traversal_s)
    return result


def _rebuild_traversals(
    conn: psycopg.Connection,
    lines: Mapping[str, RouteLine],
    spans: list[RouteSpan],
    max_traversal_s: float,
) -> None:
    margin = timedelta(seconds=max_traversal_s)
    # Segment lengths per route: checkpoint distances by seq.
    seg_route: list[str] = []
    seg_seq: list[int] = []
    seg_dist: list[float] = []
    for code, line in lines.items():
        seg_route += [code] * line.checkpoint_seq.size
        seg_seq += line.checkpoint_seq.tolist()
        seg_dist += line.checkpoint_dist.tolist()
    vids = [s.vehicle_id for s in spans]
    rts = [s.route for s in spans]
    los = [s.lo - margin for s in spans]
    his = [s.hi + margin for s in spans]
    # The spans' traversals into a staging table, then only what changed is written (as
    # for the passages). Each span's passages are read on their own (LATERAL), a range
    # scan of the (vehicle_id, ts, …) key: as a plain join the planner cannot see how
    # narrow each span is. The route is filtered after the scan (OFFSET 0 keeps it out of
    # the index condition): with `route = …` there, PostgreSQL 18 prices the key above
    # the (route, direction, checkpoint_seq, ts) index and reads every passage of the
    # route in the range (1.4 ms a span at 20 M rows, against 0.05 ms through the key).
    # The spans' rows are materialized before the checkpoint joins, which the
    # planner would otherwise re-run the scan under (docs/benchmarks.md, "History and
    # the present").
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS traversals_stage"
        " (LIKE segment_traversals INCLUDING DEFAULTS)"
    )
    conn.execute("TRUNCATE traversals_stage")
    conn.execute(
        """
        INSERT INTO traversals_stage
            (vehicle_id, ts, route, direction, from_seq, to_seq, travel_s, length_m, speed_mps)
        WITH cp AS (
            SELECT * FROM unnest(%s::text[], %s::int[], %s::float8[]) AS cp(route, seq, dist)
        ), q AS MATERIALIZED (
            SELECT s.vehicle_id, s.route, s.lo, p.*
            FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::timestamptz[])
                 AS s(vehicle_id, route, lo, hi)
            CROSS JOIN LATERAL (
                SELECT p.ts, p.direction, p.checkpoint_seq,
                       lag(p.ts) OVER w AS prev_ts,
                       lag(p.checkpoint_seq) OVER w AS prev_seq,
                       lag(p.direction) OVER w AS prev_dir
                FROM (
                    SELECT ts, route, direction, checkpoint_seq
                    FROM passages
                    WHERE vehicle_id = s.vehicle_id AND ts >= s.lo AND ts < s.hi
                    OFFSET 0
                ) p
                WHERE p.route = s.route
                WINDOW w AS (ORDER BY p.ts)
            ) p
        )
        SELECT q.vehicle_id, q.ts, q.route, q.direction, q.prev_seq, q.checkpoint_seq,
               extract(epoch FROM q.ts - q.prev_ts),
               abs(b.dist - a.dist),
               abs(b.dist - a.dist) / extract(epoch FROM q.ts - q.prev_ts)
        FROM q
        JOIN cp a ON a.route = q.route AND a.seq = q.prev_seq
        JOIN cp b ON b.route = q.route AND b.seq = q.checkpoint_seq
        WHERE q.ts > q.lo + %s
          AND q.prev_dir = q.direction
          AND q.checkpoint_seq - q.prev_seq = CASE q.direction WHEN 0 THEN 1 ELSE -1 END
          AND q.ts - q.prev_ts <= %s AND q.ts > q.prev_ts
        """,
        (seg_route, seg_seq, seg_dist, vids, rts, los, his, margin, margin),
    )
    conn.execute(
        """
        DELETE FROM segment_traversals t
        USING unnest(%s::text[], %s::text[], %s::timestamptz[], %s::timestamptz[])
              AS s(vehicle_id, route, lo, hi)
        WHERE t.vehicle_id = s.vehicle_id AND t.route = s.route
          AND t.ts > s.lo + %s AND t.ts < s.hi
          AND NOT EXISTS (
              SELECT 1 FROM traversals_stage n
              WHERE n.vehicle_id = t.vehicle_id AND n.ts = t.ts AND n.route = t.route
                AND n.from_seq = t.from_seq AND n.direction = t.direction
                AND n.to_seq = t.to_seq AND n.travel_s = t.travel_s
                AND n.length_m = t.length_m AND n.speed_mps = t.speed_mps
          )
        """,
        (vids, rts, los, his, margin),
    )
    conn.execute(
        "INSERT INTO segment_traversals SELECT * FROM traversals_stage ON CONFLICT DO NOTHING"
    )
    log.debug("rebuilt segment traversals", extra={"spans": len(spans)})


def passages_per_route(conn: psycopg.Connection) -> dict[str, int]:
    """Row counts per route (diagnostics)."""
    return {
        str(r): int(n)
        for r, n in conn.execute("SELECT route, count(*) FROM passages GROUP BY route")
    }
