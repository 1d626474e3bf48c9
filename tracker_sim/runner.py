"""Drive a :class:`~tracker_sim.model.FleetModel` over MQTT, paced against the wall clock.

* Sim time runs ``speedup`` times faster than the wall clock (0 = as fast as possible),
  but never ahead of the wall clock: a fix is never stamped in the future.
* ``mode="device"``: one MQTT connection per van with its own credentials, its last
  will ``offline`` retained on ``fleet/<id>/status`` and ``online`` published retained
  on connect; a van whose tracker is switched off drops its connection without
  DISCONNECT, so the broker publishes the will.
* ``mode="gateway"``: a few connections as ``svc-gateway`` publish for all vans
  (load generation); status changes are published on the vans' behalf.  With
  ``receipts`` the gateway keeps every fix until ingest's storage receipt covers it and
  resends it otherwise (:mod:`tracker_sim.gateway_link`); the fixes are then numbered
  per van from a base taken from the clock at start (``seq`` = base, base + 1, ...), so a
  late receipt for an earlier run's fix never settles one of this run.
* Several processes (``run_processes``) each simulate a disjoint set of routes.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing as mp
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Final, Literal, TextIO

import msgspec

from fleet.contract import STATUS_OFFLINE, STATUS_ONLINE, encode_batch, encode_fix
from fleet.contract import status_topic as _status_topic
from fleet.contract import telemetry_topic as _telemetry_topic
from fleet.routes import Route, load_routes
from tracker_sim.gateway_link import GatewayLink, GatewayPool, ReceiptOptions
from tracker_sim.links import Credentials, Link, LinkPool, Sender
from tracker_sim.model import FleetModel
from tracker_sim.parameters import SimConfig
from tracker_sim.trackers import Tick

__all__ = ["SimOptions", "SimStats", "run_processes", "run_simulation", "split_vehicles"]

log = logging.getLogger(__name__)

Mode = Literal["device", "gateway"]

STOP_RECEIPT_WAIT_S: Final = 5.0  # asked to stop: wait this long at most for the last receipts


@dataclass(frozen=True)
class SimOptions:
    host: str
    port: int
    mode: Mode
    vehicles_per_route: dict[str, int]
    start_ms: int
    report_interval_s: float = 5.0
    speedup: float = 1.0  # 0: as fast as possible
    seed: int = 1
    duration_s: float | None = None  # simulated seconds; None: until stopped
    warmup_s: float = 0.0  # simulated seconds driven (unpublished) before start_ms
    wall_limit_s: float | None = None  # wall-clock seconds (benchmarks)
    truth_path: Path | None = None
    noise_m: float = 5.0
    dropout: bool = True
    routes_path: Path | None = None
    checkpoint_spacing_m: float = 400.0
    connections: int = 2  # gateway mode, per process
    gateway: Credentials | None = None
    device_passwords: dict[str, str] | None = None  # device mode
    tls_ca: Path | None = None  # device mode: MQTT over TLS, the broker verified with this CA
    id_prefix: str = "pp-"
    max_outstanding: int = 5000
    client_tag: str = "sim"
    model_config: SimConfig | None = None  # behaviour parameters (tests, experiments)
    # gateway mode: keep every fix until a storage receipt covers it (off: PUBACK is enough)
    receipts: bool = False
    resend_after_s: float = 15.0  # no receipt this long after sending: send again
    max_unconfirmed: int = 100_000  # fixes awaiting receipts, per process (memory bound)
    receipt_wait_s: float = 30.0  # at the end: how long to wait for the last receipts
    # (when stopped by a signal or the stop event: at most STOP_RECEIPT_WAIT_S)


@dataclass
class SimStats:
    vehicles: int = 0
    sim_seconds: float = 0.0
    wall_seconds: float = 0.0
    messages: int = 0
    fixes: int = 0
    messages_acked: int = 0
    fixes_acked: int = 0  # a success PUBACK: the broker has it (transport, not storage)
    passages: int = 0
    status_changes: int = 0
    fixes_generated: int = 0  # every fix the model produced for sending
    fixes_confirmed: int = 0  # receipts: settled by a storage receipt
    fixes_resent: int = 0  # receipts: sent again (timeout, reconnect)
    fixes_unconfirmed: int = 0  # receipts: still without a receipt at the end

    def merge(self, other: SimStats) -> None:
        for f in dataclasses.fields(self):
            if f.name in ("wall_seconds", "sim_seconds"):
                setattr(self, f.name, max(getattr(self, f.name), getattr(other, f.name)))
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


def split_vehicles(routes: dict[str, Route], total: int) -> dict[str, int]:
    """Spread ``total`` vans evenly over the routes (the first routes get the remainder)."""
    base, extra = divmod(total, len(routes))
    return {code: base + (1 if i < extra else 0) for i, code in enumerate(routes)}


class _Publisher:
    """Maps vans to connections and turns model output into MQTT messages."""

    def __init__(self, opts: SimOptions, model: FleetModel, stop: threading.Event) -> None:
        self.opts = opts
        self.ids = model.vehicle_ids
        self.telemetry = {v: _telemetry_topic(v) for v in self.ids}
        self.by_vehicle: dict[str, Sender]
        self.switched_off: set[str] = set()
        self.held: dict[str, list[tuple[bytes, int]]] = {}
        self.last_attempt: dict[str, float] = {}
        self.devices: dict[str, Link] = {}
        self.pool: LinkPool | GatewayPool
        if opts.mode == "device":
            pw = opts.device_passwords or {}
            missing = [v for v in self.ids if v not in pw]
            if missing:
                raise ValueError(
                    f"no credentials for {len(missing)} vans (e.g. {missing[0]}); "
                    "give --data-dir of the local broker or a --credentials file"
                )
            self.devices = {
                v: Link(v, Credentials(v, pw[v], opts.tls_ca), device=v) for v in self.ids
            }
            self.device_pool = LinkPool(opts.host, opts.port, opts.max_outstanding)
            self.pool = self.device_pool
            self.by_vehicle = dict(self.devices)
        else:
            if opts.gateway is None:
                raise ValueError("gateway mode needs the svc-gateway credentials")
            n = max(1, min(opts.connections, len(self.ids)))
            self.gateways = [
                GatewayLink(f"{opts.client_tag}-gw-{k}", opts.gateway) for k in range(n)
            ]
            receipts = (
                ReceiptOptions(
                    client_id=f"{opts.client_tag}-gw-acks-{time.time_ns() % 10**9}",
                    resend_after_s=opts.resend_after_s,
                    max_unconfirmed=opts.max_unconfirmed,
                )
                if opts.receipts
                else None
            )
            self.gateway_pool = GatewayPool(
                opts.host, opts.port, opts.max_outstanding, stop, receipts
            )
            self.pool = self.gateway_pool
            self.by_vehicle = {v: self.gateways[i % n] for i, v in enumerate(self.ids)}
            self.gateway_of = {v: self.gateways[i % n] for i, v in enumerate(self.ids)}
        # receipts: the next seq per van, from a per-run base (µs since the epoch)
        self.next_seq: dict[str, int] = {}
        if opts.mode == "gateway" and opts.receipts:
            base = time.time_ns() // 1000
            self.next_seq = dict.fromkeys(self.ids, base)

    def start(self) -> None:
        if self.opts.mode == "device":
            self.device_pool.connect(list(self.devices.values()))
            return
        self.gateway_pool.connect(self.gateways)
        for v in self.ids:
            link = self.by_vehicle[v]
            self.pool.wait_for_room(link)
            link.publish(_status_topic(v), STATUS_ONLINE.encode(), retain=True)

    def send(self, tick: Tick, stats: SimStats) -> None:
        by_vehicle, topics, pool = self.by_vehicle, self.telemetry, self.pool
        device_mode = self.opts.mode == "device"
        if device_mode:
            for change in tick.status:
                if change.online:  # switched back on: reconnect, publishes "online"
                    self.switched_off.discard(change.vehicle_id)
                    self.device_pool.reopen(self.devices[change.vehicle_id])
            self._retry_and_release(stats)
        messages = tick.messages
        if self.next_seq:
            self._send_tracked(tick, stats)
            messages = []
        for msg in messages:
            link = by_vehicle[msg.vehicle_id]
            stats.fixes_generated += len(msg.fixes)
            payload = encode_batch(msg.fixes) if msg.batch else encode_fix(msg.fixes[0])
            if device_mode and not link.connected:  # the device keeps it until connected
                self.held.setdefault(msg.vehicle_id, []).append((payload, len(msg.fixes)))
                continue
            if link.full or not link.connected:
                pool.wait_for_room(link)  # gateway: also while its connection comes back
            if link.publish(topics[msg.vehicle_id], payload, len(msg.fixes)):
                stats.messages += 1
                stats.fixes += len(msg.fixes)
            else:
                self.held.setdefault(msg.vehicle_id, []).append((payload, len(msg.fixes)))
        for change in tick.status:
            stats.status_changes += 1
            if device_mode:
                if not change.online:  # switched off: no DISCONNECT, the broker sends the will
                    self.switched_off.add(change.vehicle_id)
                    self.device_pool.drop(self.devices[change.vehicle_id])
            else:
                link = by_vehicle[change.vehicle_id]
                status = STATUS_ONLINE if change.online else STATUS_OFFLINE
                pool.wait_for_room(link)
                link.publish(_status_topic(change.vehicle_id), status.encode(), retain=True)

    def _send_tracked(self, tick: Tick, stats: SimStats) -> None:
        """Gateway mode with receipts: number each van's fixes, keep every message in the
        pool's receipt book (sent now, or after the reconnect if the link is down)."""
        pool, topics, next_seq = self.gateway_pool, self.telemetry, self.next_seq
        replace = msgspec.structs.replace
        for msg in tick.messages:
            vid = msg.vehicle_id
            link = self.gateway_of[vid]
            first = next_seq[vid]
            count = len(msg.fixes)
            next_seq[vid] = first + count
            fixes = [replace(f, seq=first + k) for k, f in enumerate(msg.fixes)]
            payload = encode_batch(fixes) if msg.batch else encode_fix(fixes[0])
            pool.wait_for_room(link)  # in flight, reconnecting, or too many unconfirmed
            stats.fixes_generated += count
            if pool.send_fixes(link, vid, first, count, topics[vid], payload):
                stats.messages += 1
                stats.fixes += count

    def _retry_and_release(self, stats: SimStats) -> None:
        """Device mode: reconnect lost connections (every few seconds) and send what the
        devices kept meanwhile, oldest first."""
        now = time.monotonic()
        for vid, link in self.devices.items():
            if link.connected or vid in self.switched_off:
                continue
            if link.client.socket() is None and now - self.last_attempt.get(vid, 0.0) > 5.0:
                self.last_attempt[vid] = now
                self.device_pool.reopen(link)
        for vid in [v for v in self.held if self.devices[v].connected]:
            link = self.devices[vid]
            for payload, fixes in self.held.pop(vid):
                self.device_pool.wait_for_room(link)
                if link.publish(self.telemetry[vid], payload, fixes):
                    stats.messages += 1
                    stats.fixes += fixes

    def stop(self) -> None:
        """Graceful end: every van says offline (retained), then disconnect."""
        for v in self.ids:
            link = self.by_vehicle[v]
            if link.connected:
                self.pool.wait_for_room(link)
                link.publish(_status_topic(v), STATUS_OFFLINE.encode(), retain=True)
        self.pool.close()


