"""Count what a run lost or doubled, from what the devices *generated* (not what was acked).

Every generated fix is listed as ``(vehicle_id, ts)`` (the generators derive them from
per-device counts: fix identity is deterministic), copied into a temporary table and
compared with ``positions`` by exact queries:

* ``lost``: generated fixes with no row in ``positions``;
* ``dup_rows``: rows beyond one per ``(vehicle_id, ts)`` among the run's vehicles;
* ``stored``: rows of the run's vehicles (a stray row, e.g. a wrong ``ts``, shows as
  ``stored`` > ``generated - lost``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import psycopg

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


def audit_run(dsn: str, generated_fixes: Iterable[tuple[str, int]]) -> Audit:
    """Compare the generated fixes, ``(vehicle_id, ts in epoch ms)``, with ``positions``."""
    generated = 0
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "CREATE TEMP TABLE generated_fixes (vehicle_id text NOT NULL, ts_ms bigint NOT NULL)"
        )
        with conn.cursor().copy("COPY generated_fixes (vehicle_id, ts_ms) FROM STDIN") as copy:
            for fix in generated_fixes:
                copy.write_row(fix)
                generated += 1
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
