"""fleet bench history's preload is a consistent past and its loop measurement runs.

Tiny sizes (a few thousand rows): what is checked is the shape, not the speed.
"""

from __future__ import annotations

import psycopg

from devtools.bench_history import HistoryOptions, measure_loop, preload_history
from fleet.routes import load_routes
from fleet.storage.migrate import migrate


def test_preload_is_a_consistent_past_and_the_loop_runs_on_it(db_dsn: str) -> None:
    migrate(db_dsn)
    routes = load_routes()
    opts = HistoryOptions(vans=16, interval_s=1.0, cycles=1, warmup_cycles=0, cycle_s=1.0)
    rows = 16 * 1200  # 20 minutes of 16 vans
    fleet, t1, result = preload_history(
        opts, routes, rows, db_dsn, lambda _: None, lambda _n, _t: None
    )
    with psycopg.connect(db_dsn) as conn:
        n, vans, first, last = conn.execute(
            "SELECT count(*), count(DISTINCT vehicle_id),"
            " extract(epoch FROM min(ts)), extract(epoch FROM max(ts)) FROM positions"
        ).fetchone() or (0, 0, 0, 0)
        assert abs(n - rows) <= 16 and vans == 16
        assert t1 - 1200 - 1 <= float(first) and float(last) <= t1
        # the present is consistent: each van's row is its newest stored fix, on its route
        stale = conn.execute(
            """
            SELECT count(*) FROM vehicles v
            JOIN (SELECT vehicle_id, max(ts) AS ts, min(route) AS route, max(route) AS r2
                  FROM positions GROUP BY vehicle_id) p USING (vehicle_id)
            WHERE v.last_ts IS DISTINCT FROM p.ts OR v.route <> p.route OR p.route <> p.r2
            """
        ).fetchone()
        assert stale == (0,)
        # arrival order: received_at follows ts (the loop's scan and BRIN depend on it)
        late = conn.execute(
            "SELECT count(*) FROM positions WHERE received_at < ts OR received_at > ts + '3 s'"
        ).fetchone()
        assert late == (0,)
        passages = conn.execute("SELECT count(DISTINCT vehicle_id) FROM passages").fetchone()
        assert passages is not None and passages[0] >= 12  # most vans passed checkpoints
        watermark = conn.execute("SELECT extract(epoch FROM watermark) FROM analytics_state")
        assert float((watermark.fetchone() or (0,))[0]) >= float(last)
    measure_loop(opts, routes, fleet, db_dsn, t1, result, lambda _: None)
    assert len(result.cycle_s) == 1 and result.cycle_fixes >= 16
    assert result.statements and "Execution Time" in result.explain