def run_simulation(
    opts: SimOptions,
    stop: threading.Event | None = None,
    on_progress: Callable[[SimStats, int], None] | None = None,
) -> SimStats:
    """Run until the duration, the wall limit or ``stop``; return what was published."""
    stop = stop or threading.Event()
    routes = load_routes(opts.routes_path, opts.checkpoint_spacing_m)
    wanted = {c: n for c, n in opts.vehicles_per_route.items() if n > 0}
    model = FleetModel(
        {c: routes[c] for c in wanted},
        wanted,
        seed=opts.seed,
        start_ms=opts.start_ms - round(opts.warmup_s * 1000),
        report_interval_s=opts.report_interval_s,
        noise_m=opts.noise_m,
        dropout=opts.dropout,
        config=opts.model_config,
        id_prefix=opts.id_prefix,
        keep_truth=False,
    )
    if opts.warmup_s > 0:
        model.warm_up(opts.warmup_s)
    pub = _Publisher(opts, model, stop)
    pool = pub.pool
    stats = SimStats(vehicles=model.n)
    truth_out: TextIO | None = None
    if opts.truth_path is not None:
        opts.truth_path.parent.mkdir(parents=True, exist_ok=True)
        truth_out = opts.truth_path.open("w", newline="")
        model.drain_truth().write_csv(truth_out, header=True)  # the header, at once
        truth_out.flush()
    pub.start()
    # Near real time, short steps: a fix is published at most 0.25 s after its timestamp.
    step_s = 1.0 if opts.speedup == 0 else min(1.0, max(0.25, 0.25 * opts.speedup))
    step_ms = round(step_s * 1000)
    wall0 = time.monotonic()
    sim0 = model.t_ms
    last_report = wall0
    warned = False
    try:
        while not stop.is_set():
            sim_elapsed = (model.t_ms - sim0) / 1000.0
            wall_elapsed = time.monotonic() - wall0
            if opts.duration_s is not None and sim_elapsed >= opts.duration_s:
                break
            if opts.wall_limit_s is not None and wall_elapsed >= opts.wall_limit_s:
                break
            due = wall0 + (sim_elapsed + step_s) / opts.speedup if opts.speedup > 0 else 0.0
            ahead_ms = model.t_ms + step_ms - int(time.time() * 1000)
            due = max(due, time.monotonic() + ahead_ms / 1000.0)  # never stamp the future
            while (left := due - time.monotonic()) > 0 and not stop.is_set():
                pool.pump(min(left, 0.05))
            tick = model.step(step_s)
            pub.send(tick, stats)
            pool.pump(0)
            pool.throttle()
            if truth_out is not None:
                passed = model.drain_truth()
                if len(passed):
                    stats.passages += passed.write_csv(truth_out, header=False)
                    truth_out.flush()  # a killed simulator leaves a complete file
            else:
                stats.passages += len(model.drain_truth())
            now = time.monotonic()
            if now - last_report >= 10.0:
                last_report = now
                _count_acks(pub, stats)
                stats.sim_seconds = (model.t_ms - sim0) / 1000.0
                stats.wall_seconds = now - wall0
                if on_progress is not None:
                    on_progress(stats, model.t_ms)
                silent = opts.receipts and stats.fixes and not stats.fixes_confirmed
                if silent and not warned and now - wall0 > 3 * opts.resend_after_s:
                    warned = True
                    log.warning(
                        "no storage receipt for %.0f s: is ingest running with "
                        "FLEET_RECEIPTS on? (--no-receipts for a server without them)",
                        now - wall0,
                    )
        stats.wall_seconds = time.monotonic() - wall0
        pool.flush(10.0)
        if opts.receipts:
            _count_acks(pub, stats)
            if stats.fixes_unconfirmed:
                wait_s = opts.receipt_wait_s
                if stop.is_set():
                    wait_s = min(wait_s, STOP_RECEIPT_WAIT_S)
                log.info(
                    "waiting up to %.0f s for the receipts of %d fixes",
                    wait_s,
                    stats.fixes_unconfirmed,
                )
                pub.gateway_pool.wait_confirmed(wait_s)
        _count_acks(pub, stats)
        if opts.receipts:
            log.info(
                "sim receipts",
                extra={
                    "generated": stats.fixes_generated,
                    "confirmed": stats.fixes_confirmed,
                    "resent": stats.fixes_resent,
                    "unconfirmed": stats.fixes_unconfirmed,
                },
            )
    finally:
        stats.sim_seconds = (model.t_ms - sim0) / 1000.0
        if truth_out is not None:
            truth_out.close()
        pub.stop()
    return stats


