"""Helpers for analytics tests: simulate a fleet, load its fixes, compare with truth."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import psycopg

from analytics.congestion import refresh_segment_speeds
from analytics.headways import headway_stats, headways_from_passages
from fleet.contract import Fix, Validation
from fleet.routes import Route
from tracker_sim.model import FleetModel
from tracker_sim.parameters import SimConfig
from tracker_sim.truth import TruthTable

# 2026-11-02 10:00 WITA: the tail of the morning peak, so congestion varies in the run.
DEFAULT_END_MS = int(datetime(2026, 11, 2, 2, 0, tzinfo=UTC).timestamp() * 1000)

_TEN_YEARS_MS = 10 * 365 * 86_400_000
#: For an analytics loop fed fixes of that fixed day, stored now: ingest's default horizon
#: (7 days) would have refused them, so the loop gets the horizon such an ingest had.
PAST_DAY_HORIZON = Validation(max_future_ms=_TEN_YEARS_MS, max_age_ms=_TEN_YEARS_MS)

#: (vehicle_id, ts, route, direction, from_seq, to_seq, travel_s, length_m, speed_mps)
Traversal = tuple[str, datetime, str, int, int, int, float, float, float]


@dataclass
class SimRun:
    chunks: list[list[tuple[str, Fix]]]  # fixes in arrival order, one list per minute
    truth: TruthTable
    start_ms: int
    end_ms: int


def simulate(
    routes: Mapping[str, Route],
    vans: int,
    minutes: int,
    seed: int = 7,
    report_interval_s: float = 5.0,
    noise_m: float = 5.0,
    dropout: bool = True,
    end_ms: int | None = None,
) -> SimRun:
    """Run the pure model; devices are never switched off (a switched-off tracker sends
    nothing, so its passages are unobservable), coverage losses (store-and-forward
    backlogs), GPS noise and bad fixes stay on."""
    end = end_ms if end_ms is not None else DEFAULT_END_MS
    start = end - minutes * 60_000
    cfg = SimConfig(offline_per_h=0.0)
    model = FleetModel(
        routes,
        vans,
        seed=seed,
        start_ms=start,
        report_interval_s=report_interval_s,
        noise_m=noise_m,
        dropout=dropout,
        config=cfg,
    )
    chunks: list[list[tuple[str, Fix]]] = []
    for _ in range(minutes):
        chunk: list[tuple[str, Fix]] = []
        for _ in range(60):
            tick = model.step(1.0)
            for m in tick.messages:
                chunk.extend((m.vehicle_id, f) for f in m.fixes)
        chunks.append(chunk)
    return SimRun(chunks, model.truth, start, end)


def insert_traversals(conn: psycopg.Connection, rows: list[Traversal]) -> None:
    """Store segment traversals and bring their 5-minute rollup up to date with the
    analytics loop's own refresh (a table on plain PostgreSQL, a continuous aggregate on
    TimescaleDB): ``segment_speeds`` is never written directly. Commits."""
    with (
        conn.cursor() as cur,
        cur.copy(
            "COPY segment_traversals (vehicle_id, ts, route, direction, from_seq, to_seq,"
            " travel_s, length_m, speed_mps) FROM STDIN"
        ) as copy,
    ):
        for row in rows:
            copy.write_row(row)
    conn.commit()  # the refresh of a continuous aggregate runs outside any transaction
    refresh_segment_speeds(conn, [(route, ts, ts) for _, ts, route, *_ in rows])
    conn.commit()


def insert_fixes(conn: psycopg.Connection, fixes: list[tuple[str, Fix]]) -> None:
    """Store fixes and the vans' latest positions the way ingest does (one transaction)."""
    with conn.transaction():
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY positions (vehicle_id, ts, lat, lon, speed, heading, accuracy, route, seq)"
                " FROM STDIN"
            ) as copy,
        ):
            seen: set[tuple[str, int]] = set()
            for vid, f in fixes:
                if (vid, f.ts) in seen:
                    continue
                seen.add((vid, f.ts))
                copy.write_row(
                    (vid, _ts(f.ts), f.lat, f.lon, f.speed, f.heading, f.accuracy, f.route, f.seq)
                )
        latest: dict[str, tuple[str, Fix]] = {}
        for vid, f in fixes:
            if vid not in latest or f.ts > latest[vid][1].ts:
                latest[vid] = (vid, f)
        for vid, f in latest.values():
            conn.execute(
                """
                INSERT INTO vehicles AS v (vehicle_id, route, last_ts, lat, lon, speed, heading)
                VALUES (%s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (vehicle_id) DO UPDATE SET
                  route = EXCLUDED.route, last_ts = EXCLUDED.last_ts, lat = EXCLUDED.lat,
                  lon = EXCLUDED.lon, speed = EXCLUDED.speed, heading = EXCLUDED.heading
                WHERE v.last_ts IS NULL OR v.last_ts < EXCLUDED.last_ts
                """,
                (vid, f.route, _ts(f.ts), f.lat, f.lon, f.speed, f.heading),
            )


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


@dataclass
class Match:
    truth: int
    detected: int
    matched: int  # truth passages with a detection within tol_s
    spurious: int  # detections with no truth passage within spurious_tol_s


