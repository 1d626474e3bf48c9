"""vans_by_filter (all filters at once, numpy) sees exactly what LiveFilter's rule says."""

from __future__ import annotations

import random

from api.live.filters import LiveFilter
from api.live.frames import STATUS_ONLINE, Vehicle
from api.live.matching import BLOCK, vans_by_filter
from api.live.state import Changes


def _expected(f: LiveFilter, changes: Changes) -> list[Vehicle]:
    """The rule van by van: its route, and inside the box now or at the previous tick."""
    out = []
    for v in changes.moved:
        if not f.matches_route(v.route):
            continue
        before = changes.moved_from.get(v.id)
        if f.in_bbox(v.lat, v.lon) or (before is not None and f.in_bbox(*before)):
            out.append(v)
    return out


def _changes(rng: random.Random, n: int) -> Changes:
    moved, moved_from = [], {}
    for i in range(n):
        lat, lon = rng.uniform(-5.2, -5.0), rng.uniform(119.38, 119.5)
        route = rng.choice(["A", "B", "C", None])
        moved.append(Vehicle(f"v{i}", route, 1, lat, lon, None, None, STATUS_ONLINE))
        if rng.random() < 0.7:  # the others are new vans: no previous position
            moved_from[f"v{i}"] = (lat + rng.uniform(-0.01, 0.01), lon + rng.uniform(-0.01, 0.01))
    return Changes(moved, moved_from)


def test_every_kind_of_filter_sees_what_the_rule_says() -> None:
    rng = random.Random(3)
    changes = _changes(rng, 400)
    filters = [LiveFilter(), LiveFilter(routes=frozenset({"B"})), LiveFilter(routes=frozenset())]
    for _ in range(BLOCK + 40):  # more than one block of boxes
        lat, lon, half = rng.uniform(-5.2, -5.0), rng.uniform(119.38, 119.5), rng.uniform(0, 0.02)
        routes = rng.choice([None, frozenset({"A"}), frozenset({"A", "C", "Z"})])
        filters.append(LiveFilter(routes, (lon - half, lat - half, lon + half, lat + half)))
    v = changes.moved[0]
    filters.append(LiveFilter(None, (v.lon, v.lat, v.lon, v.lat)))  # edges are inclusive
    got = vans_by_filter(filters, changes)
    assert set(got) == set(filters)
    for f in filters:
        assert got[f] == _expected(f, changes), f
    assert got[filters[-1]][:1] == [v]
    assert sum(1 for f in filters if got[f]) > len(filters) // 2  # not vacuous


def test_nothing_moved() -> None:
    box = LiveFilter(None, (119.0, -6.0, 120.0, -5.0))
    assert vans_by_filter([box, LiveFilter()], Changes()) == {box: [], LiveFilter(): []}
