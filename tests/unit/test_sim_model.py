"""The MQTT-free fleet model: determinism, plausible motion, bunching, dropouts, truth."""

from __future__ import annotations

import datetime as dt
import io
from collections import defaultdict

import numpy as np
import pytest

from fleet.contract import TopicKind, Validation, decode_telemetry, encode_batch, encode_fix
from fleet.geometry import haversine_m
from fleet.routes import Route, load_routes
from tracker_sim.model import FleetModel
from tracker_sim.motion import LAYOVER, MOVING
from tracker_sim.parameters import SimConfig
from tracker_sim.trackers import Tick
from tracker_sim.traffic import peak_intensity
from tracker_sim.truth import TRUTH_CSV_HEADER, TruthTable

WITA = dt.timezone(dt.timedelta(hours=8))
MORNING = int(dt.datetime(2026, 11, 23, 7, 0, tzinfo=WITA).timestamp() * 1000)
NIGHT = int(dt.datetime(2026, 11, 23, 2, 0, tzinfo=WITA).timestamp() * 1000)


@pytest.fixture(scope="module")
def routes() -> dict[str, Route]:
    return load_routes()


def _run(model: FleetModel, seconds: int, dt_s: float = 1.0) -> list[Tick]:
    return [model.step(dt_s) for _ in range(int(seconds / dt_s))]


def _fixes(ticks: list[Tick]) -> list[tuple[str, bool, bytes]]:
    return [
        (m.vehicle_id, m.batch, encode_batch(m.fixes) if m.batch else encode_fix(m.fixes[0]))
        for t in ticks
        for m in t.messages
    ]


def test_same_seed_same_fleet_other_seed_other_fleet(routes: dict[str, Route]) -> None:
    def run(seed: int) -> tuple[list[tuple[str, bool, bytes]], list[object]]:
        m = FleetModel(routes, 4, seed=seed, start_ms=MORNING)
        ticks = _run(m, 600)
        return _fixes(ticks), list(m.truth.rows())

    a, b, c = run(7), run(7), run(8)
    assert a == b
    assert len(a[0]) > 1000 and len(a[1]) > 100
    assert a[0] != c[0] and a[1] != c[1]


def test_step_size_does_not_change_the_outcome(routes: dict[str, Route]) -> None:
    m1 = FleetModel(routes, 3, seed=3, start_ms=MORNING)
    m5 = FleetModel(routes, 3, seed=3, start_ms=MORNING)
    ones = _run(m1, 300, 1.0)
    fives = _run(m5, 300, 5.0)
    assert _fixes(ones) == _fixes(fives)
    assert np.array_equal(m1.truth.ts_ms, m5.truth.ts_ms)


def test_every_fix_is_valid_under_the_wire_contract(routes: dict[str, Route]) -> None:
    cfg = SimConfig(coverage_loss_per_h=30.0)
    m = FleetModel(routes, 3, seed=1, start_ms=MORNING, config=cfg)
    ticks = _run(m, 900)
    now_ms = m.t_ms
    count = 0
    for vid, _batch, payload in _fixes(ticks):
        res = decode_telemetry(TopicKind.TELEMETRY, vid, payload, now_ms, Validation())
        assert not res.rejections, res.rejections
        assert all(f.route == vid.split("-")[1] for f in res.fixes)
        count += len(res.fixes)
    assert count > 1000


def test_speeds_are_plausible_and_slower_at_the_morning_peak(routes: dict[str, Route]) -> None:
    def moving_speeds(start_ms: int) -> np.ndarray:
        m = FleetModel(routes, 10, seed=2, start_ms=start_ms, dropout=False)
        speeds = []
        for _ in range(120):
            m.step(5.0)
            snap = m.snapshot()
            speeds.append(snap["speed"][snap["state"] == MOVING])
        return np.concatenate(speeds)

    peak = moving_speeds(MORNING + 30 * 60_000)  # 07:30 WITA
    night = moving_speeds(NIGHT)
    for s in (peak, night):
        assert s.min() >= 0 and s.max() < 17.0  # < 61 km/h, even at night
    assert 3.0 < peak.mean() < 8.0
    assert 8.0 < night.mean() < 14.0
    assert peak_intensity(7.5) == pytest.approx(1.0) and peak_intensity(2.0) < 0.01


