"""One batch, one transaction: COPY fixes into a staging table, insert the new ones.

A batch is a list of :class:`Item`, one per MQTT message, so that a message whose data
PostgreSQL refuses can be found and dead-lettered alone (the worker bisects on
:func:`is_data_error`).

``(vehicle_id, ts)`` is the identity of a fix: ``INSERT ... ON CONFLICT DO NOTHING``
makes redelivery, store-and-forward backfill and repeats no-ops, and the count of rows
actually inserted tells new fixes from duplicates.  The same transaction keeps each
van's latest position (never moving it back in time), applies status messages and
writes the dead-letter rows, so a batch is either entirely committed or not at all.

The columns are listed once (:data:`POSITION_COLUMNS`): the stage table, the binary COPY,
the insert and the latest-position upsert are derived from that list.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Final

import msgspec
import psycopg
from msgspec.structs import astuple

from fleet.contract import Fix

__all__ = [
    "POSITION_COLUMNS",
    "BatchWriter",
    "DeadLetter",
    "Item",
    "PositionColumn",
    "WriteResult",
    "copy_to_stage",
    "is_data_error",
    "printable",
]

DEAD_LETTER_PAYLOAD_BYTES: Final = 1024


@dataclass(frozen=True, slots=True)
class PositionColumn:
    """One column of ``positions`` as ingest writes it.

    A new column: the Fix field (``fleet.contract``), the migration, and one line in
    :data:`FIX_COLUMNS`; every statement below is derived from :data:`POSITION_COLUMNS`.
    """

    name: str  # in positions (and, for a fix's columns, the Fix field it comes from)
    stage_type: str  # in the stage table, also the type of the binary COPY
    not_null: bool = False
    stage_name: str | None = None  # staged under another name (default: name)
    value: str | None = None  # SQL turning the staged value into the stored one
    latest: str | None = None  # the column of ``vehicles`` holding the van's newest value
    keep_if_null: bool = False  # ... which a NULL does not overwrite

    @property
    def staged(self) -> str:
        return self.stage_name or self.name

    @property
    def stored(self) -> str:
        """The SQL that selects the stored value from a stage row."""
        return self.value or self.staged


VEHICLE_ID: Final = PositionColumn("vehicle_id", "text", not_null=True)
# Epoch milliseconds as devices send them: converted by the server, not per fix in Python.
TS: Final = PositionColumn(
    "ts",
    "bigint",
    not_null=True,
    stage_name="ts_ms",
    value="timestamptz 'epoch' + ts_ms * interval '1 millisecond'",
    latest="last_ts",
)
# One column per Fix field, in Fix's order.
FIX_COLUMNS: Final = (
    TS,
    PositionColumn("lat", "double precision", not_null=True, latest="lat"),
    PositionColumn("lon", "double precision", not_null=True, latest="lon"),
    PositionColumn("speed", "real", latest="speed"),
    PositionColumn("heading", "real", latest="heading"),
    PositionColumn("accuracy", "real", latest="accuracy"),
    PositionColumn("route", "text", latest="route", keep_if_null=True),
    PositionColumn("seq", "bigint"),
)
POSITION_COLUMNS: Final = (VEHICLE_ID, *FIX_COLUMNS)
KEY: Final = (VEHICLE_ID, TS)  # the identity of a fix: repeats are no-ops

# A fix's values in column order: msgspec's C tuple when the columns are Fix's fields in
# order (the hot path), else attribute by attribute.
_FIX_FIELDS: Final = tuple(c.name for c in FIX_COLUMNS)
_fix_values: Final[Callable[[Fix], tuple[Any, ...]]] = (
    astuple if Fix.__struct_fields__ == _FIX_FIELDS else attrgetter(*_FIX_FIELDS)
)


def _names(columns: Iterable[PositionColumn], attr: str = "name") -> str:
    return ", ".join(getattr(c, attr) for c in columns)


_STAGE_DDL: Final = (
    "CREATE TEMP TABLE IF NOT EXISTS positions_stage (\n    "
    + ",\n    ".join(
        f"{c.staged} {c.stage_type}{' NOT NULL' if c.not_null else ''}" for c in POSITION_COLUMNS
    )
    + "\n) ON COMMIT DELETE ROWS"
)

_COPY: Final = (
    f"COPY positions_stage ({_names(POSITION_COLUMNS, 'staged')}) FROM STDIN (FORMAT BINARY)"
)
_COPY_TYPES: Final = [c.stage_type for c in POSITION_COLUMNS]

_INSERT: Final = f"""
WITH inserted AS (
    INSERT INTO positions ({_names(POSITION_COLUMNS)})
    SELECT {_names(POSITION_COLUMNS, "stored")}
    FROM positions_stage
    ON CONFLICT ({_names(KEY)}) DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM inserted
"""

# Latest position per van; the WHERE clause keeps a late backfill from moving a van back.
# ORDER BY vehicle_id gives concurrent workers one lock order (no deadlocks).
_LATEST_COLUMNS: Final = [c for c in FIX_COLUMNS if c.latest]
_LATEST_SET: Final = ",\n    ".join(
    f"{c.latest} = coalesce(EXCLUDED.{c.latest}, v.{c.latest})"
    if c.keep_if_null
    else f"{c.latest} = EXCLUDED.{c.latest}"
    for c in _LATEST_COLUMNS
)
_LATEST: Final = f"""
INSERT INTO vehicles AS v ({VEHICLE_ID.name}, {_names(_LATEST_COLUMNS, "latest")})
SELECT {VEHICLE_ID.staged}, {_names(_LATEST_COLUMNS, "stored")}
FROM (
    SELECT DISTINCT ON ({VEHICLE_ID.staged}) *
    FROM positions_stage
    ORDER BY {VEHICLE_ID.staged}, {TS.staged} DESC
) latest
ORDER BY {VEHICLE_ID.staged}
ON CONFLICT ({VEHICLE_ID.name}) DO UPDATE SET
    {_LATEST_SET}
WHERE v.{TS.latest} IS NULL OR EXCLUDED.{TS.latest} > v.{TS.latest}
"""

_STATUS: Final = """
INSERT INTO vehicles AS v (vehicle_id, status, status_at)
VALUES (%s, %s, now())
ON CONFLICT (vehicle_id) DO UPDATE SET status = EXCLUDED.status, status_at = EXCLUDED.status_at
"""

_DEAD_LETTER: Final = (
    "INSERT INTO rejected_messages (topic, reason, detail, payload, bad_fixes)"
    " VALUES (%s, %s, %s, %s, %s)"
)

# Dead letters older than the retention go, a bounded slice at a time (short locks).
_EXPIRE_DEAD_LETTERS: Final = """
DELETE FROM rejected_messages WHERE id IN (
    SELECT id FROM rejected_messages
    WHERE received_at < now() - make_interval(days => %s)
    ORDER BY received_at LIMIT 10000
)
"""

# Shown instead of control characters in text columns (PostgreSQL refuses NUL outright).
_CONTROL = dict.fromkeys([*range(0x20), 0x7F], "\N{REPLACEMENT CHARACTER}")


def printable(text: str, limit: int = 500) -> str:
    """``text`` cut to ``limit`` characters, control characters replaced."""
    return text[:limit].translate(_CONTROL)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One rejected message: its topic, why, and the first KiB of what it carried."""

    topic: str
    reason: str
    detail: str
    payload: bytes
    bad_fixes: int = 0  # fixes of this message that were refused (0: no fix was readable)


class Item(msgspec.Struct, gc=False):
    """What one MQTT message contributes to a batch (a C-level struct: one per message;
    never part of a reference cycle, so not tracked by the cyclic GC)."""

    topic: str
    payload: bytes
    vehicle_id: str
    fixes: list[Fix] = msgspec.field(default_factory=list)
    status: str | None = None
    dead_letter: DeadLetter | None = None
    refused_seqs: list[int] = msgspec.field(default_factory=list)  # for the storage receipt

    def refuse(self, reason: str, detail: str) -> None:
        """Turn this message into a dead letter only: every fix in it refused."""
        old = self.dead_letter
        bad_fixes = len(self.fixes) + (old.bad_fixes if old else 0)
        self.dead_letter = DeadLetter(self.topic, reason, detail, self.payload, bad_fixes)
        self.refused_seqs += [f.seq for f in self.fixes if f.seq is not None]
        self.fixes, self.status = [], None


@dataclass(frozen=True, slots=True)
class WriteResult:
    stored: int
    duplicates: int


def is_data_error(exc: BaseException) -> bool:
    """True when the data itself was refused (SQLSTATE class 22/23 or a value that cannot
    be encoded): retrying cannot help, the offending message must be isolated."""
    if isinstance(exc, psycopg.Error):
        if isinstance(exc, psycopg.DataError | psycopg.IntegrityError):
            return True
        return (exc.sqlstate or "")[:2] in ("22", "23")
    return isinstance(exc, OverflowError | ValueError | TypeError | UnicodeError)


def copy_to_stage(cur: psycopg.Cursor[Any], items: list[Item]) -> int:
    """Binary ``COPY`` of the items' fixes into the stage table; returns how many."""
    fixes = 0
    with cur.copy(_COPY) as copy:
        copy.set_types(_COPY_TYPES)
        write_row, values = copy.write_row, _fix_values
        for item in items:
            vid = item.vehicle_id
            for f in item.fixes:
                write_row((vid, *values(f)))
            fixes += len(item.fixes)
    return fixes


class BatchWriter:
    """Writes batches over one connection (reconnect by making a new writer)."""

    def __init__(self, dsn: str, connect_timeout: float = 5.0) -> None:
        self.conn = psycopg.connect(dsn, autocommit=False, connect_timeout=int(connect_timeout))
        self.conn.execute(_STAGE_DDL)
        self.conn.commit()

    def close(self) -> None:
        self.conn.close()

    def write(self, items: list[Item]) -> WriteResult:
        """One transaction for every item: all committed, or none (and the error raised)."""
        conn = self.conn
        stored = fixes = 0
        statuses: dict[str, str] = {}  # last status per van wins
        dead: list[DeadLetter] = []
        try:
            with conn.cursor() as cur:
                if any(item.fixes for item in items):
                    fixes = copy_to_stage(cur, items)
                    cur.execute(_INSERT)
                    row = cur.fetchone()
                    stored = int(row[0]) if row else 0
                    cur.execute(_LATEST)
                for item in items:
                    if item.status is not None:
                        statuses[item.vehicle_id] = item.status
                    if item.dead_letter is not None:
                        dead.append(item.dead_letter)
                for vid, status in sorted(statuses.items()):
                    cur.execute(_STATUS, (vid, status))
                if dead:
                    cur.executemany(
                        _DEAD_LETTER,
                        [
                            (
                                printable(d.topic, 300),
                                d.reason,
                                printable(d.detail),
                                d.payload[:DEAD_LETTER_PAYLOAD_BYTES],
                                d.bad_fixes,
                            )
                            for d in dead
                        ],
                    )
            conn.commit()
        except BaseException:
            if not conn.closed:
                with contextlib.suppress(psycopg.Error):
                    conn.rollback()
            raise
        return WriteResult(stored=stored, duplicates=fixes - stored)

    def expire_dead_letters(self, retain_days: int) -> int:
        """Delete dead letters older than ``retain_days``; return how many went."""
        deleted = 0
        try:
            with self.conn.cursor() as cur:
                while True:
                    cur.execute(_EXPIRE_DEAD_LETTERS, (retain_days,))
                    self.conn.commit()
                    deleted += cur.rowcount
                    if cur.rowcount < 10000:
                        return deleted
        except BaseException:
            if not self.conn.closed:
                with contextlib.suppress(psycopg.Error):
                    self.conn.rollback()
            raise
