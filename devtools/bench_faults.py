"""``fleet bench faults``: kill -9 every process of the write path; count what was lost.

Receipt-aware devices (:class:`devtools.loadgen.LoadGenerator`, see
:mod:`devtools.devices`) publish at a fixed rate while the benchmark SIGKILLs, at the
fixed times of :func:`schedule` (scaled to the duration), Mosquitto, the PostgreSQL
postmaster and ``fleet ingest`` — each under live load and each while a backlog is
queued or being drained — and restarts each on its own data directory. Then generation
stops, the devices' queues drain (every generated fix settled by a receipt, or the
timeout), and :mod:`devtools.audit` counts, from what was *generated*, what is missing
from ``positions`` and what is there twice.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg

from devtools.audit import Audit, audit_run
from devtools.devices import generated_fixes, receipt_aware_devices
from devtools.processes import ChildError
from devtools.rig import FaultRig

__all__ = ["FaultOptions", "FaultReport", "SetupError", "Step", "run_faults_bench", "schedule"]

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 10.0
DRAINING_WAIT_S = 30.0


class SetupError(RuntimeError):
    """Broker, database or ingest did not start; the message says which and why."""


@dataclass(frozen=True)
class FaultOptions:
    duration_s: float = 120.0
    devices: int = 500
    rate: float = 2000.0
    resend_after_s: float = 10.0
    resend_max_s: float = 30.0
    drain_timeout_s: float = 300.0
    keep_dir: bool = False


@dataclass(frozen=True)
class Step:
    """One fault. ``at_s`` from the start of load; a step never starts before the last ended."""

    at_s: float
    action: str  # kill-broker | kill-postgres | kill-ingest | ingest-down | ingest-up
    when: str  # live | backlog | draining

    def describe(self) -> str:
        what = {
            "kill-broker": "kill -9 Mosquitto, restart on its data dir",
            "kill-postgres": "kill -9 the PostgreSQL postmaster, restart on its data dir",
            "kill-ingest": "kill -9 fleet ingest, restart it",
            "ingest-down": "kill -9 fleet ingest and leave it down (a backlog builds)",
            "ingest-up": "start fleet ingest (it drains the backlog)",
        }[self.action]
        return f"{self.at_s:6.1f} s  {what}  [{self.when}]"


def schedule(duration_s: float) -> list[Step]:
    """The fixed fault times for a run of ``duration_s`` seconds of load.

    Live faults and the backlog window scale with the duration. The two kills during the
    drain follow the ingest restart at once (a backlog of a minute's load drains in
    seconds: 27,000 fixes/s, docs/benchmarks.md): a step never starts before the previous
    one ended, and a ``draining`` step waits until ingest has committed a batch since
    (it is working through the backlog) before it kills.
    """
    d = duration_s
    up = 0.60 * d
    return [
        Step(0.10 * d, "kill-broker", "live"),
        Step(0.20 * d, "kill-postgres", "live"),
        Step(0.30 * d, "kill-ingest", "live"),
        Step(0.40 * d, "ingest-down", "backlog"),
        Step(0.50 * d, "kill-broker", "backlog"),
        Step(up, "ingest-up", "backlog"),
        Step(up + 0.5, "kill-postgres", "draining"),
        Step(up + 1.0, "kill-ingest", "draining"),
    ]


@dataclass(frozen=True)
class FaultReport:
    audit: Audit
    confirmed: int
    drain_s: float
    drained: bool  # every generated fix settled by a receipt before the timeout

    @property
    def ok(self) -> bool:
        return self.audit.clean and self.drained

    def last_line(self) -> str:
        a = self.audit
        return (
            f"generated={a.generated} confirmed={self.confirmed} stored={a.stored} "
            f"lost={a.lost} dup_rows={a.dup_rows} drain_s={self.drain_s:.1f}"
        )


def _stored(dsn: str, prefix: str) -> str:
    """Rows of this run so far, or '?' while the database is down."""
    try:
        with psycopg.connect(dsn, connect_timeout=2) as conn:
            row = conn.execute(
                "SELECT count(*) FROM positions WHERE vehicle_id LIKE %s", (prefix + "%",)
            ).fetchone()
    except psycopg.Error:
        return "?"
    return str(row[0]) if row else "0"


class _Run:
    def __init__(self, opts: FaultOptions, rig: FaultRig, say: Callable[[str], None]) -> None:
        self.opts = opts
        self.rig = rig
        self.say = say
        self.prefix = f"F{int(time.time()) % 100000}-"
        self.devices = receipt_aware_devices(
            port=rig.broker.port,
            gateway_password=rig.creds["svc-gateway"],
            devices=opts.devices,
            rate=opts.rate,
            vehicle_prefix=self.prefix,
            resend_after_s=opts.resend_after_s,
            resend_max_s=opts.resend_max_s,
        )
        self.t0 = 0.0

    def status(self) -> str:
        d = self.devices
        return (
            f"generated={d.generated} confirmed={d.confirmed} open={d.open} "
            f"resent={d.resent} stored={_stored(self.rig.dsn, self.prefix)}"
        )

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def _do(self, step: Step) -> str:
        rig = self.rig
        if step.action == "kill-broker":
            pid = rig.kill_broker()
            t = time.monotonic()
            rig.restart_broker()
            return f"mosquitto pid {pid} killed; back in {time.monotonic() - t:.1f} s"
        if step.action == "kill-postgres":
            pid = rig.kill_postgres()
            t = time.monotonic()
            rig.restart_postgres()
            return f"postmaster pid {pid} killed; back in {time.monotonic() - t:.1f} s"
        if step.action == "kill-ingest":
            pid = rig.kill_ingest()
            t = time.monotonic()
            rig.start_ingest()
            return f"ingest pid {pid} killed; healthy again in {time.monotonic() - t:.1f} s"
        if step.action == "ingest-down":
            return f"ingest pid {rig.kill_ingest()} killed; stays down"
        if step.action == "ingest-up":
            t = time.monotonic()
            rig.start_ingest()
            return f"ingest healthy in {time.monotonic() - t:.1f} s"
        raise ValueError(step.action)

    def _ingest_batches(self) -> float | None:
        """Batches the running ingest committed since it started (None: not answering)."""
        ingest = self.rig.ingest
        if ingest is None or not ingest.running():
            return None
        try:
            return ingest.metric("fleet_ingest_batches_total")
        except httpx.HTTPError:
            return None

    def _wait_draining(self, since: float | None) -> str:
        """Block until ingest commits again (it is working through the backlog), ≤ 30 s."""
        deadline = time.monotonic() + DRAINING_WAIT_S
        while time.monotonic() < deadline:
            n = self._ingest_batches()
            if n is not None and n > (since or 0):
                return f"ingest committing ({n:.0f} batches since its start)"
            time.sleep(0.02)
        return f"ingest did not commit within {DRAINING_WAIT_S:.0f} s"

    def run_schedule(self, steps: list[Step]) -> None:
        every = PROGRESS_EVERY_S
        next_progress = every
        pending = list(steps)
        batches: float | None = None  # ingest's committed batches when the last step ended
        # a schedule that overran the duration (slow restarts) still runs every step
        while pending or self.elapsed() < self.opts.duration_s:
            now = self.elapsed()
            if pending and now >= pending[0].at_s:
                step = pending.pop(0)
                state = self._wait_draining(batches) + "; " if step.when == "draining" else ""
                state += f"open={self.devices.open} stored={_stored(self.rig.dsn, self.prefix)}"
                at = self.elapsed()
                outcome = self._do(step)
                batches = self._ingest_batches()
                self.say(f"t={at:5.1f}s {step.action} [{step.when}] ({state}): {outcome}")
                continue
            if now >= next_progress:
                self.say(f"t={now:5.1f}s {self.status()}")
                while next_progress <= self.elapsed():
                    next_progress += every
            time.sleep(0.05)


def run_faults_bench(opts: FaultOptions, say: Callable[[str], None]) -> FaultReport:
    workdir = Path(tempfile.mkdtemp(prefix="fleet-faults-"))
    # traverse-only for others: the database server's user (as root) keeps its files in
    # here, so removing this directory removes all of the run's state
    workdir.chmod(0o711)
    rig = FaultRig(workdir)
    try:
        say(f"state in {workdir}; starting PostgreSQL, Mosquitto and fleet ingest")
        try:
            rig.start()
        except ChildError as exc:  # ingest exited or never got healthy
            raise SetupError(f"the rig did not come up: {exc}") from None
        run = _Run(opts, rig, say)
        steps = schedule(opts.duration_s)
        say(
            f"load: {opts.rate:.0f} fixes/s from {opts.devices} receipt-aware devices "
            f"for {opts.duration_s:.0f} s (resend after {opts.resend_after_s:.0f} s, "
            f"up to {opts.resend_max_s:.0f} s); schedule:"
        )
        for step in steps:
            say("  " + step.describe())
        run.devices.start()
        run.t0 = time.monotonic()
        try:
            run.run_schedule(steps)
            run.devices.stop_generating()
            say(f"t={run.elapsed():5.1f}s generation stopped; draining: {run.status()}")
            t_drain = time.monotonic()
            drained = _drain(run, opts.drain_timeout_s)
            drain_s = time.monotonic() - t_drain
            say(f"drained={drained} in {drain_s:.1f} s: {run.status()}")
        finally:
            run.devices.close()
        result = audit_run(rig.dsn, generated_fixes(run.devices))
        if result.stray:
            say(f"stray rows (no generated fix has their ts): {result.stray}")
        return FaultReport(result, run.devices.confirmed, drain_s, drained)
    finally:
        try:
            rig.close()
        finally:
            if opts.keep_dir:
                say(f"state kept in {workdir}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)


def _drain(run: _Run, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if run.devices.wait_confirmed(min(PROGRESS_EVERY_S, deadline - time.monotonic())):
            return True
        run.say(f"t={run.elapsed():5.1f}s draining: {run.status()}")
    return run.devices.wait_confirmed(0)
