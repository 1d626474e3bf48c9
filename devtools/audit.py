"""Count what a run lost or doubled, from what the devices *generated* (not what was acked).

Every generated fix is listed as ``(vehicle_id, ts)`` from the per-device counts and the
:class:`~devtools.receipt_devices.FixPlan`, copied into a temporary table and compared
with ``positions`` by exact queries:

* ``lost``: generated fixes with no row in ``positions``;
* ``dup_rows``: rows beyond one per ``(vehicle_id, ts)`` among the run's vehicles;
* ``stored``: rows of the run's vehicles (a stray row, e.g. a wrong ``ts``, shows as
  ``stored`` > ``generated - lost``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import psycopg

from devtools.receipt_devices import FixPlan

__all__ = ["Audit", "audit_run"]


@dataclass(frozen=True)
class Audit:
    generated: int
    stored: int
    lost: int
    dup_rows: int
    stray: int  # rows of the run's vehicles that no generated fix accounts for

    @property
    def clean(self) -> bool:
        return self.lost == 0 and self.dup_rows == 0 and self.stray == 0


def audit_run(dsn: str, counts: Mapping[str, int], plan: FixPlan) -> Audit:
    """Compare the generated fixes (``counts[vehicle] = n`` → seq ``0 .. n-1``) with the DB."""
    generated = sum(counts.values())
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "CREATE TEMP TABLE generated_fixes (vehicle_id text NOT NULL, ts_ms bigint NOT NULL)"
        )
        with conn.cursor().copy("COPY generated_fixes (vehicle_id, ts_ms) FROM STDIN") as copy:
            for vehicle_id, n in counts.items():
                for seq in range(n):
                    copy.write_row((vehicle_id, plan.ts(seq)))
        conn.execute(
            "CREATE TEMP TABLE run_vehicles AS SELECT DISTINCT vehicle_id FROM generated_fixes"
        )
        conn.execute("ANALYZE generated_fixes")
        row = conn.execute(
            """
            SELECT count(*) FROM generated_fixes g
            WHERE NOT EXISTS (
                SELECT 1 FROM positions p
                WHERE p.vehicle_id = g.vehicle_id
                  AND p.ts = timestamptz 'epoch' + g.ts_ms * interval '1 millisecond')
            """
        ).fetchone()
        lost = int(row[0]) if row else 0
        row = conn.execute(
            """
            SELECT count(*), count(DISTINCT (p.vehicle_id, p.ts))
            FROM positions p JOIN run_vehicles USING (vehicle_id)
            """
        ).fetchone()
        stored, distinct = (int(row[0]), int(row[1])) if row else (0, 0)
    return Audit(
        generated=generated,
        stored=stored,
        lost=lost,
        dup_rows=stored - distinct,
        stray=distinct - (generated - lost),
    )
