"""Shared fixtures: a real PostgreSQL and a real Mosquitto, each on a free port.

* ``pg_server``: one embedded PostgreSQL 18 per test session (or ``FLEET_TEST_DSN``).
* ``db_dsn``: a fresh, migrated database per test, so tests never see each other's rows.
* ``broker``: a Mosquitto per test with the project's config (``broker/``), its own
  data dir and port; service credentials in ``broker.creds``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from broker.runner import MosquittoBroker
from devtools.ingest_child import IngestChild
from fleet.storage.embedded import EmbeddedPostgres, free_port
from fleet.storage.migrate import migrate


class PgServer:
    """Either the session's embedded server or an external one from FLEET_TEST_DSN."""

    def __init__(self, admin_dsn: str, embedded: EmbeddedPostgres | None) -> None:
        self.admin_dsn = admin_dsn
        self.embedded = embedded

    def create_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
        return psycopg.conninfo.make_conninfo(self.admin_dsn, dbname=name)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    external = os.environ.get("FLEET_TEST_DSN")
    if external:
        yield PgServer(external, None)
        return
    # Not under pytest's basetemp: a concurrent pytest session resets its root to 0700,
    # which would lock the unprivileged server user out of its data directory.
    data_dir = Path(tempfile.mkdtemp(prefix="fleet-test-pg-"))
    pg = EmbeddedPostgres(data_dir, port=free_port())
    pg.start()
    try:
        yield PgServer(pg.dsn, pg)
    finally:
        pg.stop(mode="immediate")
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def db_dsn(pg_server: PgServer) -> str:
    dsn = pg_server.create_database()
    migrate(dsn)
    return dsn


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    b = MosquittoBroker(tmp_path / "state", port=free_port())
    b.start()
    b.creds = b.layout.service_credentials()  # type: ignore[attr-defined]
    try:
        yield b
    finally:
        b.stop()


class IngestProcess(IngestChild):
    """``fleet ingest`` wired to a test broker and database (so tests can kill -9 it)."""

    def __init__(self, broker: MosquittoBroker, dsn: str, log_dir: Path, **env: str) -> None:
        self.broker = broker
        self.dsn = dsn
        self.metrics_port = free_port()
        super().__init__(
            {
                **os.environ,
                "FLEET_DSN": dsn,
                "FLEET_MQTT_HOST": "127.0.0.1",
                "FLEET_MQTT_PORT": str(broker.port),
                "FLEET_MQTT_USERNAME": "svc-ingest",
                "FLEET_MQTT_PASSWORD": broker.layout.service_credentials()["svc-ingest"],
                "FLEET_METRICS_PORT": str(self.metrics_port),
                "FLEET_MQTT_CLIENT_ID": f"ingest-{uuid.uuid4().hex[:6]}",
                "FLEET_LOG_LEVEL": "INFO",
                **env,
            },
            log_dir / "ingest.log",
            healthy_timeout=20,
            stop_timeout=10,
        )


@pytest.fixture
def ingest_worker(broker: MosquittoBroker, db_dsn: str, tmp_path: Path) -> Iterator[IngestProcess]:
    proc = IngestProcess(broker, db_dsn, tmp_path)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
