"""``fleet db migrate`` and ``fleet db start`` (embedded PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import typer

from fleet import logs
from fleet.settings import CommonSettings, load
from fleet.storage.connect import resolve_dsn
from fleet.storage.migrate import migrate


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    db = groups["db"]

    @db.command("migrate")
    def db_migrate(
        dsn: str = typer.Option(None, help="PostgreSQL DSN (default FLEET_DSN or embedded)."),
        data_dir: Path = typer.Option(None),
    ) -> None:
        """Apply pending schema migrations (idempotent)."""
        s = load(CommonSettings)
        logs.configure(s.log_level, s.log_format)
        target = resolve_dsn(dsn or s.dsn, data_dir or s.data_dir)
        applied = migrate(target)
        typer.echo(f"applied {applied}" if applied else "schema is up to date")
