"""The database schema as versioned migrations: the one place for all SQL DDL.

Each migration has the SQL that runs everywhere (plain PostgreSQL) and, optionally,
the SQL that runs only when the ``timescaledb`` extension is installed: hypertables,
compression, retention and continuous aggregates, written from the TimescaleDB 2.x
documentation (``create_hypertable(... by_range(...))``, ``ALTER TABLE ... SET
(timescaledb.compress ...)``, ``add_compression_policy``, ``add_retention_policy``,
``CREATE MATERIALIZED VIEW ... WITH (timescaledb.continuous)``,
``add_continuous_aggregate_policy``).  On plain PostgreSQL the same tables are ordinary
tables with a b-tree time index, and rollups are refreshed by SQL (``date_bin``).

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
) WITH (fillfactor = 50);  -- every fix updates its van's row: room for HOT updates

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

ANALYTICS = Migration(
    version=2,
    name="analytics: passages, segment and area speeds, alerts",
    sql="""
-- Checkpoint passages detected by ingest.analytics (recomputed per van/time window).
CREATE TABLE IF NOT EXISTS passages (
    vehicle_id      text NOT NULL,
    ts              timestamptz NOT NULL,
    route           text NOT NULL,
    direction       smallint NOT NULL,   -- 0 = increasing distance, 1 = decreasing
    checkpoint_seq  integer NOT NULL,
    checkpoint_id   text NOT NULL,
    PRIMARY KEY (vehicle_id, ts, route, checkpoint_seq, direction)
);
CREATE INDEX IF NOT EXISTS passages_stream ON passages (route, direction, checkpoint_seq, ts);

-- Checkpoint-to-checkpoint traversals (from successive passages of one van).
CREATE TABLE IF NOT EXISTS segment_traversals (
    vehicle_id  text NOT NULL,
    ts          timestamptz NOT NULL,         -- passage at the downstream checkpoint
    route       text NOT NULL,
    direction   smallint NOT NULL,
    from_seq    integer NOT NULL,
    to_seq      integer NOT NULL,
    travel_s    double precision NOT NULL,
    length_m    double precision NOT NULL,
    speed_mps   double precision NOT NULL,
    PRIMARY KEY (vehicle_id, ts, route, from_seq, direction)
);
CREATE INDEX IF NOT EXISTS segment_traversals_route_ts ON segment_traversals (route, ts);

-- Speeds per H3 cell (resolution 9) per 5-minute bucket; H3 indexing runs in Python,
-- so this is a table refreshed by the analytics loop on both paths.
CREATE TABLE IF NOT EXISTS area_speeds (
    bucket            timestamptz NOT NULL,
    cell              text NOT NULL,
    samples           integer NOT NULL,
    vans              integer NOT NULL,
    median_speed_mps  double precision NOT NULL,
    p85_speed_mps     double precision NOT NULL,
    PRIMARY KEY (bucket, cell)
);

CREATE TABLE IF NOT EXISTS alerts (
    id                bigserial PRIMARY KEY,
    created_at        timestamptz NOT NULL DEFAULT now(),
    kind              text NOT NULL CHECK (kind IN ('bunching', 'gap', 'stopped', 'offline')),
    route             text,
    direction         smallint,
    vehicle_id        text,
    other_vehicle_id  text,
    lat               double precision,
    lon               double precision,
    detail            jsonb NOT NULL DEFAULT '{}'::jsonb,
    resolved_at       timestamptz
);
-- At most one open alert per kind and van (pair): re-evaluation never duplicates it.
CREATE UNIQUE INDEX IF NOT EXISTS alerts_open_key
    ON alerts (kind, coalesce(vehicle_id, ''), coalesce(other_vehicle_id, ''))
    WHERE resolved_at IS NULL;
CREATE INDEX IF NOT EXISTS alerts_created_at ON alerts (created_at);

-- Where the analytics loop has got to (received_at watermark), per loop name.
CREATE TABLE IF NOT EXISTS analytics_state (
    name        text PRIMARY KEY,
    watermark   timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The loop finds late (store-and-forward) rows by arrival time.
CREATE INDEX IF NOT EXISTS positions_received_at_brin ON positions USING brin (received_at);
""",
    # TimescaleDB >= 2.7 (finalized continuous aggregates allow ordered-set aggregates
    # and DISTINCT).  Real-time aggregation is on so the newest buckets are visible
    # before the policy materializes them.
    timescale_sql="""
SELECT create_hypertable('passages', by_range('ts', INTERVAL '{chunk_interval}'),
                         if_not_exists => TRUE, migrate_data => TRUE);
SELECT create_hypertable('segment_traversals', by_range('ts', INTERVAL '{chunk_interval}'),
                         if_not_exists => TRUE, migrate_data => TRUE);
SELECT create_hypertable('area_speeds', by_range('bucket', INTERVAL '{chunk_interval}'),
                         if_not_exists => TRUE, migrate_data => TRUE);
CREATE MATERIALIZED VIEW IF NOT EXISTS segment_speeds
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '5 minutes', ts) AS bucket,
       route, direction, from_seq, to_seq,
       count(*)::integer AS samples,
       count(DISTINCT vehicle_id)::integer AS vans,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY travel_s) AS median_travel_s,
       percentile_cont(0.85) WITHIN GROUP (ORDER BY travel_s) AS p85_travel_s,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY speed_mps) AS median_speed_mps,
       percentile_cont(0.85) WITHIN GROUP (ORDER BY speed_mps) AS p85_speed_mps,
       avg(length_m) AS length_m
