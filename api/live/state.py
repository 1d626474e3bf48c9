"""Latest position and status per van, as seen on the MQTT feed (no database on this path).

A fix moves a van only when it is newer than the van's current fix: late backlog batches
and redeliveries never move a van back.  Changes accumulate until the hub's next tick
takes them with :meth:`LiveState.take_changes`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from api.live.frames import STATUS_ONLINE, STATUS_STALE, Vehicle
from fleet.contract import Fix

__all__ = ["Changes", "LiveState", "StatusChange"]


@dataclass(frozen=True, slots=True)
class StatusChange:
    vehicle_id: str
    status: str
    route: str | None
    lat: float | None
    lon: float | None


@dataclass(slots=True)
class Changes:
    """What happened since the previous tick."""

    moved: list[Vehicle] = field(default_factory=list)
    # Where each moved van was at the previous tick (so a bbox client sees it leave).
    moved_from: dict[str, tuple[float, float]] = field(default_factory=dict)
    statuses: list[StatusChange] = field(default_factory=list)
    # State version of each van's latest move (a snapshot at version V already has it
    # when its version <= V).
    versions: dict[str, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.moved or self.statuses)


class LiveState:
    """Owned by the event loop; the MQTT thread hands it batches through the feed."""

    def __init__(self, stale_after_s: float) -> None:
        self.stale_after_s = stale_after_s
        self.vans: dict[str, Vehicle] = {}
        self._fix_seen_at: dict[str, float] = {}  # monotonic time of each van's latest fix
        self._moved: dict[str, Vehicle] = {}
        self._moved_from: dict[str, tuple[float, float]] = {}
        self._moved_version: dict[str, int] = {}
        self._statuses: list[StatusChange] = []
        self._unknown_status: dict[str, str] = {}  # status heard before the first fix
        self.version = 0  # bumps on every change; keys the snapshot cache
        self.late_fixes = 0

    # -- writes -------------------------------------------------------------------------

    def apply_fix(self, vehicle_id: str, fix: Fix, now: float | None = None) -> bool:
        """Move the van to ``fix`` unless it already has a fix at least as new."""
        now = time.monotonic() if now is None else now
        van = self.vans.get(vehicle_id)
        if van is not None and fix.ts <= van.ts:
            self.late_fixes += 1
            return False
        route = fix.route if fix.route is not None else (van.route if van is not None else None)
        new = Vehicle(
            id=vehicle_id,
            route=route,
            ts=fix.ts,
            lat=fix.lat,
            lon=fix.lon,
            speed=fix.speed,
            heading=fix.heading,
            status=STATUS_ONLINE,
        )
        previous_status = van.status if van is not None else None
        if van is None and self._unknown_status.pop(vehicle_id, None) is not None:
            previous_status = None  # its first position announces it: no separate event
        self.vans[vehicle_id] = new
        self._fix_seen_at[vehicle_id] = now
        if vehicle_id not in self._moved and van is not None:
            self._moved_from[vehicle_id] = (van.lat, van.lon)
        self._moved[vehicle_id] = new
        if previous_status is not None and previous_status != STATUS_ONLINE:
            self._status_event(new, STATUS_ONLINE)
        self.version += 1
        self._moved_version[vehicle_id] = self.version
        return True

    def apply_status(self, vehicle_id: str, status: str, now: float | None = None) -> None:
        """``online``/``offline`` from the (retained) status topic."""
        now = time.monotonic() if now is None else now
        van = self.vans.get(vehicle_id)
        if van is None:
            if self._unknown_status.get(vehicle_id) != status:
                self._unknown_status[vehicle_id] = status
                self._statuses.append(StatusChange(vehicle_id, status, None, None, None))
            return
        if status == STATUS_ONLINE and self._is_stale(vehicle_id, now):
            status = STATUS_STALE  # connected but no recent fix: still stale for the map
        if van.status != status:
            van.status = status
            self._status_event(van, status)
            self.version += 1

    def load(self, van: Vehicle, age_s: float, now: float | None = None) -> None:
        """Seed a van from the database (start-up) unless the feed already has newer."""
        now = time.monotonic() if now is None else now
        current = self.vans.get(van.id)
        if current is not None and current.ts >= van.ts:
            return
        self.vans[van.id] = van
        self._fix_seen_at[van.id] = now - max(age_s, 0.0)
        if van.status == STATUS_ONLINE and self._is_stale(van.id, now):
            van.status = STATUS_STALE
        self.version += 1

    def check_stale(self, now: float | None = None) -> int:
        """Mark online vans without a fix for ``stale_after_s`` as stale; return how many."""
        now = time.monotonic() if now is None else now
        cutoff = now - self.stale_after_s
        changed = 0
        for vid, seen in self._fix_seen_at.items():
            if seen < cutoff:
                van = self.vans[vid]
                if van.status == STATUS_ONLINE:
                    van.status = STATUS_STALE
                    self._status_event(van, STATUS_STALE)
                    changed += 1
        if changed:
            self.version += 1
        return changed

    def take_changes(self) -> Changes:
        changes = Changes(
            list(self._moved.values()), self._moved_from, self._statuses, self._moved_version
        )
        self._moved = {}
        self._moved_from = {}
        self._moved_version = {}
        self._statuses = []
        return changes

    # -- reads --------------------------------------------------------------------------

    def has_pending_changes(self) -> bool:
        return bool(self._moved or self._statuses)

    def snapshot(self) -> list[Vehicle]:
        return list(self.vans.values())

    def _is_stale(self, vehicle_id: str, now: float) -> bool:
        seen = self._fix_seen_at.get(vehicle_id)
        return seen is None or now - seen > self.stale_after_s

    def _status_event(self, van: Vehicle, status: str) -> None:
        self._statuses.append(StatusChange(van.id, status, van.route, van.lat, van.lon))
