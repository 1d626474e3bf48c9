"""``fleet bench ingest``: sustained rate, publish → commit latency, loss and duplicates.

Starts its own Mosquitto (project config) and embedded PostgreSQL unless given, runs
``fleet ingest`` as a separate process, drives it with paced load-generator processes,
and reads the figures from the worker's metrics and the database.  Optionally stops the
worker, piles up a backlog, restarts it and measures how fast the backlog drains.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from broker.runner import MosquittoBroker
from fleet.storage.embedded import EmbeddedPostgres, free_port
from fleet.storage.migrate import migrate
from ingest.child import IngestChild, metric_value
from ingest.loadgen import LoadResult, LoadSpec, publish_load

__all__ = ["BenchOptions", "run_ingest_bench"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchOptions:
    rate: float = 10_000
    duration_s: float = 60
    devices: int = 1000
    procs: int = 2
    per_message: int = 1
    warmup_s: float = 5
    backlog_s: float = 0  # seconds of load to accumulate while the worker is down
    batch_max_fixes: int = 1000
    batch_max_ms: int = 50
    dsn: str | None = None
    mqtt_port: int | None = None
    mqtt_password: str | None = None


def _histogram(text: str, name: str) -> dict[float, float]:
    out: dict[float, float] = {}
    prefix = name + '_bucket{le="'
    for line in text.splitlines():
        if line.startswith(prefix):
            le = line[len(prefix) : line.index('"', len(prefix))]
            out[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return out


def quantile(q: float, before: dict[float, float], after: dict[float, float]) -> float:
    """Prometheus-style histogram_quantile over the difference of two scrapes."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return float("nan")
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, cum in zip(bounds, counts, strict=True):
        if cum >= rank:
            if bound == float("inf"):
                return prev_bound
            width = cum - prev_count
            frac = (rank - prev_count) / width if width > 0 else 1.0
            return prev_bound + (bound - prev_bound) * frac
        prev_bound, prev_count = bound, cum
    return prev_bound


@dataclass(frozen=True)
class _Target:
    """Where the bench runs: the database, the broker and the service passwords."""

    dsn: str
    port: int
    ingest_password: str
    gateway_password: str


@dataclass(frozen=True)
class _Run:
    """One benchmark run: the options, the target, the worker and where to report."""

    opts: BenchOptions
    target: _Target
    worker: IngestChild
    say: Callable[[str], None]


@contextmanager
def _infrastructure(opts: BenchOptions, workdir: Path) -> Iterator[_Target]:
    pg = None
    broker = None
    try:
        dsn = opts.dsn
        if dsn is None:
            pg = EmbeddedPostgres(workdir / "postgres", port=free_port())
            pg.start()
            dsn = pg.dsn
        migrate(dsn)
        if opts.mqtt_port is None:
            broker = MosquittoBroker(workdir / "state", port=free_port())
            broker.start()
            port = broker.port
            creds = broker.layout.service_credentials()
        else:
            port = opts.mqtt_port
            creds = {"svc-ingest": os.environ.get("FLEET_MQTT_PASSWORD", "")}
            creds["svc-gateway"] = opts.mqtt_password or ""
        yield _Target(dsn, port, creds["svc-ingest"], creds["svc-gateway"])
    finally:
        if broker is not None:
            broker.stop()
        if pg is not None:
            pg.stop(mode="immediate")


def _run_load(
    port: int,
    password: str,
    opts: BenchOptions,
    prefix: str,
    rate: float,
    seconds: float,
    fast: bool,
) -> list[LoadResult]:
    devices = [f"{prefix}{i:05d}" for i in range(opts.devices)]
    specs = [
        LoadSpec(
            host="127.0.0.1",
            port=port,
            username="svc-gateway",
            password=password,
            device_ids=devices[k :: opts.procs],
            rate=rate / opts.procs,
            duration_s=seconds,
            per_message=opts.per_message,
            as_fast_as_possible=fast,
            client_id=f"bench-{prefix}{k}",
        )
        for k in range(opts.procs)
    ]
    ctx = mp.get_context("spawn")
    with ctx.Pool(opts.procs) as pool:
        return pool.map(publish_load, specs)


def _count(dsn: str, prefix: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM positions WHERE vehicle_id LIKE %s", (prefix + "%",)
        ).fetchone()
    return int(row[0]) if row else 0


def _wait_stored(dsn: str, prefix: str, target: int, timeout: float) -> tuple[int, float]:
    t0 = time.monotonic()
    n = _count(dsn, prefix)
    while n < target and time.monotonic() - t0 < timeout:
        time.sleep(0.25)
        n = _count(dsn, prefix)
    return n, time.monotonic() - t0


