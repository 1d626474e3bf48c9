"""Incident changes pushed live: ``incident_events`` polled in id order, one ``incident``
frame per change, to every client.

Every replica polls on its own, so a change made through any replica (or by the
analytics loop) reaches every open page. Ids come from a sequence, so a transaction that
took an id earlier may commit after a later one: an id skipped over is waited for
(:data:`HOLE_WAIT_S`, longer than any transaction that writes events) before the poller
gives up on it (a rolled-back transaction leaves such a hole for good). Each frame carries
the incident as it is when pushed, so a late frame never takes a page backwards.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final

import psycopg
from psycopg_pool import AsyncConnectionPool

from api.incidents import INCIDENT_COLUMNS, incident_view
from api.live.hub import LiveHub

__all__ = ["HOLE_WAIT_S", "IncidentPoller"]

log = logging.getLogger(__name__)

BATCH: Final = 500
HOLE_WAIT_S: Final = 30.0

_CHANGES: Final = f"""
    SELECT e.id, e.event, e.actor, {INCIDENT_COLUMNS}
    FROM incident_events e JOIN incidents i ON i.id = e.incident_id
    WHERE e.id > %s ORDER BY e.id LIMIT %s"""


class IncidentPoller:
    """Every ``interval_s``: the events after the last pushed one become ``incident`` frames."""

    def __init__(self, pool: AsyncConnectionPool, hub: LiveHub, interval_s: float) -> None:
        self.pool = pool
        self.hub = hub
        self.interval_s = interval_s
        self.floor: int | None = None  # every event id <= floor is pushed or given up
        self._pushed: set[int] = set()  # ids > floor already pushed
        self._holes: dict[int, float] = {}  # id > floor not seen yet → when first missed

    @property
    def primed(self) -> bool:
        """Whether it knows where to start (events older than the API are never pushed)."""
        return self.floor is not None

    async def run(self) -> None:
        while True:
            delay = self.interval_s
            try:
                delay = await self.poll_once()
            except (psycopg.Error, OSError) as exc:
                log.warning("incident poll failed; retrying", extra={"error": str(exc)[:200]})
            await asyncio.sleep(delay)

    async def poll_once(self) -> float:
        async with self.pool.connection() as conn:
            if self.floor is None:
                cur = await conn.execute("SELECT coalesce(max(id), 0) FROM incident_events")
                row = await cur.fetchone()
                self.floor = int(row[0]) if row else 0
                return self.interval_s
            cur = await conn.execute(_CHANGES.encode(), (self.floor, BATCH))
            rows = await cur.fetchall()
        fresh = 0
        for event_id, event, actor, *incident in rows:
            if event_id in self._pushed:
                continue
            self._pushed.add(event_id)
            fresh += 1
            self._holes.pop(event_id, None)
            self.hub.push_incident(event, actor, incident_view(tuple(incident)))
            self.hub.metrics.incident_changes_pushed.inc()
        self._advance(time.monotonic())
        return 0.0 if len(rows) == BATCH and fresh else self.interval_s

    def _advance(self, now: float) -> None:
        """Move the floor over pushed ids and over holes older than HOLE_WAIT_S."""
        assert self.floor is not None
        top = max(self._pushed, default=self.floor)
        n = self.floor + 1
        while n <= top:
            if n in self._pushed:
                self._pushed.discard(n)
            elif now - self._holes.setdefault(n, now) >= HOLE_WAIT_S:
                del self._holes[n]
            else:
                break
            self.floor = n
            n += 1