FROM segment_traversals
GROUP BY time_bucket(INTERVAL '5 minutes', ts), route, direction, from_seq, to_seq
WITH NO DATA;
SELECT add_continuous_aggregate_policy('segment_speeds',
    start_offset => INTERVAL '3 days',
    end_offset => INTERVAL '5 minutes',
    schedule_interval => INTERVAL '5 minutes',
    if_not_exists => TRUE);
SELECT add_retention_policy('passages', INTERVAL '{retain_for}', if_not_exists => TRUE);
SELECT add_retention_policy('segment_traversals', INTERVAL '{retain_for}', if_not_exists => TRUE);
""",
    # Plain PostgreSQL: the same rollup as a table, refreshed by the analytics loop
    # (analytics.congestion.refresh_segment_speeds, date_bin).
    plain_sql="""
CREATE TABLE IF NOT EXISTS segment_speeds (
    bucket            timestamptz NOT NULL,
    route             text NOT NULL,
    direction         smallint NOT NULL,
    from_seq          integer NOT NULL,
    to_seq            integer NOT NULL,
    samples           integer NOT NULL,
    vans              integer NOT NULL,
    median_travel_s   double precision NOT NULL,
    p85_travel_s      double precision NOT NULL,
    median_speed_mps  double precision NOT NULL,
    p85_speed_mps     double precision NOT NULL,
    length_m          double precision NOT NULL,
    PRIMARY KEY (bucket, route, direction, from_seq)
);
""",
)
MIGRATIONS.append(ANALYTICS)

API_TOKENS = Migration(
    version=3,
    name="api tokens",
    sql="""