def run_ingest_bench(opts: BenchOptions, say: Callable[[str], None]) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        workdir = Path(tmp)
        with _infrastructure(opts, workdir) as target:
            env = {
                **os.environ,
                "FLEET_DSN": target.dsn,
                "FLEET_MQTT_PORT": str(target.port),
                "FLEET_MQTT_USERNAME": "svc-ingest",
                "FLEET_MQTT_PASSWORD": target.ingest_password,
                "FLEET_METRICS_PORT": str(free_port()),
                "FLEET_CLIENT_ID": "bench-ingest",
                "FLEET_BATCH_MAX_FIXES": str(opts.batch_max_fixes),
                "FLEET_BATCH_MAX_MS": str(opts.batch_max_ms),
                "FLEET_LOG_LEVEL": "WARNING",
                "FLEET_ANALYTICS": "false",  # measured on its own: fleet bench analytics
            }
            worker = IngestChild(env, workdir / "ingest.log")
            worker.start()
            run = _Run(opts, target, worker, say)
            prefix = f"B{int(time.time()) % 100000}-"
            say(
                f"load: {opts.rate:.0f} fixes/s from {opts.devices} devices in {opts.procs} "
                f"processes for {opts.duration_s:.0f} s ({opts.per_message} fix/message)"
            )
            figures = _steady_state(run, prefix)
            if opts.backlog_s > 0:
                figures |= _backlog(run, prefix + "L")
            worker.stop()
    return figures


def _steady_state(run: _Run, prefix: str) -> dict[str, float]:
    opts, worker, say = run.opts, run.worker, run.say
    dsn, port, gateway_pw = run.target.dsn, run.target.port, run.target.gateway_password
    window: dict[str, object] = {}
    out: list[list[LoadResult]] = []
    load = threading.Thread(
        target=lambda: out.append(
            _run_load(port, gateway_pw, opts, prefix, opts.rate, opts.duration_s, False)
        ),
        name="bench-load",
    )
    load.start()
    time.sleep(opts.warmup_s)
    t_a = time.monotonic()
    window["before"] = worker.scrape()
    time.sleep(max(1.0, opts.duration_s - opts.warmup_s - 1.0))
    t_b = time.monotonic()
    window["after"] = worker.scrape()
    load.join()
    if not out:
        raise RuntimeError("the load generator failed; see the messages above")
    results = out[0]
    acked = sum(r.fixes_acked for r in results)
    published = sum(r.fixes_published for r in results)
    stored, _ = _wait_stored(dsn, prefix, acked, 60)
    before, after = str(window["before"]), str(window["after"])
    name = "fleet_ingest_fixes_stored_total"
    rate = (metric_value(after, name) - metric_value(before, name)) / (t_b - t_a)
    hb = _histogram(before, "fleet_ingest_lag_seconds")
    ha = _histogram(after, "fleet_ingest_lag_seconds")
    final = worker.scrape()
    figures = {
        "rate": rate,
        "p50_ms": quantile(0.5, hb, ha) * 1000,
        "p99_ms": quantile(0.99, hb, ha) * 1000,
        "lost": float(max(0, acked - stored)),
        "dup": metric_value(final, "fleet_ingest_fixes_duplicate_total"),
        "published": float(published),
        "acked": float(acked),
        "stored": float(stored),
    }
    gen_rate = published / max(r.seconds for r in results)
    bb = _histogram(before, "fleet_ingest_batch_seconds")
    ba = _histogram(after, "fleet_ingest_batch_seconds")
    batches = metric_value(after, "fleet_ingest_batches_total") - metric_value(
        before, "fleet_ingest_batches_total"
    )
    mean_batch = rate * (t_b - t_a) / max(batches, 1)
    b50, b99 = quantile(0.5, bb, ba) * 1000, quantile(0.99, bb, ba) * 1000
    say(
        f"batches={batches:.0f} mean_batch={mean_batch:.0f} "
        f"batch_p50_ms={b50:.0f} batch_p99_ms={b99:.0f}"
    )
    say(
        f"published={published} acked={acked} stored={stored} "
        f"generator_rate={gen_rate:.0f}/s window={t_b - t_a:.1f}s"
    )
    return figures


def _backlog(run: _Run, prefix: str) -> dict[str, float]:
    opts, worker, say = run.opts, run.worker, run.say
    dsn, port, gateway_pw = run.target.dsn, run.target.port, run.target.gateway_password
    worker.stop()
    n = int(opts.rate * opts.backlog_s)
    say(f"backlog: worker stopped; publishing {n} fixes ({opts.backlog_s:.0f} s at target rate)")
    results = _run_load(port, gateway_pw, opts, prefix, opts.rate, opts.backlog_s, True)
    acked = sum(r.fixes_acked for r in results)
    t_pub = max(r.seconds for r in results)
    say(f"backlog published in {t_pub:.1f} s; restarting the worker")
    worker.start()
    stored, drain_s = _wait_stored(dsn, prefix, acked, 3600)
    say(
        f"backlog_fixes={acked} drain_s={drain_s:.1f} drain_rate={stored / drain_s:.0f}/s "
        f"lost={max(0, acked - stored)}"
    )
    return {"backlog_fixes": float(acked), "drain_s": drain_s, "drain_lost": float(acked - stored)}
