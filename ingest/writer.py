"""One batch, one transaction: COPY fixes into a staging table, insert the new ones.

``(vehicle_id, ts)`` is the identity of a fix: ``INSERT ... ON CONFLICT DO NOTHING``
makes redelivery, store-and-forward backfill and repeats no-ops, and the count of rows
actually inserted tells new fixes from duplicates.  The same transaction keeps each
van's latest position (never moving it back in time), applies status messages and
writes the dead-letter rows, so a batch is either entirely committed or not at all.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Final

import psycopg

from fleet.contract import Fix

__all__ = ["Batch", "BatchWriter", "DeadLetter", "WriteResult"]

DEAD_LETTER_PAYLOAD_BYTES: Final = 1024

_STAGE_DDL: Final = """
CREATE TEMP TABLE IF NOT EXISTS positions_stage (
    vehicle_id text NOT NULL,
    ts_ms      bigint NOT NULL,
    lat        double precision NOT NULL,
    lon        double precision NOT NULL,
    speed      real,
    heading    real,
    accuracy   real,
    route      text,
    seq        bigint
) ON COMMIT DELETE ROWS
"""

_COPY: Final = (
    "COPY positions_stage (vehicle_id, ts_ms, lat, lon, speed, heading, accuracy, route, seq)"
    " FROM STDIN (FORMAT BINARY)"
)
_COPY_TYPES: Final = [
    "text",
    "int8",
    "float8",
    "float8",
    "float4",
    "float4",
    "float4",
    "text",
    "int8",
]

_INSERT: Final = """
WITH inserted AS (
    INSERT INTO positions (vehicle_id, ts, lat, lon, speed, heading, accuracy, route, seq)
    SELECT vehicle_id, timestamptz 'epoch' + ts_ms * interval '1 millisecond',
           lat, lon, speed, heading, accuracy, route, seq
    FROM positions_stage
    ON CONFLICT (vehicle_id, ts) DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM inserted
"""

# Latest position per van; the WHERE clause keeps a late backfill from moving a van back.
# ORDER BY vehicle_id gives concurrent workers one lock order (no deadlocks).
_LATEST: Final = """
INSERT INTO vehicles AS v (vehicle_id, route, last_ts, lat, lon, speed, heading, accuracy)
SELECT vehicle_id, route, timestamptz 'epoch' + ts_ms * interval '1 millisecond',
       lat, lon, speed, heading, accuracy
FROM (
    SELECT DISTINCT ON (vehicle_id) *
    FROM positions_stage
    ORDER BY vehicle_id, ts_ms DESC
) latest
ORDER BY vehicle_id
ON CONFLICT (vehicle_id) DO UPDATE SET
    route = coalesce(EXCLUDED.route, v.route),
    last_ts = EXCLUDED.last_ts,
    lat = EXCLUDED.lat,
    lon = EXCLUDED.lon,
    speed = EXCLUDED.speed,
    heading = EXCLUDED.heading,
    accuracy = EXCLUDED.accuracy
WHERE v.last_ts IS NULL OR EXCLUDED.last_ts > v.last_ts
"""

_STATUS: Final = """
INSERT INTO vehicles AS v (vehicle_id, status, status_at)
VALUES (%s, %s, now())
ON CONFLICT (vehicle_id) DO UPDATE SET status = EXCLUDED.status, status_at = EXCLUDED.status_at
"""

_DEAD_LETTER: Final = (
    "INSERT INTO rejected_messages (topic, reason, detail, payload) VALUES (%s, %s, %s, %s)"
)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    reason: str
    detail: str
    payload: bytes


@dataclass(slots=True)
class Batch:
    """What one transaction writes."""

    fixes: list[tuple[str, Fix]] = field(default_factory=list)
    statuses: dict[str, str] = field(default_factory=dict)  # last status per van wins
    dead_letters: list[DeadLetter] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.fixes) + len(self.statuses) + len(self.dead_letters)


@dataclass(frozen=True, slots=True)
class WriteResult:
    stored: int
    duplicates: int


class BatchWriter:
    """Writes batches over one connection (reconnect by making a new writer)."""

    def __init__(self, dsn: str, connect_timeout: float = 5.0) -> None:
        self.conn = psycopg.connect(dsn, autocommit=False, connect_timeout=int(connect_timeout))
        self.conn.execute(_STAGE_DDL)
        self.conn.commit()

    def close(self) -> None:
        self.conn.close()

    def write(self, batch: Batch) -> WriteResult:
        conn = self.conn
        stored = 0
        try:
            with conn.cursor() as cur:
                if batch.fixes:
                    with cur.copy(_COPY) as copy:
                        copy.set_types(_COPY_TYPES)
                        write_row = copy.write_row
                        for vid, f in batch.fixes:
                            write_row(
                                (
                                    vid,
                                    f.ts,
                                    f.lat,
                                    f.lon,
                                    f.speed,
                                    f.heading,
                                    f.accuracy,
                                    f.route,
                                    f.seq,
                                )
                            )
                    cur.execute(_INSERT)
                    row = cur.fetchone()
                    stored = int(row[0]) if row else 0
                    cur.execute(_LATEST)
                for vid, status in sorted(batch.statuses.items()):
                    cur.execute(_STATUS, (vid, status))
                if batch.dead_letters:
                    cur.executemany(
                        _DEAD_LETTER,
                        [
                            (
                                d.topic,
                                d.reason,
                                d.detail[:500],
                                d.payload[:DEAD_LETTER_PAYLOAD_BYTES],
                            )
                            for d in batch.dead_letters
                        ],
                    )
            conn.commit()
        except BaseException:
            if not conn.closed:
                with contextlib.suppress(psycopg.Error):
                    conn.rollback()
            raise
        return WriteResult(stored=stored, duplicates=len(batch.fixes) - stored)
