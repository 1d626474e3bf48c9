"""``fleet ingest`` and ``fleet bench ingest``."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

import typer

from fleet import logs
from fleet.settings import IngestSettings, load
from fleet.storage.connect import resolve_dsn
from fleet.storage.migrate import migrate


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    @app.command("ingest")
    def ingest_cmd(
        dsn: str = typer.Option(None, help="PostgreSQL DSN (default FLEET_DSN or embedded)."),
        data_dir: Path = typer.Option(None, help="State directory (default FLEET_DATA_DIR)."),
        migrate_first: bool = typer.Option(True, "--migrate/--no-migrate"),
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
        health.start()
        stop = threading.Event()

        def _stop(signum: int, frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        try:
            worker.run(stop)
        finally:
            health.stop()