CREATE TABLE IF NOT EXISTS api_tokens (
    id            bigserial PRIMARY KEY,
    name          text NOT NULL,
    role          text NOT NULL CHECK (role IN ('viewer', 'admin')),
    token_sha256  bytea NOT NULL UNIQUE,  -- the secret itself is never stored
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
""",
)
MIGRATIONS.append(API_TOKENS)

DEAD_LETTERS_PER_MESSAGE = Migration(
    version=4,
    name="one dead letter per rejected message, with its count of refused fixes",
    sql="""
ALTER TABLE rejected_messages ADD COLUMN IF NOT EXISTS bad_fixes integer NOT NULL DEFAULT 0;
COMMENT ON COLUMN rejected_messages.bad_fixes IS
    'fixes of the message that were refused (0: nothing in it was readable as a fix)';
""",
)
MIGRATIONS.append(DEAD_LETTERS_PER_MESSAGE)

ROLES_FOR_USERS = Migration(
    version=5,
    name="token roles for the city's users: viewer, operator, planner, admin",
    sql="""
ALTER TABLE api_tokens DROP CONSTRAINT IF EXISTS api_tokens_role_check;
ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_role_check
    CHECK (role IN ('viewer', 'operator', 'planner', 'admin'));
""",
)
MIGRATIONS.append(ROLES_FOR_USERS)

INCIDENTS = Migration(
    version=6,
    name="incidents: alerts folded per route and direction, worked by operators",
    sql="""
-- What an operator works (analytics.incidents): bunching and gap alerts of one route and
-- direction fold into one incident while the condition holds anywhere on it; stopped and
-- offline are one incident per van. The alerts rows stay: the evidence, one per van (pair).
-- Plain tables on both paths (a few rows an hour; never compressed or dropped).
CREATE TABLE IF NOT EXISTS incidents (
    id                     bigserial PRIMARY KEY,
    kind                   text NOT NULL,   -- an alerts.kind (checked there)
    scope                  text NOT NULL,   -- what folds: '<route>/<direction>', or the van id
    route                  text,
    direction              smallint,
    vehicle_id             text,            -- stopped and offline: the van
    vans                   text[] NOT NULL DEFAULT '{}',  -- every van involved so far
    active_vans            text[] NOT NULL DEFAULT '{}',  -- in the condition now
    lat                    double precision,              -- where it was last seen
    lon                    double precision,
    started_at             timestamptz NOT NULL DEFAULT now(),
    ended_at               timestamptz,     -- the condition stopped holding
    acknowledged_at        timestamptz,
    acknowledged_by        text,            -- the token's name
    acknowledged_by_token  bigint,
    acknowledge_note       text,
    resolved_at            timestamptz,
    resolved_by            text,            -- the token's name, or 'system' (it cleared)
    resolved_by_token      bigint,          -- NULL when resolved by the system
    resolve_note           text,
    CONSTRAINT incidents_ended_is_resolved CHECK (ended_at IS NULL OR resolved_at IS NOT NULL)
);
-- One unresolved incident per kind and scope: a reoccurrence after a resolve is a new one.
CREATE UNIQUE INDEX IF NOT EXISTS incidents_unresolved_key
    ON incidents (kind, scope) WHERE resolved_at IS NULL;
CREATE INDEX IF NOT EXISTS incidents_current ON incidents (id) WHERE ended_at IS NULL;
CREATE INDEX IF NOT EXISTS incidents_started_at ON incidents (started_at);
CREATE INDEX IF NOT EXISTS incidents_route_started_at ON incidents (route, started_at);

-- Every state change, in order: the history, and the feed the API pushes live.
CREATE TABLE IF NOT EXISTS incident_events (
    id           bigserial PRIMARY KEY,
    incident_id  bigint NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
    at           timestamptz NOT NULL DEFAULT now(),
    event        text NOT NULL
                 CHECK (event IN ('opened', 'updated', 'acknowledged', 'resolved', 'ended')),
    actor        text NOT NULL,               -- the token's name, or 'system'
    note         text,
    vans         text[] NOT NULL DEFAULT '{}' -- the incident's active vans after the change
);
CREATE INDEX IF NOT EXISTS incident_events_incident ON incident_events (incident_id, id);

ALTER TABLE alerts ADD COLUMN IF NOT EXISTS incident_id bigint REFERENCES incidents (id);
CREATE INDEX IF NOT EXISTS alerts_incident ON alerts (incident_id);
""",
)
MIGRATIONS.append(INCIDENTS)

REPLAY_TIME_INDEX = Migration(
    version=7,
    name="positions by time for the fleet replay stream (plain PostgreSQL)",
    sql="",
    # The replay stream pages positions in (ts, vehicle_id) order.  With only the BRIN
    # index a page sorts every row of its window: 1,020 ms for a one-hour window of 5,000
    # vans, 5 ms with this b-tree (docs/benchmarks.md, "Fleet replay queries").
    # TimescaleDB's hypertable already has its default (ts DESC) index.
    plain_sql="""
CREATE INDEX IF NOT EXISTS positions_ts ON positions (ts);
""",
)
MIGRATIONS.append(REPLAY_TIME_INDEX)

INCIDENT_HOLD_DOWN = Migration(
    version=8,
    name="incidents end only after their condition stayed clear (no flapping)",
    sql="""
ALTER TABLE incidents ADD COLUMN IF NOT EXISTS clear_since timestamptz;
COMMENT ON COLUMN incidents.clear_since IS
    'the condition cleared at this moment; the incident ends if it stays clear (analytics)';
""",
)
MIGRATIONS.append(INCIDENT_HOLD_DOWN)

POSITIONS_BY_ARRIVAL = Migration(
    version=9,
    name="positions by arrival time: a b-tree on received_at for the analytics loop's scan",
    # The loop finds each cycle's new rows by received_at. A BRIN index summarizes a
    # block range only when (auto)vacuum runs, and an insert-only table is vacuumed
    # after autovacuum_vacuum_insert_scale_factor (0.2) of it was inserted: every range
    # written since then matches any query, so each cycle re-read up to a fifth of the
    # table — history slowed the present (docs/benchmarks.md, "History and the
    # present"). A b-tree finds exactly the new rows; the rows of one ingest batch
    # share received_at (the transaction's now()), so b-tree deduplication keeps it
    # small, and inserts go to its rightmost leaf. On TimescaleDB the index is created
    # on every chunk of the hypertable (CREATE INDEX works on hypertables as on tables).
    sql="""
CREATE INDEX IF NOT EXISTS positions_received_at ON positions (received_at);
DROP INDEX IF EXISTS positions_received_at_brin;
""",
    # The alert evaluation reads the last two hours of passages every cycle; without an
    # index leading with ts that was a scan of every passage ever detected. A passages
    # hypertable has TimescaleDB's default (ts DESC) index already.
    plain_sql="""
CREATE INDEX IF NOT EXISTS passages_ts ON passages (ts);
""",
)
MIGRATIONS.append(POSITIONS_BY_ARRIVAL)

ONE_TIME_INDEX = Migration(
    version=10,
    name="positions: one time index on plain PostgreSQL (the BRIN beside the b-tree goes)",
    sql="",
    # Since migration 7 plain PostgreSQL has a b-tree on positions (ts), which answers
    # every time range the BRIN did; the BRIN only cost each inserted fix another index
    # entry: ingest's INSERT of a 2,200-fix batch 33.2 → 29.1 ms without it
    # (docs/benchmarks.md, "What bounds 20,000 and 100,000 fixes/s"). A hypertable never
    # had it (its default ts index does the job).
    plain_sql="""
DROP INDEX IF EXISTS positions_ts_brin;
""",
)
MIGRATIONS.append(ONE_TIME_INDEX)
