"""``fleet bench ingest``: sustained rate, publish → commit latency, loss and duplicates.

Starts its own Mosquitto (project config) and embedded PostgreSQL unless given, runs
``fleet ingest`` as a separate process, drives it with paced load-generator processes
(:class:`devtools.loadgen.LoadGenerator`, storage-receipt aware unless ``receipts`` is
off), and reads the figures from the worker's metrics and the database.  Optionally
stops the worker, piles up a backlog, restarts it and measures how fast it drains.

Besides rate and latency it reports what the receipts cost (the broker's PUBLISH
traffic: telemetry and receipts, in and out, from ingest's counters) and where the CPU
goes: the CPU time of ingest, Mosquitto, PostgreSQL (the postmaster and all its
backends) and the generators over the measured window, also as CPU microseconds per
stored fix for each.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import psycopg

from broker.runner import MosquittoBroker
from devtools.ingest_child import IngestChild
from devtools.loadgen import LoadResult, LoadSpec, run_load
from devtools.metrics_text import histogram, metric_value, quantile, sum_samples
from devtools.processes import cpu_seconds, tree_cpu_seconds
from fleet.storage.embedded import EmbeddedPostgres, free_port
from fleet.storage.migrate import migrate

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
    receipts: bool = True  # generators keep every fix until a storage receipt covers it
    workers: int = 1  # ingest processes on the shared subscription


@dataclass(frozen=True)
class _Target:
    """Where the bench runs: the database, the broker and the service passwords."""

    dsn: str
    port: int
    ingest_password: str
    gateway_password: str
    broker_pid: int | None = None  # when the bench started Mosquitto itself
    postgres_pid: int | None = None  # the postmaster, when the bench started PostgreSQL


class _Workers:
    """The ingest processes of a run (one, or several on the shared subscription), driven
    and scraped as one: their metrics are summed (counters, histogram buckets)."""

    def __init__(self, env: dict[str, str], workdir: Path, count: int) -> None:
        self.children = [
            IngestChild(
                {
                    **env,
                    "FLEET_METRICS_PORT": str(free_port()),
                    "FLEET_MQTT_CLIENT_ID": f"bench-ingest-{k}",
                },
                workdir / f"ingest-{k}.log",
            )
            for k in range(count)
        ]

    def start(self) -> None:
        for child in self.children:
            child.start()

    def stop(self) -> None:
        for child in self.children:
            child.stop()

    @property
    def pids(self) -> list[int | None]:
        return [child.pid for child in self.children]

    def scrape(self) -> str:
        return sum_samples([child.scrape() for child in self.children])


@dataclass(frozen=True)
class _Run:
    """One benchmark run: the options, the target, the workers and where to report."""

    opts: BenchOptions
    target: _Target
    worker: _Workers
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
        pid = broker.proc.pid if broker is not None and broker.proc is not None else None
        pg_pid = pg.pid() if pg is not None else None
        yield _Target(dsn, port, creds["svc-ingest"], creds["svc-gateway"], pid, pg_pid)
    finally:
        if broker is not None:
            broker.stop()
        if pg is not None:
            pg.stop(mode="immediate")


def _run_load(
    run: _Run, prefix: str, rate: float, seconds: float, backlog: bool
) -> list[LoadResult]:
    """``procs`` generator processes, process ``k`` with vans ``{prefix}{k}-00000...``."""
    opts = run.opts
    receipts = opts.receipts and not backlog
    share, extra = divmod(opts.devices, opts.procs)
    specs = [
        LoadSpec(
            host="127.0.0.1",
            port=run.target.port,
            username="svc-gateway",
            password=run.target.gateway_password,
            devices=share + (1 if k < extra else 0),
            rate=rate / opts.procs,
            duration_s=seconds,
            vehicle_prefix=f"{prefix}{k}-",
            per_message=opts.per_message,
            receipts=receipts,
            # several generators on one broker: each subscribes to its own vans' receipts
            subscribe_all=opts.procs == 1,
            backfill_s=seconds if backlog else 0.0,
        )
        for k in range(opts.procs)
    ]
    ctx = mp.get_context("spawn")
    with ctx.Pool(opts.procs) as pool:
        return pool.map(run_load, specs)


def _machine_busy_s() -> float:
    """CPU seconds all cores spent not idle so far (Linux /proc/stat); 0 when unknown."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return 0.0
    ticks = [int(v) for v in first[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


CPU_PARTS: Final = ("ingest", "broker", "postgres", "generator", "total")


def _cpu_now(target: _Target, ingest_pids: list[int | None]) -> tuple[float, float, float, float]:
    """CPU seconds so far: ingest (all workers), Mosquitto, PostgreSQL (postmaster and
    every backend, exited ones included), and the whole machine's busy time."""
    return (
        sum(cpu_seconds(pid) for pid in ingest_pids),
        cpu_seconds(target.broker_pid),
        tree_cpu_seconds(target.postgres_pid),
        _machine_busy_s(),
    )


def _cpu_per_fix(
    figures: dict[str, float], generator_cpu: float, target: _Target
) -> dict[str, float]:
    """CPU microseconds per stored fix of each process over the measured window (NaN for a
    process the bench did not start, so cannot see)."""
    rate = max(figures["rate"], 1e-9)
    nan = float("nan")
    per_fix = {
        "ingest": figures["ingest_cpu"] / rate * 1e6,
        "broker": figures["broker_cpu"] / rate * 1e6 if target.broker_pid else nan,
        "postgres": figures["postgres_cpu"] / rate * 1e6 if target.postgres_pid else nan,
        "generator": generator_cpu / rate * 1e6,
    }
    per_fix["total"] = sum(v for v in per_fix.values() if not math.isnan(v))
    return {f"{name}_us_per_fix": value for name, value in per_fix.items()}


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
                "FLEET_BATCH_MAX_FIXES": str(opts.batch_max_fixes),
                "FLEET_BATCH_MAX_MS": str(opts.batch_max_ms),
                "FLEET_LOG_LEVEL": "WARNING",
                "FLEET_ANALYTICS": "false",  # measured on its own: fleet bench analytics
            }
            if not opts.receipts:
                env["FLEET_RECEIPTS"] = "false"  # neither side pays for them
            worker = _Workers(env, workdir, opts.workers)
            worker.start()
            run = _Run(opts, target, worker, say)
            prefix = f"B{int(time.time()) % 100000}-"
            say(
                f"load: {opts.rate:.0f} fixes/s from {opts.devices} devices in {opts.procs} "
                f"processes for {opts.duration_s:.0f} s ({opts.per_message} fix/message), "
                f"storage receipts {'on' if opts.receipts else 'off'}, "
                f"{opts.workers} ingest worker{'s' if opts.workers > 1 else ''}"
            )
            figures = _steady_state(run, prefix)
            if opts.backlog_s > 0:
                figures |= _backlog(run, prefix + "L")
            worker.stop()
    return figures


def _steady_state(run: _Run, prefix: str) -> dict[str, float]:
    opts, worker, say = run.opts, run.worker, run.say
    out: list[list[LoadResult]] = []
    load = threading.Thread(
        target=lambda: out.append(_run_load(run, prefix, opts.rate, opts.duration_s, False)),
        name="bench-load",
    )
    load.start()
    time.sleep(opts.warmup_s)
    ingest_pids = worker.pids
    t_a = time.monotonic()
    before = worker.scrape()
    cpu_a = _cpu_now(run.target, ingest_pids)
    time.sleep(max(1.0, opts.duration_s - opts.warmup_s - 1.0))
    t_b = time.monotonic()
    after = worker.scrape()
    cpu_b = _cpu_now(run.target, ingest_pids)
    load.join()
    if not out:
        raise RuntimeError("the load generator failed; see the messages above")
    results = out[0]
    generated = sum(r.generated for r in results)
    confirmed = sum(r.confirmed for r in results)
    stored, _ = _wait_stored(run.target.dsn, prefix, confirmed, 60)
    window = t_b - t_a

    def per_s(name: str) -> float:
        return (metric_value(after, name) - metric_value(before, name)) / window

    rate = per_s("fleet_ingest_fixes_stored_total")
    hb = histogram(before, "fleet_ingest_lag_seconds")
    ha = histogram(after, "fleet_ingest_lag_seconds")
    final = worker.scrape()
    # Every telemetry message passes the broker twice (generator → broker → ingest), every
    # receipt too (ingest → broker → the generator of that van).
    telemetry_s = per_s("fleet_ingest_messages_received_total")
    receipts_s = per_s("fleet_ingest_receipts_sent_total")
    figures = {
        "rate": rate,
        "p50_ms": quantile(0.5, hb, ha) * 1000,
        "p99_ms": quantile(0.99, hb, ha) * 1000,
        "lost": float(max(0, confirmed - stored)),
        "dup": metric_value(final, "fleet_ingest_fixes_duplicate_total"),
        "published": float(generated),
        "acked": float(confirmed),
        "stored": float(stored),
        "broker_publish_per_s": 2 * (telemetry_s + receipts_s),
        "receipts_per_s": receipts_s,
        "ingest_cpu": (cpu_b[0] - cpu_a[0]) / window,
        "broker_cpu": (cpu_b[1] - cpu_a[1]) / window,
        "postgres_cpu": (cpu_b[2] - cpu_a[2]) / window,
        "machine_busy": (cpu_b[3] - cpu_a[3]) / window,
    }
    generator_cpu = sum(r.cpu_s for r in results) / max(r.seconds for r in results)
    figures |= _cpu_per_fix(figures, generator_cpu, run.target)
    gen_rate = generated / max(r.seconds for r in results)
    bb = histogram(before, "fleet_ingest_batch_seconds")
    ba = histogram(after, "fleet_ingest_batch_seconds")
    batches = metric_value(after, "fleet_ingest_batches_total") - metric_value(
        before, "fleet_ingest_batches_total"
    )
    mean_batch = rate * window / max(batches, 1)
    b50, b99 = quantile(0.5, bb, ba) * 1000, quantile(0.99, bb, ba) * 1000
    say(
        f"batches={batches:.0f} mean_batch={mean_batch:.0f} "
        f"batch_p50_ms={b50:.0f} batch_p99_ms={b99:.0f}"
    )
    say(
        f"broker_publish_per_s={figures['broker_publish_per_s']:.0f} "
        f"(telemetry {telemetry_s:.0f}/s, receipts {receipts_s:.0f}/s, each in and out) "
        f"ingest_cpu={figures['ingest_cpu']:.2f} broker_cpu={figures['broker_cpu']:.2f} "
        f"postgres_cpu={figures['postgres_cpu']:.2f} generator_cpu={generator_cpu:.2f} "
        f"machine_busy={figures['machine_busy']:.2f} of {os.cpu_count()} (cores)"
    )
    say(
        "cpu_us_per_fix: "
        + " ".join(
            f"{name}=n/a"
            if math.isnan(figures[f"{name}_us_per_fix"])
            else f"{name}={figures[f'{name}_us_per_fix']:.1f}"
            for name in CPU_PARTS
        )
        + " (CPU microseconds per stored fix; n/a: not started by the bench)"
    )
    what = "confirmed" if opts.receipts else "acked"
    say(
        f"generated={generated} {what}={confirmed} "
        f"resent={sum(r.resent for r in results)} unconfirmed={sum(r.open for r in results)} "
        f"stored={stored} generator_rate={gen_rate:.0f}/s window={window:.1f}s"
    )
    return figures


def _backlog(run: _Run, prefix: str) -> dict[str, float]:
    """Publish a backlog while the worker is down, restart it, time the drain.

    The backlog generators count PUBACKs, not receipts (they cannot wait for receipts
    while the worker is down, and keeping ten minutes of fixes would take gigabytes);
    the drain is measured from the database.
    """
    opts, worker, say = run.opts, run.worker, run.say
    worker.stop()
    n = int(opts.rate * opts.backlog_s)
    say(f"backlog: worker stopped; publishing {n} fixes ({opts.backlog_s:.0f} s at target rate)")
    results = _run_load(run, prefix, opts.rate, opts.backlog_s, True)
    acked = sum(r.confirmed for r in results)
    t_pub = max(r.confirmed_s for r in results)
    say(f"backlog published (PUBACKed) in {t_pub:.1f} s; restarting the worker")
    worker.start()
    stored, drain_s = _wait_stored(run.target.dsn, prefix, acked, 3600)
    say(
        f"backlog_fixes={acked} drain_s={drain_s:.1f} drain_rate={stored / drain_s:.0f}/s "
        f"lost={max(0, acked - stored)}"
    )
    return {"backlog_fixes": float(acked), "drain_s": drain_s, "drain_lost": float(acked - stored)}
