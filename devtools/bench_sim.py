"""``fleet bench sim``: how many fixes/s the simulator can publish in gateway mode.

Starts its own Mosquitto (project config) on a free port, runs the simulator as fast
as it can (no pacing, no dropouts: one fix per MQTT message, QoS 1) in ``procs``
processes for ``seconds``, and counts the fixes the broker acknowledged (PUBACK).
Nothing subscribes, so this measures generation + publishing, not delivery.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from broker.runner import MosquittoBroker
from fleet.routes import load_routes
from fleet.storage.embedded import free_port
from tracker_sim.links import Credentials
from tracker_sim.runner import SimOptions, SimStats, run_processes, split_vehicles

__all__ = ["SimBenchOptions", "run_sim_bench"]


@dataclass(frozen=True)
class SimBenchOptions:
    vehicles: int = 10_000
    procs: int = 2
    connections: int = 2
    seconds: float = 20.0
    report_interval_s: float = 5.0
    max_outstanding: int = 5000


def run_sim_bench(opts: SimBenchOptions, echo: Callable[[str], None]) -> SimStats:
    routes = load_routes()
    with tempfile.TemporaryDirectory(prefix="fleet-bench-sim-") as tmp:
        broker = MosquittoBroker(Path(tmp), port=free_port())
        broker.start()
        try:
            creds = broker.layout.service_credentials()
            sim = SimOptions(
                host="127.0.0.1",
                port=broker.port,
                mode="gateway",
                vehicles_per_route=split_vehicles(routes, opts.vehicles),
                start_ms=int(time.time() * 1000) - 2 * 86_400_000,
                report_interval_s=opts.report_interval_s,
                speedup=0.0,
                wall_limit_s=opts.seconds,
                dropout=False,
                connections=opts.connections,
                gateway=Credentials("svc-gateway", creds["svc-gateway"]),
                max_outstanding=opts.max_outstanding,
            )
            echo(
                f"bench sim: {opts.vehicles} vans, {opts.procs} process(es) × "
                f"{opts.connections} connection(s), QoS 1, 1 fix per message, "
                f"{opts.seconds:.0f} s, broker 127.0.0.1:{broker.port}"
            )
            stats = run_processes(sim, opts.procs, threading.Event())
        finally:
            broker.stop()
    return stats
