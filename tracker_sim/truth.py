"""Ground truth of the fleet model: when each van passed each checkpoint.

The passages are interpolated from the noise-free motion (never from the noisy fixes),
kept as arrays while the model runs (:class:`TruthRecorder`) and read as a
:class:`TruthTable`, which writes and reads the CSV format of docs/routes.md.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, TextIO

import numpy as np
import numpy.typing as npt

from fleet.routes import Route

if TYPE_CHECKING:
    from tracker_sim.motion import Movement

__all__ = ["TRUTH_CSV_HEADER", "Passage", "TruthRecorder", "TruthTable"]

IntArray = npt.NDArray[np.int64]

TRUTH_CSV_HEADER: Final = (
    "vehicle_id",
    "route",
    "direction",
    "checkpoint_id",
    "checkpoint_seq",
    "ts_ms",
)


@dataclass(frozen=True, slots=True)
class Passage:
    """One row of ground truth: a van passed a checkpoint."""

    vehicle_id: str
    route: str
    direction: int
    checkpoint_id: str
    checkpoint_seq: int
    ts_ms: int


@dataclass(frozen=True, eq=False)
class TruthTable:
    """Checkpoint passages as parallel arrays, in order of ``ts_ms`` within each step."""

    vehicle_id: npt.NDArray[np.object_]
    route: npt.NDArray[np.object_]
    direction: npt.NDArray[np.int8]
    checkpoint_id: npt.NDArray[np.object_]
    checkpoint_seq: npt.NDArray[np.int32]
    ts_ms: IntArray

    def __len__(self) -> int:
        return len(self.ts_ms)

    def rows(self) -> Iterator[Passage]:
        for v, r, d, cid, seq, ts in zip(
            self.vehicle_id.tolist(),
            self.route.tolist(),
            self.direction.tolist(),
            self.checkpoint_id.tolist(),
            self.checkpoint_seq.tolist(),
            self.ts_ms.tolist(),
            strict=True,
        ):
            yield Passage(v, r, d, cid, seq, ts)

    def write_csv(self, out: TextIO, header: bool = True) -> int:
        """Write rows in the documented CSV format (docs/routes.md); return the count."""
        writer = csv.writer(out, lineterminator="\n")
        if header:
            writer.writerow(TRUTH_CSV_HEADER)
        n = 0
        for p in self.rows():
            writer.writerow(
                (p.vehicle_id, p.route, p.direction, p.checkpoint_id, p.checkpoint_seq, p.ts_ms)
            )
            n += 1
        return n

    @staticmethod
    def read_csv(path: Path) -> list[Passage]:
        with path.open(newline="") as f:
            return [
                Passage(
                    row["vehicle_id"],
                    row["route"],
                    int(row["direction"]),
                    row["checkpoint_id"],
                    int(row["checkpoint_seq"]),
                    int(row["ts_ms"]),
                )
                for row in csv.DictReader(f)
            ]


class TruthRecorder:
    """Collects the checkpoint passages of every sub-step of the motion.

    ``keep=False`` forgets what :meth:`drain` has returned (for streaming to a file).
    """

    def __init__(
        self,
        routes: Sequence[Route],
        vehicle_ids: Sequence[str],
        route_of: IntArray,
        *,
        keep: bool,
    ) -> None:
        self.keep = keep
        self._vehicle_ids = list(vehicle_ids)
        self._route_of = route_of  # van i drives routes[route_of[i]]
        # Checkpoints of all routes on one global axis: route i's distances + i * stride.
        self._stride = float(np.array([r.length_m for r in routes]).max()) + 10_000.0
        cp_pos: list[float] = []
        self._cp_id: list[str] = []
        self._cp_seq: list[int] = []
        self._cp_route: list[str] = []
        for i, r in enumerate(routes):
            for cp in r.checkpoints:
                cp_pos.append(i * self._stride + cp.dist_m)
                self._cp_id.append(cp.id)
                self._cp_seq.append(cp.seq)
                self._cp_route.append(r.code)
        self._cp_pos = np.array(cp_pos)
        self.clear()

    def clear(self) -> None:
        """Forget every passage recorded so far."""
        self._vehicle: list[IntArray] = []
        self._checkpoint: list[IntArray] = []
        self._direction: list[npt.NDArray[np.int8]] = []
        self._ts: list[IntArray] = []
        self._drained = 0

    def record(self, movement: Movement) -> None:
        """The checkpoints each van crossed during ``movement``, and when."""
        s0, s1, direction = movement.s0, movement.s1, movement.direction
        t0, dt = movement.t0, movement.dt_s
        offset = self._route_of * self._stride
        g0, g1 = s0 + offset, s1 + offset
        fwd = direction == 0
        # direction 0 crosses c when s0 < c <= s1; direction 1 when s1 <= c < s0
        lo = np.where(
            fwd,
            np.searchsorted(self._cp_pos, g0, "right"),
            np.searchsorted(self._cp_pos, g1, "left"),
        )
        hi = np.where(
            fwd,
            np.searchsorted(self._cp_pos, g1, "right"),
            np.searchsorted(self._cp_pos, g0, "left"),
        )
        count = np.where(movement.moving, np.maximum(hi - lo, 0), 0)
        total = int(count.sum())
        if total == 0:
            return
        veh = np.repeat(np.arange(len(self._route_of)), count)
        first = np.repeat(lo, count)
        within = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
        # direction 1 passes checkpoints in decreasing order
        cp = np.where(fwd[veh], first + within, np.repeat(hi, count) - 1 - within)
        frac = np.abs(self._cp_pos[cp] - g0[veh]) / np.abs(g1[veh] - g0[veh])
        ts = t0 + np.round(frac * dt * 1000.0).astype(np.int64)
        order = np.argsort(ts, kind="stable")
        self._vehicle.append(veh[order])
        self._checkpoint.append(cp[order].astype(np.int64))
        self._direction.append(direction[veh][order].astype(np.int8))
        self._ts.append(ts[order])

    def table(self) -> TruthTable:
        """Every passage recorded (with ``keep=False``: since the last drain)."""
        return self._table(0)

    def drain(self) -> TruthTable:
        """Passages since the previous drain."""
        table = self._table(self._drained)
        self._drained += len(table)
        if not self.keep:
            self.clear()
        return table

    def _table(self, start: int) -> TruthTable:
        def cat(parts: list[npt.NDArray[np.generic]], dtype: type) -> npt.NDArray[np.generic]:
            return np.concatenate(parts)[start:] if parts else np.empty(0, dtype=dtype)

        veh = cat(self._vehicle, np.int64).astype(np.int64)  # type: ignore[arg-type]
        cp = cat(self._checkpoint, np.int64).astype(np.int64)  # type: ignore[arg-type]
        ids = np.array([*self._vehicle_ids, ""], dtype=object)
        cp_id = np.array([*self._cp_id, ""], dtype=object)
        cp_route = np.array([*self._cp_route, ""], dtype=object)
        cp_seq = np.array([*self._cp_seq, 0], dtype=np.int32)
        return TruthTable(
            vehicle_id=ids[veh],
            route=cp_route[cp],
            direction=cat(self._direction, np.int8).astype(np.int8),  # type: ignore[arg-type]
            checkpoint_id=cp_id[cp],
            checkpoint_seq=cp_seq[cp],
            ts_ms=cat(self._ts, np.int64).astype(np.int64),  # type: ignore[arg-type]
        )
