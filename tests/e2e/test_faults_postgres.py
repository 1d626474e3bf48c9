"""kill -9 of the PostgreSQL postmaster while ingest has a batch in an open transaction.

The kill is aimed: the test polls ``pg_stat_activity`` until ingest's connection is
inside a batch transaction (COPY into the staging table, the insert into ``positions``,
or the commit) and SIGKILLs the postmaster at that moment. The batch never commits (or
commits without being acknowledged); ingest retries it against the restarted server
after crash recovery, the broker redelivers, the devices resend what no receipt covers:
every generated fix ends up in ``positions`` exactly once.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from devtools.crash import kill_postmaster, restart_postgres
from devtools.scenario import Scenario
from fleet.storage.embedded import EmbeddedPostgres, free_port
from fleet.storage.migrate import migrate
from tests.fixtures.ingest import IngestProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

IN_BATCH = """
SELECT left(query, 60) FROM pg_stat_activity
WHERE pid <> pg_backend_pid() AND backend_type = 'client backend' AND xact_start IS NOT NULL
  AND state IN ('active', 'idle in transaction')
  AND (query ILIKE '%positions%' OR query ILIKE 'commit%')
LIMIT 1
"""


def wait_for_open_batch(dsn: str, timeout: float = 10.0) -> str:
    """Poll until ingest is inside a batch transaction; return what it is running."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(IN_BATCH).fetchone()
            if row is not None:
                return str(row[0])
    raise TimeoutError("ingest never seen inside a batch transaction")


@pytest.fixture
def own_postgres():
    # Its own server: this test kills the postmaster. Not under pytest's basetemp (see
    # tests/conftest.py: the server user must be able to traverse it).
    data_dir = Path(tempfile.mkdtemp(prefix="fleet-test-kill9-"))
    data_dir.chmod(0o711)  # the server user (as root) keeps its files inside: one rmtree
    pg = EmbeddedPostgres(data_dir, port=free_port())
    pg.start()
    migrate(pg.dsn)
    try:
        yield pg
    finally:
        pg.stop(mode="immediate")
        shutil.rmtree(pg.data_dir, ignore_errors=True)


def test_postmaster_kill9_mid_batch(broker, own_postgres, tmp_path):
    pg = own_postgres
    worker = IngestProcess(broker, pg.dsn, tmp_path, FLEET_ANALYTICS="false")
    worker.start()
    seen: list[str] = []
    try:
        sc = Scenario(
            port=broker.port,
            gateway_password=broker.creds["svc-gateway"],
            dsn=pg.dsn,
            rate=2000,
            devices=100,
        )

        def crash_mid_batch() -> None:
            seen.append(wait_for_open_batch(pg.dsn))
            kill_postmaster(pg)
            restart_postgres(pg)

        outcome = sc.run([(5.0, crash_mid_batch)])
        assert outcome.proven, outcome.summary()
        assert seen, "the postmaster was never killed"
        assert worker.proc is not None and worker.proc.poll() is None  # recovered by itself
        assert worker.metric("fleet_ingest_db_errors_total") >= 1
        assert "database write failed" in worker.log_path.read_text()
        print(f"killed while ingest ran: {seen[0]!r}; {outcome.summary()}")
    finally:
        worker.stop()
