"""``fleet ingest``."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import typer

from fleet import logs
from fleet.gctune import tune_gc
from fleet.settings import IngestSettings, load
from fleet.storage.connect import resolve_dsn
from fleet.storage.migrate import migrate

if TYPE_CHECKING:
    from analytics.loop import AnalyticsLoop


def _analytics_loop(dsn: str) -> AnalyticsLoop:
    """The passages/congestion/alerts loop, sharing this process (and its settings: the
    loop bounds its scan by the horizon this worker validates fixes with)."""
    from analytics.loop import AnalyticsLoop  # noqa: PLC0415

    return AnalyticsLoop.from_env(dsn)


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
        tune_gc()
        try:
            worker.run(stop)
        finally:
            if loop is not None:
                loop.stop()
            health.stop()