def _count_acks(pub: _Publisher, stats: SimStats) -> None:
    """PUBACK totals, and with receipts the storage-receipt totals, into ``stats``."""
    stats.messages_acked, stats.fixes_acked = pub.pool.totals()
    if pub.opts.mode == "gateway" and pub.opts.receipts:
        pool = pub.gateway_pool
        stats.fixes_confirmed = pool.confirmed()
        stats.fixes_resent = pool.fixes_resent
        stats.fixes_unconfirmed = pool.unconfirmed()


def log_progress(stats: SimStats, t_ms: int) -> None:
    rate = stats.fixes / stats.wall_seconds if stats.wall_seconds else 0.0
    lag_s = time.time() - t_ms / 1000.0
    log.info(
        "sim progress",
        extra={
            "vehicles": stats.vehicles,
            "sim_s": round(stats.sim_seconds),
            "fixes": stats.fixes,
            "acked": stats.fixes_acked,
            "confirmed": stats.fixes_confirmed,
            "resent": stats.fixes_resent,
            "fixes_per_s": round(rate),
            "sim_clock_behind_wall_s": round(lag_s),
        },
    )


_stop_event = threading.Event()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    _stop_event.set()


def _worker(opts: SimOptions, results: mp.Queue[SimStats | str]) -> None:
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        results.put(run_simulation(opts, _stop_event))
    except Exception as exc:  # reported to the parent, which fails with it
        results.put(f"{type(exc).__name__}: {exc}")


