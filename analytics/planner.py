"""What the planner workspace's charts need beyond the reports: headway points and the
time-space (Marey) diagram, both from stored checkpoint passages.

* :func:`headway_points`: every headway at a checkpoint — the time of the later passage,
  the headway, the two vans, and whether it is bunched (``h ≤ 0.5·ref``) or gapped
  (``h ≥ 1.5·ref``). The same rule as the headway report (:mod:`analytics.reports.headways`):
  a headway belongs to the window of its later passage, its predecessor may be up to
  :data:`~analytics.reports.headways.MAX_HEADWAY` earlier, and ``ref`` is the route's
  target headway, else the window's median headway of that checkpoint and direction.
* :func:`marey_lines`: distance along the route against time, one line per van trip,
  from the van's passages (a checkpoint's distance is its ``dist_m`` on the route); a
  van's passages are cut into *trips* at each turnaround (the direction changes, or the
  checkpoints stop running onward) and where it has no passage for ``max_gap_s`` (out
  of service, no data), so a diagram of one direction draws no line back to the start.

Both are numpy over all passages at once; the API (:mod:`api.routes.planner`) only
checks parameters and serialises.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, TypedDict

import numpy as np
import numpy.typing as npt

from analytics.headways import BUNCHED_FACTOR, GAPPED_FACTOR
from analytics.reports.headways import MAX_HEADWAY
from analytics.reports.rows import figure
from fleet.routes import Route

__all__ = [
    "HEADWAY_POINTS_SQL",
    "MAREY_SQL",
    "HeadwayPoint",
    "HeadwayStream",
    "MareyLines",
    "MareyRow",
    "headway_points",
    "marey_lines",
]

FloatArray = npt.NDArray[np.float64]

#: Passages of one checkpoint (both directions unless one is given), from ``lo`` − the
#: longest headway so that the window's first headway has its predecessor.
HEADWAY_POINTS_SQL: Final = """
SELECT direction, checkpoint_seq, checkpoint_id, vehicle_id, extract(epoch FROM ts)::float8
FROM passages
WHERE route = %(route)s AND checkpoint_seq = %(checkpoint)s
  AND ts >= %(lo)s AND ts < %(hi)s
  AND (%(direction)s::int IS NULL OR direction = %(direction)s)
ORDER BY direction, ts
LIMIT %(limit)s
"""

#: Passages of one route in time order (the first ``limit`` if there are more).
MAREY_SQL: Final = """
SELECT vehicle_id, extract(epoch FROM ts)::float8, direction, checkpoint_seq
FROM passages
WHERE route = %(route)s AND ts >= %(lo)s AND ts < %(hi)s
  AND (%(direction)s::int IS NULL OR direction = %(direction)s)