def _greedy_matches(truth_t: list[float], det_t: list[float], tol_s: float) -> int:
    """One-to-one matches between two time lists of one stream, nearest first."""
    tt = np.sort(np.array(truth_t, dtype=float))
    used = np.zeros(tt.size, dtype=bool)
    matched = 0
    for t in sorted(det_t):
        i = int(np.searchsorted(tt, t))
        best = -1
        for j in (i - 1, i, i + 1):
            if (
                0 <= j < tt.size
                and not used[j]
                and abs(tt[j] - t) <= tol_s
                and (best < 0 or abs(tt[j] - t) < abs(tt[best] - t))
            ):
                best = j
        if best >= 0:
            used[best] = True
            matched += 1
    return matched


def match_passages(
    truth: TruthTable,
    detected: list[tuple[str, str, int, int, float]],
    tol_s: float = 5.0,
    spurious_tol_s: float = 60.0,
) -> Match:
    """Match per (van, route, direction, checkpoint) stream.

    ``matched``: true passages with a detection within ``tol_s`` (the accuracy
    criterion).  ``spurious``: detections with no true passage of that stream within
    ``spurious_tol_s`` — passages that did not happen (a real passage timed 6 s off is
    a miss of the accuracy criterion, not a spurious passage).
    """
    streams: dict[tuple[str, str, int, int], list[float]] = {}
    for v, r, d, seq, ms in zip(
        truth.vehicle_id.tolist(),
        truth.route.tolist(),
        truth.direction.tolist(),
        truth.checkpoint_seq.tolist(),
        truth.ts_ms.tolist(),
        strict=True,
    ):
        streams.setdefault((v, r, int(d), int(seq)), []).append(ms / 1000)
    det: dict[tuple[str, str, int, int], list[float]] = {}
    for v, r, d, seq, t in detected:
        det.setdefault((v, r, d, seq), []).append(t)
    matched = sum(_greedy_matches(streams.get(k, []), ts, tol_s) for k, ts in det.items())
    loose = sum(_greedy_matches(streams.get(k, []), ts, spurious_tol_s) for k, ts in det.items())
    n_det = sum(len(v) for v in det.values())
    return Match(len(truth), n_det, matched, n_det - loose)


def route_cv(
    rows: Iterator[tuple[str, int, int, float]] | list[tuple[str, int, int, float]],
) -> dict[str, float]:
    """Per-route Cv_h of pooled headways from (route, direction, seq, t) passages."""
    by_route: dict[str, list[tuple[int, float]]] = {}
    for r, d, seq, t in rows:
        by_route.setdefault(r, []).append((d * 10_000 + seq, t))
    out = {}
    for r, items in by_route.items():
        keys = np.array([k for k, _ in items])
        ts = np.array([t for _, t in items])
        _, h, _ = headways_from_passages(keys, ts)
        out[r] = headway_stats(h).cv
    return out


LEAD_S = 60.0  # a passage needs a fix from before the van entered the checkpoint's band
SETTLE_S = 120.0  # ... and one from after it left the band (dwells included)


def fix_times(run: SimRun) -> dict[str, npt.NDArray[np.float64]]:
    """Sorted epoch seconds of every delivered fix, per van."""
    out: dict[str, list[float]] = {}
    for chunk in run.chunks:
        for vid, f in chunk:
            out.setdefault(vid, []).append(f.ts / 1000)
    return {v: np.unique(np.array(ts)) for v, ts in out.items()}


def observable_windows(run: SimRun) -> dict[str, tuple[float, float]]:
    """Per van: [first delivered fix + LEAD_S, last delivered fix − SETTLE_S], epoch s."""
    return {v: (ts[0] + LEAD_S, ts[-1] - SETTLE_S) for v, ts in fix_times(run).items()}


def observable_truth(
    truth: TruthTable, fixes: dict[str, npt.NDArray[np.float64]], max_gap_s: float = 300.0
) -> TruthTable:
    """Truth passages a detector can confirm from the delivered fixes.

    A passage is confirmed from a stable fix before the van entered the checkpoint's
    dead band and one after it left it, so it needs the van's fixes to cover
    [t − LEAD_S, t + SETTLE_S] with no gap longer than the detector's ``max_gap_s``:
    passages at the very start of a van's data, while its tracker was switched off,
    just before it was switched off, or at the end of the run (a van still dwelling at
    a checkpoint, or out of coverage with its backlog unsent) are left out.
    """
    keep = np.zeros(len(truth), dtype=bool)
    for k, (v, ms) in enumerate(zip(truth.vehicle_id.tolist(), truth.ts_ms.tolist(), strict=True)):
        ts = fixes.get(v)
        t = ms / 1000
        if ts is None or not ts[0] <= t - LEAD_S or not t + SETTLE_S <= ts[-1]:
            continue
        lo = int(np.searchsorted(ts, t - LEAD_S, side="right")) - 1
        hi = int(np.searchsorted(ts, t + SETTLE_S))
        keep[k] = bool(np.all(np.diff(ts[lo : hi + 1]) <= max_gap_s))
    return TruthTable(
        truth.vehicle_id[keep],
        truth.route[keep],
        truth.direction[keep],
        truth.checkpoint_id[keep],
        truth.checkpoint_seq[keep],
        truth.ts_ms[keep],
    )


def observable(run: SimRun) -> TruthTable:
    """The run's truth passages a detector can confirm (see observable_truth)."""
    return observable_truth(run.truth, fix_times(run))
