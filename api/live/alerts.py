"""Alerts from the analytics ``alerts`` table: shaped for clients, polled and pushed live.

The table belongs to the analytics migration; until it exists the poller stays quiet and
looks again every ``MISSING_TABLE_RETRY_S``.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any, Final

import psycopg
from psycopg.errors import UndefinedTable
from psycopg_pool import AsyncConnectionPool

from api.live.hub import LiveHub

__all__ = ["ACTIVE_COLUMNS", "AlertPoller", "alert_view", "fetch_alerts"]

log = logging.getLogger(__name__)

FIELDS: Final = (
    "id",
    "kind",
    "route",
    "direction",
    "vehicle_id",
    "other_vehicle_id",
    "lat",
    "lon",
    "created_at",
    "detail",
)
# How "still active" may be expressed, first match wins: column → SQL condition.
ACTIVE_COLUMNS: Final = (
    ("active", "active"),
    ("resolved_at", "resolved_at IS NULL"),
    ("cleared_at", "cleared_at IS NULL"),
    ("ended_at", "ended_at IS NULL"),
)
MISSING_TABLE_RETRY_S: Final = 30.0
BATCH: Final = 500


def _epoch_ms(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return int(datetime.fromisoformat(value).timestamp() * 1000)
        except ValueError:
            return value
    return value


def alert_view(row: dict[str, Any]) -> dict[str, Any]:
    """A (see docs/api.md) from one ``alerts`` row rendered with ``to_jsonb``."""
    view = {name: row.get(name) for name in FIELDS}
    view["created_at"] = _epoch_ms(view["created_at"])
    return view


async def _columns(conn: psycopg.AsyncConnection[Any]) -> set[str]:
    cur = await conn.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = 'alerts'"
    )
    return {r[0] for r in await cur.fetchall()}


async def fetch_alerts(
    pool: AsyncConnectionPool, active: bool, limit: int
) -> list[dict[str, Any]] | None:
    """Newest alerts first; None when there is no alerts table (yet)."""
    async with pool.connection() as conn:
        columns = await _columns(conn)
        if not columns:
            return None
        where = "TRUE"
        if active:
            where = next((cond for col, cond in ACTIVE_COLUMNS if col in columns), "TRUE")
        order = "id DESC" if "id" in columns else "created_at DESC"
        cur = await conn.execute(
            f"SELECT to_jsonb(a) FROM alerts a WHERE {where} ORDER BY {order} LIMIT %s",
            (limit,),
        )
        return [alert_view(r[0]) for r in await cur.fetchall()]


class AlertPoller:
    """Every ``interval_s``: rows with id > last seen become ``alert`` frames."""

    def __init__(self, pool: AsyncConnectionPool, hub: LiveHub, interval_s: float) -> None:
        self.pool = pool
        self.hub = hub
        self.interval_s = interval_s
        self.last_id: int | None = None

    @property
    def primed(self) -> bool:
        """Whether it knows the ``max(id)`` it pushes after (older rows are never pushed)."""
        return self.last_id is not None

    async def run(self) -> None:
        while True:
            delay = self.interval_s
            try:
                delay = await self.poll_once()
            except UndefinedTable:
                delay = MISSING_TABLE_RETRY_S
            except (psycopg.Error, OSError) as exc:
                log.warning("alert poll failed; retrying", extra={"error": str(exc)[:200]})
            await asyncio.sleep(delay)

    async def poll_once(self) -> float:
        async with self.pool.connection() as conn:
            if self.last_id is None:
                cur = await conn.execute("SELECT coalesce(max(id), 0) FROM alerts")
                row = await cur.fetchone()
                self.last_id = int(row[0]) if row else 0
                return self.interval_s
            cur = await conn.execute(
                "SELECT id, to_jsonb(a) FROM alerts a WHERE id > %s ORDER BY id LIMIT %s",
                (self.last_id, BATCH),
            )
            rows = await cur.fetchall()
        for alert_id, doc in rows:
            self.last_id = int(alert_id)
            self.hub.push_alert(alert_view(doc))
            self.hub.metrics.alerts_pushed.inc()
        return 0.0 if len(rows) == BATCH else self.interval_s