ORDER BY ts
LIMIT %(limit)s
"""


class HeadwayPoint(TypedDict):
    """One headway: the CSV columns and the JSON keys of ``points``, in order."""

    ts: str  # ISO 8601 time of the later passage
    direction: int
    checkpoint_seq: int
    checkpoint_id: str
    headway_s: float
    vehicle_id: str  # the van that passed
    previous_vehicle_id: str  # the van before it
    bunched: bool
    gapped: bool


class HeadwayStream(TypedDict):
    """The reference the points of one direction were judged against."""

    direction: int
    checkpoint_seq: int
    checkpoint_id: str
    count: int
    reference_s: float | None
    target_s: float | None


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")


def headway_points(
    rows: Sequence[Sequence[Any]], start: datetime, end: datetime, target_s: float | None
) -> tuple[list[HeadwayStream], list[HeadwayPoint]]:
    """Headways whose later passage lies in [start, end), from
    (direction, seq, checkpoint_id, vehicle_id, epoch_s) passages of one checkpoint."""
    if not rows:
        return [], []
    direction = np.array([r[0] for r in rows], dtype=np.int64)
    seq = np.array([r[1] for r in rows], dtype=np.int64)
    cp_id = np.array([r[2] for r in rows], dtype=object)
    vid = np.array([r[3] for r in rows], dtype=object)
    t = np.array([r[4] for r in rows], dtype=np.float64)
    key = direction * 100_000 + seq
    order = np.lexsort((t, key))
    key, t, vid, cp_id, direction, seq = (
        key[order],
        t[order],
        vid[order],
        cp_id[order],
        direction[order],
        seq[order],
    )
    same = key[1:] == key[:-1]
    h = (t[1:] - t[:-1])[same]
    at = t[1:][same]
    keep = (at >= start.timestamp()) & (at < end.timestamp()) & (h <= MAX_HEADWAY.total_seconds())
    idx = np.flatnonzero(same)[keep] + 1  # index of the later passage of each headway
    h = h[keep]
    streams: list[HeadwayStream] = []
    points: list[HeadwayPoint] = []
    for k in np.unique(key[idx]).tolist():
        m = key[idx] == k
        hs, later = h[m], idx[m]
        reference = float(target_s) if target_s else float(np.median(hs))
        bunched = hs <= BUNCHED_FACTOR * reference
        gapped = hs >= GAPPED_FACTOR * reference
        d, s, cid = int(direction[later[0]]), int(seq[later[0]]), str(cp_id[later[0]])
        streams.append(
            {
                "direction": d,
                "checkpoint_seq": s,
                "checkpoint_id": cid,
                "count": int(hs.size),
                "reference_s": figure(reference),
                "target_s": figure(target_s),
            }
        )
        for j, i in enumerate(later.tolist()):
            points.append(
                {
                    "ts": _iso(float(t[i])),
                    "direction": d,
                    "checkpoint_seq": s,
                    "checkpoint_id": cid,
                    "headway_s": round(float(hs[j]), 3),
                    "vehicle_id": str(vid[i]),
                    "previous_vehicle_id": str(vid[i - 1]),
                    "bunched": bool(bunched[j]),
                    "gapped": bool(gapped[j]),
                }
            )
    points.sort(key=lambda p: p["ts"])
    return streams, points


class MareyRow(TypedDict):
    """One passage of the diagram as a CSV row."""

    vehicle_id: str
    trip: int
    ts: str
    direction: int
    checkpoint_seq: int
    dist_m: float


@dataclass(frozen=True)
class MareyLines:
    """Passages sorted by van, then time; ``trip`` numbers each unbroken line."""

    vehicles: list[str]  # distinct vans, sorted
    van: npt.NDArray[np.int64]  # index into ``vehicles``
    trip: npt.NDArray[np.int64]  # 0, 1, … over the whole result
    t: FloatArray  # epoch seconds
    dist_m: FloatArray
    direction: npt.NDArray[np.int64]
    checkpoint_seq: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.t.size)

    def columns(self) -> dict[str, Any]:
        """Column-wise JSON: times in epoch milliseconds, distances in metres (0.1 m)."""
        return {
            "vehicles": self.vehicles,
            "van": self.van.tolist(),
            "trip": self.trip.tolist(),
            "t": np.round(self.t * 1000).astype(np.int64).tolist(),
            "dist_m": np.round(self.dist_m, 1).tolist(),
            "direction": self.direction.tolist(),
            "checkpoint_seq": self.checkpoint_seq.tolist(),
        }

    def rows(self) -> list[MareyRow]:
        return [
            {
                "vehicle_id": self.vehicles[v],
                "trip": tr,
                "ts": _iso(t),
                "direction": d,
                "checkpoint_seq": s,
                "dist_m": round(x, 1),
            }
            for v, tr, t, d, s, x in zip(
                self.van.tolist(),
                self.trip.tolist(),
                self.t.tolist(),
                self.direction.tolist(),
                self.checkpoint_seq.tolist(),
                self.dist_m.tolist(),
                strict=True,
            )
        ]


def marey_lines(rows: Sequence[Sequence[Any]], route: Route, max_gap_s: float) -> MareyLines:
    """The diagram's lines from (vehicle_id, epoch_s, direction, seq) passages of ``route``.

    Passages at checkpoints the route no longer has are dropped. A new trip starts at a
    van's first passage, at a change of direction, where the next checkpoint is not
    further on in the direction of travel, and after a pause longer than ``max_gap_s``.
    """
    seqs = np.array([c.seq for c in route.checkpoints], dtype=np.int64)
    dists = np.array([c.dist_m for c in route.checkpoints], dtype=np.float64)
    by_seq = np.argsort(seqs)
    seqs, dists = seqs[by_seq], dists[by_seq]
    empty_i = np.zeros(0, dtype=np.int64)
    if not rows or seqs.size == 0:
        return MareyLines([], empty_i, empty_i, np.zeros(0), np.zeros(0), empty_i, empty_i)
    vid = np.array([r[0] for r in rows], dtype=object)
    t = np.array([r[1] for r in rows], dtype=np.float64)
    direction = np.array([r[2] for r in rows], dtype=np.int64)
    seq = np.array([r[3] for r in rows], dtype=np.int64)
    pos = np.clip(np.searchsorted(seqs, seq), 0, seqs.size - 1)
    known = seqs[pos] == seq
    vehicles, van = np.unique(vid[known], return_inverse=True)
    van = van.astype(np.int64)
    t, direction, seq, pos = t[known], direction[known], seq[known], pos[known]
    order = np.lexsort((t, van))
    van, t, direction, seq, pos = van[order], t[order], direction[order], seq[order], pos[order]
    step = np.diff(seq)
    onward = np.where(direction[1:] == 0, step > 0, step < 0)  # seq grows outbound
    new_trip = np.ones(t.size, dtype=bool)
    new_trip[1:] = (
        (van[1:] != van[:-1])
        | (np.diff(t) > max_gap_s)
        | (direction[1:] != direction[:-1])
        | ~onward
    )
    trip = np.cumsum(new_trip) - 1
    return MareyLines(
        [str(v) for v in vehicles.tolist()],
        van,
        trip.astype(np.int64),
        t,
        dists[pos],
        direction,
        seq,
    )
