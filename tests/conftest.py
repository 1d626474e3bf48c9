"""Shared fixtures: a real PostgreSQL and a real Mosquitto, each on a free port.

* ``pg_server``: one embedded PostgreSQL 18 per test session (or ``FLEET_TEST_DSN``).
* ``db_dsn``: a fresh, migrated database per test, so tests never see each other's rows.
* ``broker``: a Mosquitto per test with the project's config (``broker/``), its own
  data dir and port; service credentials in ``broker.creds``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from broker.runner import MosquittoBroker
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
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgServer]:
    external = os.environ.get("FLEET_TEST_DSN")
    if external:
        yield PgServer(external, None)
        return
    pg = EmbeddedPostgres(tmp_path_factory.mktemp("pg"), port=free_port())
    pg.start()
    try:
        yield PgServer(pg.dsn, pg)
    finally:
        pg.stop(mode="immediate")


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
