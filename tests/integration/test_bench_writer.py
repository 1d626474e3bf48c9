"""devtools.bench_writer times ingest's own statements: a smoke run on the test database
(its figures are not checked; that each step ran and wrote what it says is)."""

from __future__ import annotations

from devtools.bench_writer import STEPS, time_statements
from tests.fixtures.postgres import count


def test_bench_writer_times_each_step_of_the_batch_transaction(db_dsn: str) -> None:
    medians = time_statements(db_dsn, batch=50, vans=20, batches=12, drop=[])
    assert set(medians) == set(STEPS) and all(s > 0 for s in medians.values())
    assert count(db_dsn, "SELECT count(*) FROM positions") == 50 * 12
    assert count(db_dsn, "SELECT count(*) FROM vehicles") == 20
