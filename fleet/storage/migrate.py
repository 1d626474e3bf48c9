"""Apply the schema migrations: idempotent, serialised by an advisory lock."""

from __future__ import annotations

import logging
from dataclasses import asdict

import psycopg

from fleet.storage.schema import MIGRATIONS, Migration, TimescalePolicy

__all__ = ["applied_versions", "has_timescaledb", "migrate"]

log = logging.getLogger(__name__)

_LOCK_KEY = 0x6E1EE7  # pg_advisory_xact_lock key: one migrator at a time


def timescaledb_available(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    return row is not None


def has_timescaledb(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    return row is not None


def applied_versions(conn: psycopg.Connection) -> set[int]:
    conn.execute(
        """CREATE TABLE IF NOT EXISTS schema_migrations (
               version    integer PRIMARY KEY,
               name       text NOT NULL,
               timescale  boolean NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now())"""
    )
    return {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}


def _apply(
    conn: psycopg.Connection, m: Migration, timescale: bool, policy: TimescalePolicy
) -> None:
    conn.execute(m.sql.encode())
    extra = m.timescale_sql.format(**asdict(policy)) if timescale else m.plain_sql
    if extra.strip():
        conn.execute(extra.encode())
    conn.execute(
        "INSERT INTO schema_migrations (version, name, timescale) VALUES (%s, %s, %s)",
        (m.version, m.name, timescale),
    )


def migrate(
    dsn: str, policy: TimescalePolicy | None = None, use_timescale: bool = True
) -> list[int]:
    """Bring the database to the latest version; return the versions applied now."""
    policy = policy or TimescalePolicy()
    done: list[int] = []
    with psycopg.connect(dsn, autocommit=False) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        if use_timescale and timescaledb_available(conn):
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        timescale = has_timescaledb(conn)
        have = applied_versions(conn)
        for m in sorted(MIGRATIONS, key=lambda m: m.version):
            if m.version in have:
                continue
            _apply(conn, m, timescale, policy)
            log.info(
                "applied migration",
                extra={"version": m.version, "migration": m.name, "timescaledb": timescale},
            )
            done.append(m.version)
        conn.commit()
    return done