def run_processes(opts: SimOptions, procs: int, stop: threading.Event) -> SimStats:
    """Split the routes over ``procs`` processes (disjoint, so queueing stays exact)."""
    codes = [c for c, n in opts.vehicles_per_route.items() if n > 0]
    procs = max(1, min(procs, len(codes)))
    if procs == 1:
        return run_simulation(opts, stop, log_progress)
    if opts.truth_path is not None:
        raise ValueError("--truth needs a single process (--procs 1)")
    ctx = mp.get_context("spawn")
    results: mp.Queue[SimStats | str] = ctx.Queue()
    workers = []
    for k in range(procs):
        share = {c: opts.vehicles_per_route[c] for c in codes[k::procs]}
        sub = dataclasses.replace(
            opts, vehicles_per_route=share, seed=opts.seed * 1009 + k, client_tag=f"sim{k}"
        )
        p = ctx.Process(target=_worker, args=(sub, results), name=f"fleet-sim-{k}")
        p.start()
        workers.append(p)
    total = SimStats()
    errors: list[str] = []
    received = 0
    while received < procs:
        if stop.is_set():
            for p in workers:
                if p.is_alive() and p.pid is not None:
                    p.terminate()
            stop.clear()
        try:
            item = results.get(timeout=0.2)
        except Exception:  # queue.Empty
            if not any(p.is_alive() for p in workers) and results.empty():
                errors.append("a simulator process died without reporting")
                break
            continue
        received += 1
        if isinstance(item, str):
            errors.append(item)
        else:
            total.merge(item)
    for p in workers:
        p.join(10)
    if errors:
        raise RuntimeError("; ".join(errors))
    return total
