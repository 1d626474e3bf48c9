"""Alerts from the analytics ``alerts`` table, shaped for clients (``/api/v1/alerts``).

They are the evidence of the incidents (one row per van or van pair, with its
``incident_id``); what is pushed live and worked by operators is the incident
(:mod:`api.live.incidents`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from psycopg_pool import AsyncConnectionPool

__all__ = ["alert_view", "fetch_alerts"]

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
    "resolved_at",
    "incident_id",
    "detail",
)


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
    view["resolved_at"] = _epoch_ms(view["resolved_at"])
    return view


async def fetch_alerts(pool: AsyncConnectionPool, active: bool, limit: int) -> list[dict[str, Any]]:
    """Newest alerts first; ``active``: only those whose condition still holds."""
    where = "resolved_at IS NULL" if active else "TRUE"
    async with pool.connection() as conn:
        cur = await conn.execute(
            f"SELECT to_jsonb(a) FROM alerts a WHERE {where} ORDER BY id DESC LIMIT %s".encode(),
            (limit,),
        )
        return [alert_view(r[0]) for r in await cur.fetchall()]
