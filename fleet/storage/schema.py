"""The database schema as versioned migrations: the one place for all SQL DDL.

Each migration has the SQL that runs everywhere (plain PostgreSQL) and, optionally,
the SQL that runs only when the ``timescaledb`` extension is installed: hypertables,
compression, retention and continuous aggregates, written from the TimescaleDB 2.x
documentation (``create_hypertable(... by_range(...))``, ``ALTER TABLE ... SET
(timescaledb.compress ...)``, ``add_compression_policy``, ``add_retention_policy``,
``CREATE MATERIALIZED VIEW ... WITH (timescaledb.continuous)``,
``add_continuous_aggregate_policy``).  On plain PostgreSQL the same tables are ordinary
tables with a BRIN time index, and rollups are refreshed by SQL (``date_bin``).

Components add migrations by appending to ``MIGRATIONS`` with the next version; an
applied migration is never edited, only followed by a new one.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MIGRATIONS", "Migration", "TimescalePolicy"]


@dataclass(frozen=True)
class TimescalePolicy:
    """Intervals for TimescaleDB policies (from settings); ignored on plain PostgreSQL."""

    chunk_interval: str = "1 day"
    compress_after: str = "7 days"
    retain_for: str = "400 days"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str
    timescale_sql: str = ""  # formatted with TimescalePolicy fields
    plain_sql: str = ""  # only when TimescaleDB is absent


CORE = Migration(
    version=1,
    name="core telemetry tables",
    sql="""
CREATE TABLE IF NOT EXISTS vehicles (
    vehicle_id   text PRIMARY KEY,
    route        text,
    first_seen   timestamptz NOT NULL DEFAULT now(),
    last_ts      timestamptz,
    lat          double precision,
    lon          double precision,
    speed        real,
    heading      real,
    accuracy     real,
    status       text NOT NULL DEFAULT 'unknown',
    status_at    timestamptz
);

CREATE TABLE IF NOT EXISTS positions (
    vehicle_id   text NOT NULL,
    ts           timestamptz NOT NULL,
    lat          double precision NOT NULL,
    lon          double precision NOT NULL,
    speed        real,
    heading      real,
    accuracy     real,
    route        text,
    seq          bigint,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (vehicle_id, ts)
);

-- Latest position per van, kept by ingest with a guarded upsert (a late backfill
-- never moves a van backwards).
CREATE OR REPLACE VIEW latest_positions AS
    SELECT vehicle_id, route, last_ts AS ts, lat, lon, speed, heading, accuracy, status, status_at
    FROM vehicles WHERE last_ts IS NOT NULL;

CREATE TABLE IF NOT EXISTS rejected_messages (
    id           bigserial PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now(),
    topic        text NOT NULL,
    reason       text NOT NULL,
    detail       text NOT NULL,
    payload      bytea NOT NULL  -- the first 1 KiB of what was received
);
CREATE INDEX IF NOT EXISTS rejected_messages_received_at ON rejected_messages (received_at);
CREATE INDEX IF NOT EXISTS rejected_messages_reason ON rejected_messages (reason, received_at);
""",
    timescale_sql="""
SELECT create_hypertable('positions', by_range('ts', INTERVAL '{chunk_interval}'),
                         if_not_exists => TRUE, migrate_data => TRUE);
ALTER TABLE positions SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'vehicle_id',
    timescaledb.compress_orderby = 'ts DESC'
);
SELECT add_compression_policy('positions', INTERVAL '{compress_after}', if_not_exists => TRUE);
SELECT add_retention_policy('positions', INTERVAL '{retain_for}', if_not_exists => TRUE);
""",
    plain_sql="""
CREATE INDEX IF NOT EXISTS positions_ts_brin ON positions USING brin (ts);
""",
)

MIGRATIONS: list[Migration] = [CORE]
