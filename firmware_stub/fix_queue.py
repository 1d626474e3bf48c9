"""The store-and-forward queue: fixes on disk until the platform has stored them.

SQLite in WAL mode with ``synchronous=FULL``: every :meth:`FixQueue.put` is its own
transaction, fsynced before it returns, so a fix that was queued survives ``kill -9``
and a power cut. Rows leave the queue only through :meth:`FixQueue.delete_ranges`, which
the uploader calls when a storage receipt settles them (or, with receipts off,
:meth:`FixQueue.delete_range` when the broker's PUBACK for their batch arrives).

The row id (``AUTOINCREMENT``: never reused, even after the queue was empty) is the fix's
``seq``, the per-device counter of the wire contract. A queue holds at most
``max_fixes``; beyond that the oldest are dropped (and counted), because on a tracker
a recent position is worth more than one from days ago.

A :class:`FixQueue` is shared by the GPS thread and the uploader thread: one SQLite
connection behind a lock, so that neither starves the other (two connections would take
turns through SQLite's sleeping busy handler, and a fast replay would stall uploads).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from fleet.contract import Fix

__all__ = ["FixQueue", "QueueError"]

log = logging.getLogger(__name__)

SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS fixes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        ts INTEGER NOT NULL,
        lat REAL NOT NULL,
        lon REAL NOT NULL,
        speed REAL,
        heading REAL,
        accuracy REAL,
        route TEXT
    )""",
    "CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


class QueueError(RuntimeError):
    """The queue file cannot be opened or written (path, permissions, a full disk)."""


class FixQueue:
    """A durable FIFO of fixes in one SQLite file."""

    def __init__(self, path: Path, max_fixes: int = 1_000_000) -> None:
        if max_fixes < 1:
            raise ValueError("max_fixes must be at least 1")
        self.path = path
        self.max_fixes = max_fixes
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                path, timeout=30, isolation_level=None, check_same_thread=False
            )
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            self._db.execute("PRAGMA synchronous=FULL")
            for ddl in SCHEMA:
                self._db.execute(ddl)
        except (OSError, sqlite3.Error) as exc:
            raise QueueError(f"cannot open the fix queue {path}: {exc}") from exc
        if mode != "wal":
            log.warning("queue is not in WAL mode", extra={"path": str(path), "mode": mode})

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def put(
        self,
        *,
        ts: int,
        lat: float,
        lon: float,
        speed: float | None = None,
        heading: float | None = None,
        accuracy: float | None = None,
        route: str | None = None,
    ) -> int:
        """Append one fix durably; return its seq. Drops the oldest beyond ``max_fixes``."""
        with self._lock:
            return self._put(ts, lat, lon, speed, heading, accuracy, route)

    def _put(
        self,
        ts: int,
        lat: float,
        lon: float,
        speed: float | None,
        heading: float | None,
        accuracy: float | None,
        route: str | None,
    ) -> int:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            cur = self._db.execute(
                "INSERT INTO fixes (ts, lat, lon, speed, heading, accuracy, route)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (ts, lat, lon, speed, heading, accuracy, route),
            )
            seq = cur.lastrowid
            assert seq is not None
            oldest = self._db.execute("SELECT min(seq) FROM fixes").fetchone()[0]
            if seq - oldest + 1 > self.max_fixes:
                dropped = self._db.execute(
                    "DELETE FROM fixes WHERE seq <= ?", (seq - self.max_fixes,)
                ).rowcount
                log.warning(
                    "fix queue full: dropped the oldest fixes",
                    extra={"dropped": dropped, "max_fixes": self.max_fixes},
                )
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise QueueError(f"cannot write the fix queue {self.path}: {exc}") from exc
        return seq

    def oldest(self, after_seq: int, limit: int) -> list[Fix]:
        """Up to ``limit`` queued fixes with seq > ``after_seq``, oldest first."""
        try:
            with self._lock:
                rows = self._db.execute(
                    "SELECT seq, ts, lat, lon, speed, heading, accuracy, route FROM fixes"
                    " WHERE seq > ? ORDER BY seq LIMIT ?",
                    (after_seq, limit),
                ).fetchall()
        except sqlite3.Error as exc:
            raise QueueError(f"cannot read the fix queue {self.path}: {exc}") from exc
        return [
            Fix(ts=ts, lat=lat, lon=lon, speed=sp, heading=hd, accuracy=acc, route=rt, seq=seq)
            for seq, ts, lat, lon, sp, hd, acc, rt in rows
        ]

    def delete_range(self, first_seq: int, last_seq: int) -> int:
        """Forget fixes ``first_seq..last_seq``; return how many were queued."""
        return self.delete_ranges([(first_seq, last_seq)])

    def delete_ranges(self, ranges: Iterable[tuple[int, int]]) -> int:
        """Forget the fixes in these inclusive seq ranges, in one transaction.

        Return how many of them were still queued: ranges may overlap, repeat or cover
        seqs long gone (a receipt applied twice), which deletes nothing more.
        """
        deleted = 0
        try:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for first_seq, last_seq in ranges:
                        deleted += self._db.execute(
                            "DELETE FROM fixes WHERE seq BETWEEN ? AND ?", (first_seq, last_seq)
                        ).rowcount
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise QueueError(f"cannot write the fix queue {self.path}: {exc}") from exc
        return deleted

    def depth(self) -> int:
        """How many fixes wait for upload."""
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM fixes").fetchone()[0])

    def get_setting(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_setting(self, key: str, value: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
