"""Acceptance: passages and Cv_h against the simulator's ground truth.

The fleet model drives every bundled route with GPS noise, bad fixes and coverage
losses (store-and-forward backlogs uploaded as late batches); its fixes are stored in
arrival order, one simulated minute at a time, with an analytics cycle after each —
so late batches land in windows that were already processed.
"""

from __future__ import annotations

import psycopg
import pytest

from analytics.loop import AnalyticsLoop
from analytics.settings import AnalyticsSettings
from fleet.routes import load_routes
from tests.fixtures.analytics import (
    PAST_DAY_HORIZON,
    insert_fixes,
    match_passages,
    observable,
    observable_windows,
    route_cv,
    simulate,
)


def _detected(conn: psycopg.Connection) -> list[tuple[str, str, int, int, float]]:
    return [
        (v, r, int(d), int(s), float(t))
        for v, r, d, s, t in conn.execute(
            "SELECT vehicle_id, route, direction, checkpoint_seq, extract(epoch FROM ts)"
            " FROM passages"
        )
    ]


@pytest.mark.parametrize(
    ("noise_m", "interval_s", "vans", "minutes"),
    [(5.0, 5.0, 6, 60), (12.0, 1.0, 3, 45)],
    ids=["noise5m-every5s", "noise12m-every1s"],
)
def test_passages_and_cv_match_truth(
    db_dsn: str, noise_m: float, interval_s: float, vans: int, minutes: int
) -> None:
    routes = load_routes()
    run = simulate(
        routes, vans=vans, minutes=minutes, noise_m=noise_m, report_interval_s=interval_s
    )
    loop = AnalyticsLoop(db_dsn, routes, AnalyticsSettings(overlap_s=5), PAST_DAY_HORIZON)
    late_fixes = 0
    with psycopg.connect(db_dsn) as conn:
        for minute, chunk in enumerate(run.chunks):
            insert_fixes(conn, chunk)
            arrival_ms = run.start_ms + (minute + 1) * 60_000
            late_fixes += sum(1 for _, f in chunk if f.ts < arrival_ms - 120_000)
            loop.run_once()
        loop.run_once()
        detected = _detected(conn)
    assert late_fixes > 50, "the run must include store-and-forward backlogs"
    # A passage is confirmed from fixes before and after the checkpoint's dead band:
    # passages in the first minute or the last two minutes of a van's data cannot be
    # (see tests.fixtures.analytics.observable_truth).
    truth = observable(run)
    windows = observable_windows(run)
    m = match_passages(truth, detected)
    recall = m.matched / m.truth
    # Spurious: detections that match no true passage at all (against the whole truth).
    spurious = match_passages(run.truth, detected).spurious / max(m.detected, 1)
    print(f"truth={m.truth} detected={m.detected} recall={recall:.4f} spurious={spurious:.4f}")
    assert recall >= 0.98
    assert spurious <= 0.01
    truth_rows = list(
        zip(
            truth.route.tolist(),
            truth.direction.tolist(),
            truth.checkpoint_seq.tolist(),
            (truth.ts_ms / 1000).tolist(),
            strict=True,
        )
    )
    cv_truth = route_cv(truth_rows)
    # Cv_h over the same span: detections inside each van's observable window.
    cv_det = route_cv(
        [(r, d, s, t) for v, r, d, s, t in detected if windows[v][0] <= t <= windows[v][1]]
    )
    assert cv_truth.keys() == cv_det.keys()
    for route, cv in cv_truth.items():
        assert abs(cv_det[route] - cv) <= 0.02, (route, cv, cv_det[route])