def _close_pair_runs(
    model: FleetModel, seconds: int, every: int = 10
) -> dict[tuple[int, int], int]:
    """Longest time (s) each same-route, same-direction pair of vans stayed within 100 m of
    each other, away from the terminals (a lay-over queue is not bunching)."""
    run: dict[tuple[int, int], int] = defaultdict(int)
    best: dict[tuple[int, int], int] = defaultdict(int)
    motion = model.motion
    for t in range(seconds // every):
        model.step(every)
        on_road = (motion.state != LAYOVER) & (motion.s > 300) & (motion.s < motion.veh_len - 300)
        near = set()
        for r in range(len(model.routes)):
            for d in (0, 1):
                idx = np.flatnonzero((motion.route_of == r) & (motion.direction == d) & on_road)
                idx = idx[np.argsort(motion.s[idx])]
                for k in np.flatnonzero(np.diff(motion.s[idx]) < 100):
                    near.add((int(idx[k]), int(idx[k + 1])))
        for pair in near:
            run[pair] += every
            best[pair] = max(best[pair], run[pair])
        for pair in [p for p in run if p not in near]:
            del run[pair]
        del t
    return best


def test_bunching_emerges_from_evenly_spaced_vans(routes: dict[str, Route]) -> None:
    m = FleetModel(routes, 30, seed=1, start_ms=MORNING)
    # at the start no two vans of a route and direction are within 150 m
    for r in range(len(m.routes)):
        for d in (0, 1):
            s = np.sort(m.motion.s[(m.motion.route_of == r) & (m.motion.direction == d)])
            assert np.all(np.diff(s) > 150)
    best = _close_pair_runs(m, 45 * 60)
    long_pairs = {p: v for p, v in best.items() if v >= 300}
    routes_with_bunches = {m.motion.route_of[a] for a, _ in long_pairs}
    assert len(long_pairs) >= 5, sorted(best.values())[-10:]
    assert len(routes_with_bunches) >= 3


def test_queueing_no_overtaking_of_moving_vans(routes: dict[str, Route]) -> None:
    m = FleetModel({"D": routes["D"]}, 80, seed=4, start_ms=MORNING, dropout=False)
    gap = m.cfg.min_gap_m
    blocked = 0
    for _ in range(900):
        was_moving = m.motion.state == MOVING
        d_before = m.motion.direction.copy()
        p_before = np.where(d_before == 0, m.motion.s, m.motion.veh_len - m.motion.s)
        m.step(1.0)
        p_after = np.where(d_before == 0, m.motion.s, m.motion.veh_len - m.motion.s)
        # vans that drove the whole step and did not reach a terminal
        kept = was_moving & (m.motion.state != LAYOVER) & (m.motion.direction == d_before)
        for d in (0, 1):
            idx = np.flatnonzero(was_moving & (d_before == d))
            order = idx[np.argsort(-p_before[idx])]  # front van first
            for lead, follow in zip(order, order[1:]):
                if not (kept[lead] and kept[follow]):
                    continue
                stayed = p_after[follow] == p_before[follow]
                assert p_after[follow] <= p_after[lead] - gap + 1e-6 or stayed
                if p_after[lead] - p_after[follow] < gap + 0.5:
                    blocked += 1
    assert blocked > 100  # queueing actually happened


def test_coverage_loss_produces_backlog_batches_and_nothing_is_lost(
    routes: dict[str, Route],
) -> None:
    cfg = SimConfig(coverage_loss_per_h=20.0, offline_per_h=0.0)
    m = FleetModel({"B": routes["B"], "C": routes["C"]}, 5, seed=5, start_ms=MORNING, config=cfg)
    ticks = _run(m, 3600)
    batches = [msg for t in ticks for msg in t.messages if msg.batch]
    assert len(batches) >= 10
    assert max(len(b.fixes) for b in batches) >= 12  # ≥ 60 s of fixes at 5 s
    for b in batches:
        ts = [f.ts for f in b.fixes]
        assert ts == sorted(ts)  # oldest first
    by_vehicle: dict[str, list[int]] = defaultdict(list)
    for t in ticks:
        for msg in t.messages:
            by_vehicle[msg.vehicle_id].extend(f.seq or 0 for f in msg.fixes)
    for vid, seqs in by_vehicle.items():
        pending = len(m.trackers.backlog[m.vehicle_ids.index(vid)])
        # every fix made is sent exactly once (or still waiting in the backlog)
        assert sorted(seqs) == list(range(1, len(seqs) + 1)), vid
        assert len(seqs) + pending == int(m.trackers.seq[m.vehicle_ids.index(vid)])


def test_devices_go_offline_and_send_nothing_meanwhile(routes: dict[str, Route]) -> None:
    cfg = SimConfig(offline_per_h=3.0, offline_min_s=120, offline_max_s=300)
    m = FleetModel({"A": routes["A"]}, 10, seed=6, start_ms=MORNING, config=cfg)
    ticks = _run(m, 3600)
    changes = [c for t in ticks for c in t.status]
    offs = [c for c in changes if not c.online]
    assert len(offs) >= 5 and any(c.online for c in changes)
    sent: dict[str, list[int]] = defaultdict(list)
    for t in ticks:
        for msg in t.messages:
            if not msg.batch:
                sent[msg.vehicle_id].append(msg.fixes[0].ts)
    for off in offs:
        back = next(
            (
                c
                for c in changes
                if c.vehicle_id == off.vehicle_id and c.online and c.ts_ms > off.ts_ms
            ),
            None,
        )
        end = back.ts_ms if back else m.t_ms
        assert 120_000 <= end - off.ts_ms <= 301_000 or back is None
        assert not [ts for ts in sent[off.vehicle_id] if off.ts_ms < ts <= end]


def test_gps_noise_and_bad_fixes(routes: dict[str, Route]) -> None:
    def errors(noise: float, bad: float) -> np.ndarray:
        cfg = SimConfig(bad_fix_prob=bad)
        m = FleetModel(
            {"G": routes["G"]},
            20,
            seed=9,
            start_ms=MORNING,
            noise_m=noise,
            dropout=False,
            config=cfg,
        )
        route = m.routes[0]
        out = []
        for _ in range(300):
            t0, s0, d0 = m.t_ms, m.motion.s.copy(), m.motion.direction.copy()
            tick = m.step(1.0)
            ids = {v: i for i, v in enumerate(m.vehicle_ids)}
            for msg in tick.messages:
                f = msg.fixes[0]
                i = ids[msg.vehicle_id]
                if m.motion.direction[i] != d0[i]:
                    continue  # turned around in this step
                s_true = s0[i] + (m.motion.s[i] - s0[i]) * (f.ts - t0) / (tick.t_ms - t0)
                lat, lon = route.position_at(s_true)
                out.append(float(haversine_m(f.lat, f.lon, lat, lon)))
        return np.array(out)

    clean = errors(5.0, 0.0)
    assert len(clean) > 1000
    rms = float(np.sqrt(np.mean(clean**2)))
    assert 4.0 < rms < 6.0 and clean.max() < 30
    dirty = errors(5.0, 0.05)
    assert 0.03 < (dirty > 70).mean() < 0.07


def test_truth_matches_the_noise_free_motion(routes: dict[str, Route]) -> None:
    m = FleetModel({"E": routes["E"], "H": routes["H"]}, 8, seed=11, start_ms=MORNING)
    cp_dist = {c.id: c.dist_m for r in m.routes for c in r.checkpoints}
    history = [(m.t_ms, m.motion.s.copy(), m.motion.direction.copy())]
    for _ in range(1800):
        m.step(1.0)
        history.append((m.t_ms, m.motion.s.copy(), m.motion.direction.copy()))
    truth = m.truth
    assert len(truth) > 150
    times = np.array([h[0] for h in history])
    ids = {v: i for i, v in enumerate(m.vehicle_ids)}
    checked = 0
    for p in truth.rows():
        i = ids[p.vehicle_id]
        k = int(np.searchsorted(times, p.ts_ms, side="left"))  # step (k-1, k] holds ts
        k = max(k, 1)
        t0, s0, d0 = history[k - 1]
        t1, s1, d1 = history[k]
        assert d0[i] == p.direction  # the direction it was driving in
        lo, hi = sorted((s0[i], s1[i]))
        cp = cp_dist[p.checkpoint_id]
        assert lo - 1e-6 <= cp <= hi + 1e-6
        if s1[i] != s0[i]:
            at = s0[i] + (s1[i] - s0[i]) * (p.ts_ms - t0) / (t1 - t0)
            assert abs(at - cp) < 0.02  # ms rounding at ≤ 15 m/s
        checked += 1
    assert checked == len(truth)

    # per van and direction, checkpoints are passed in order, one after the other
    rows = sorted(truth.rows(), key=lambda p: (p.vehicle_id, p.ts_ms))
    for a, b in zip(rows, rows[1:]):
        if a.vehicle_id == b.vehicle_id and a.direction == b.direction:
            step = 1 if a.direction == 0 else -1
            assert b.checkpoint_seq == a.checkpoint_seq + step, (a, b)


def test_truth_csv_round_trip_and_drain(routes: dict[str, Route], tmp_path) -> None:
    m = FleetModel({"L": routes["L"]}, 6, seed=12, start_ms=MORNING, keep_truth=False)
    out = io.StringIO()
    total = 0
    header = True
    for _ in range(20):
        _run(m, 60)
        total += m.drain_truth().write_csv(out, header=header)
        header = False
    assert total > 50
    path = tmp_path / "truth.csv"
    path.write_text(out.getvalue())
    assert out.getvalue().splitlines()[0] == ",".join(TRUTH_CSV_HEADER)
    rows = TruthTable.read_csv(path)
    assert len(rows) == total
    assert all(r.route == "L" and r.checkpoint_id == f"L-{r.checkpoint_seq:03d}" for r in rows)
    assert len(m.truth) == 0  # drained and not kept
