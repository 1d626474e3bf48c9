"""The live hub: applies feed batches, ticks every interval, fans frames out to clients.

Each tick takes the state's changes once, groups clients by filter, finds the vans of
every filter at once (:func:`api.live.matching.vans_by_filter`), encodes one delta
frame per distinct filter (not per client) and offers it to each member.  The
hub never awaits a client: slow ones are cut off by their own :class:`LiveClient`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from typing import Any

from api.live.client import LiveClient
from api.live.filters import LiveFilter
from api.live.frames import (
    DeltaFrame,
    IncidentFrame,
    OutFrame,
    SnapshotFrame,
    StatusFrame,
    encode_frame,
)
from api.live.matching import vans_by_filter
from api.live.mqtt_feed import FeedBatch
from api.live.state import LiveState, StatusChange
from api.metrics import ApiMetrics

__all__ = ["LiveHub"]

log = logging.getLogger(__name__)

STALE_CHECK_EVERY_S = 1.0


def now_ms() -> int:
    return int(time.time() * 1000)


class LiveHub:
    def __init__(self, state: LiveState, interval_s: float, metrics: ApiMetrics) -> None:
        self.state = state
        self.interval_s = interval_s
        self.metrics = metrics
        self.clients: set[LiveClient] = set()
        self._snapshot_cache: dict[LiveFilter, tuple[int, OutFrame]] = {}
        self._last_stale_check = 0.0

    # -- feed (event loop) --------------------------------------------------------------

    def apply_batch(self, batch: FeedBatch) -> None:
        fixes, statuses, decoded, rejected = batch
        state = self.state
        now = time.monotonic()
        late_before = state.late_fixes
        for vehicle_id, fix in fixes.items():
            state.apply_fix(vehicle_id, fix, now)
        for vehicle_id, status in statuses:
            state.apply_status(vehicle_id, status, now)
        self.metrics.fixes_received.inc(decoded)
        if rejected:
            self.metrics.fixes_rejected.inc(rejected)
        if state.late_fixes != late_before:
            self.metrics.late_fixes.inc(state.late_fixes - late_before)

    # -- clients ------------------------------------------------------------------------

    def add(self, client: LiveClient) -> None:
        self.clients.add(client)
        self.metrics.ws_clients.set(len(self.clients))
        self.send_snapshot(client)

    def remove(self, client: LiveClient) -> None:
        self.clients.discard(client)
        self.metrics.ws_clients.set(len(self.clients))

    def set_filter(self, client: LiveClient, live_filter: LiveFilter) -> None:
        client.filter = live_filter
        self.send_snapshot(client, replace_queued=True)

    def send_snapshot(self, client: LiveClient, replace_queued: bool = False) -> None:
        client.snapshot_version = self.state.version
        frame = self._snapshot_frame(client.filter)
        if replace_queued:
            client.replace_queue_with(frame)
        else:
            client.offer(frame)

    def _snapshot_frame(self, live_filter: LiveFilter) -> OutFrame:
        version = self.state.version
        cached = self._snapshot_cache.get(live_filter)
        if cached is not None and cached[0] == version:
            return cached[1]
        vans = self.state.snapshot()
        if not live_filter.is_everything:
            vans = [v for v in vans if live_filter.matches(v)]
        frame = encode_frame(SnapshotFrame(ts=now_ms(), vehicles=vans))
        if len(self._snapshot_cache) > 256:
            self._snapshot_cache.clear()
        self._snapshot_cache[live_filter] = (version, frame)
        return frame

    def client_cut_off(self, client: LiveClient, reason: str) -> None:
        self.remove(client)
        self.metrics.dropped_clients.inc()
        log.warning("live client cut off (1013)", extra={"reason": reason})

    def frames_sent(self, n: int) -> None:
        self.metrics.frames_sent.inc(n)

    # -- incidents ----------------------------------------------------------------------

    def push_incident(self, event: str, actor: str, incident: dict[str, Any]) -> None:
        """To every client, whatever its filter: the control room's work list is the city's
        (a filter chooses vans), and incidents are few."""
        frame = encode_frame(
            IncidentFrame(ts=now_ms(), event=event, actor=actor, incident=incident)
        )
        for client in list(self.clients):
            client.offer(frame)

    # -- ticking ------------------------------------------------------------------------

    async def run(self) -> None:
        """Tick every interval until cancelled.

        The next tick is due one interval after the previous one *started*, so two
        frames to a client are never closer than the interval, even after a late tick.
        """
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                self.tick()
            except Exception:
                log.exception("live tick failed; continuing")
            await asyncio.sleep(max(0.0, started + self.interval_s - loop.time()))

    def tick(self) -> None:
        now = time.monotonic()
        if now - self._last_stale_check >= STALE_CHECK_EVERY_S:
            self._last_stale_check = now
            self.state.check_stale(now)
        for client in self.clients:
            if client.pending:
                client.pump(now)  # queued frames first, so order is kept
        changes = self.state.take_changes()
        if not changes or not self.clients:
            return
        groups: dict[LiveFilter, list[LiveClient]] = defaultdict(list)
        for client in self.clients:
            if client.alive:
                groups[client.filter].append(client)
        ts = now_ms()
        status_frames = [
            (
                change,
                encode_frame(
                    StatusFrame(ts=ts, vehicle_id=change.vehicle_id, status=change.status)
                ),
            )
            for change in changes.statuses
        ]
        seen_by = vans_by_filter(groups, changes)  # all filters at once (numpy)
        for live_filter, members in groups.items():
            vans = seen_by[live_filter]
            shared: OutFrame | None = None
            for client in members:
                since, client.snapshot_version = client.snapshot_version, None
                if since is not None and any(changes.versions[v.id] <= since for v in vans):
                    # joined (or re-filtered) mid-interval: its own frame, this once
                    own = [v for v in vans if changes.versions[v.id] > since]
                    if own:
                        client.offer(encode_frame(DeltaFrame(ts=ts, vehicles=own)))
                    continue
                if vans:
                    if shared is None:
                        shared = encode_frame(DeltaFrame(ts=ts, vehicles=vans))
                    client.offer(shared)
            seen = [f for change, f in status_frames if _sees_status(live_filter, change)]
            if seen:  # e.g. every van turning stale after an outage: one write per client
                statuses = seen[0] if len(seen) == 1 else OutFrame.batch(seen)
                for client in members:
                    client.offer(statuses)

    async def close_all(self) -> None:
        for client in list(self.clients):
            client.stop()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await client.websocket.close(1001, "server shutting down")


def _sees_status(live_filter: LiveFilter, change: StatusChange) -> bool:
    if not live_filter.matches_route(change.route):
        return False
    if change.lat is None or change.lon is None:
        return True
    return live_filter.in_bbox(change.lat, change.lon)
