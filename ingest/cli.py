"""``fleet ingest`` and ``fleet bench ingest``."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import typer

from fleet import logs
from fleet.settings import IngestSettings, load
from fleet.storage.connect import resolve_dsn
from fleet.storage.migrate import migrate

if TYPE_CHECKING:
    from analytics.loop import AnalyticsLoop


def _analytics_loop(dsn: str) -> AnalyticsLoop:
    """The passages/congestion/alerts loop (issue 5), sharing this process."""
    from analytics.loop import AnalyticsLoop  # noqa: PLC0415
    from analytics.settings import AnalyticsSettings  # noqa: PLC0415
    from fleet.routes import load_routes  # noqa: PLC0415

    a = load(AnalyticsSettings)
    routes = load_routes(a.routes_path, checkpoint_spacing_m=a.checkpoint_spacing_m)
    return AnalyticsLoop(dsn, routes, a)


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    @app.command("ingest")
    def ingest_cmd(
        dsn: str = typer.Option(None, help="PostgreSQL DSN (default FLEET_DSN or embedded)."),
        data_dir: Path = typer.Option(None, help="State directory (default FLEET_DATA_DIR)."),
        migrate_first: bool = typer.Option(True, "--migrate/--no-migrate"),
        analytics: bool = typer.Option(
            None,
            "--analytics/--no-analytics",
            help="Run the analytics loop in this process (default FLEET_ANALYTICS, on).",
        ),
    ) -> None:
        """Consume telemetry from the broker and store it (ack after commit)."""
        from ingest.metrics import HealthServer, IngestMetrics  # noqa: PLC0415
        from ingest.worker import IngestWorker  # noqa: PLC0415

        s = load(IngestSettings)
        logs.configure(s.log_level, s.log_format)
        target = resolve_dsn(dsn or s.dsn, data_dir or s.data_dir)
        if migrate_first:
            migrate(target)
        worker = IngestWorker(s, target, IngestMetrics())
        health = HealthServer(s.metrics_bind, s.metrics_port, worker.health)
        loop = (
            _analytics_loop(target) if (s.analytics if analytics is None else analytics) else None
        )
        health.start()
        if loop is not None:
            loop.start()
        stop = threading.Event()

        def _stop(signum: int, frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        try:
            worker.run(stop)
        finally:
            if loop is not None:
                loop.stop()
            health.stop()

    @groups["bench"].command("ingest")
    def bench_ingest(
        rate: float = typer.Option(10_000, help="Target fixes/s in total."),
        duration: float = typer.Option(60, help="Seconds of load."),
        devices: int = typer.Option(1000, help="Simulated devices."),
        procs: int = typer.Option(2, help="Load-generator processes."),
        per_message: int = typer.Option(1, help="Fixes per MQTT message (1 = no batching)."),
        backlog: float = typer.Option(
            0, help="Then: seconds of load to pile up with the worker down."
        ),
        batch_max_fixes: int = typer.Option(1000),
        batch_max_ms: int = typer.Option(50),
        dsn: str = typer.Option(None, help="Use this database instead of an embedded one."),
        mqtt_port: int = typer.Option(
            None,
            help="Use a running broker on 127.0.0.1 (passwords of svc-ingest and svc-gateway "
            "from FLEET_MQTT_PASSWORD and FLEET_GATEWAY_PASSWORD).",
        ),
        gateway_password: str = typer.Option(None, envvar="FLEET_GATEWAY_PASSWORD", hidden=True),
    ) -> None:
        """Measure sustained ingest rate, publish→commit latency, loss and duplicates."""
        from ingest.bench import BenchOptions, run_ingest_bench  # noqa: PLC0415

        logs.configure("WARNING")
        opts = BenchOptions(
            rate=rate,
            duration_s=duration,
            devices=devices,
            procs=procs,
            per_message=per_message,
            backlog_s=backlog,
            batch_max_fixes=batch_max_fixes,
            batch_max_ms=batch_max_ms,
            dsn=dsn,
            mqtt_port=mqtt_port,
            mqtt_password=gateway_password,
        )
        f = run_ingest_bench(opts, typer.echo)
        typer.echo(
            f"rate={f['rate']:.0f} p50_ms={f['p50_ms']:.0f} p99_ms={f['p99_ms']:.0f} "
            f"lost={f['lost']:.0f} dup={f['dup']:.0f}"
        )
