"""Find the database: an explicit DSN, or the embedded server in the data directory."""

from __future__ import annotations

from pathlib import Path

from fleet.storage.embedded import EmbeddedPostgres

__all__ = ["resolve_dsn"]


def resolve_dsn(dsn: str | None, data_dir: Path) -> str:
    """Return ``dsn`` or start (if needed) the embedded PostgreSQL under ``data_dir``."""
    if dsn:
        return dsn
    pg = EmbeddedPostgres(data_dir / "postgres")
    pg.start()
    return pg.dsn
