"""The whole write path on one box, for fault injection: Mosquitto, PostgreSQL, ingest.

:class:`FaultRig` starts an embedded PostgreSQL (migrated), a Mosquitto with the
project's config, each with its own data directory under ``workdir``, and ``fleet
ingest`` as a child process; it can ``kill -9`` each of them and restart it on the same
data directory and port (:mod:`devtools.crash`).
"""

from __future__ import annotations

import os
from pathlib import Path

from broker.runner import MosquittoBroker
from devtools.crash import kill_broker, kill_postmaster, restart_broker, restart_postgres
from devtools.ingest_child import IngestChild
from fleet.storage.embedded import EmbeddedPostgres, free_port
from fleet.storage.migrate import migrate

__all__ = ["FaultRig"]


class FaultRig:
    """Broker + database + one ingest worker under ``workdir``; stop with :meth:`close`."""

    def __init__(self, workdir: Path, ingest_env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.pg = EmbeddedPostgres(workdir / "postgres", port=free_port())
        self.broker = MosquittoBroker(workdir / "state", port=free_port())
        self._ingest_env = ingest_env or {}
        self.ingest: IngestChild | None = None
        self.creds: dict[str, str] = {}

    @property
    def dsn(self) -> str:
        return self.pg.dsn

    def start(self) -> None:
        self.pg.start()
        migrate(self.pg.dsn)
        self.broker.start()
        self.creds = self.broker.layout.service_credentials()
        env = {
            **os.environ,
            "FLEET_DSN": self.pg.dsn,
            "FLEET_MQTT_HOST": "127.0.0.1",
            "FLEET_MQTT_PORT": str(self.broker.port),
            "FLEET_MQTT_USERNAME": "svc-ingest",
            "FLEET_MQTT_PASSWORD": self.creds["svc-ingest"],
            "FLEET_METRICS_PORT": str(free_port()),
            "FLEET_MQTT_CLIENT_ID": "faults-ingest",
            "FLEET_LOG_LEVEL": "INFO",
            "FLEET_ANALYTICS": "false",
            **self._ingest_env,
        }
        self.ingest = IngestChild(env, self.workdir / "ingest.log")
        self.ingest.start()

    # -- faults ------------------------------------------------------------------------

    def kill_broker(self) -> int:
        return kill_broker(self.broker)

    def restart_broker(self) -> None:
        restart_broker(self.broker)

    def kill_postgres(self) -> int:
        return kill_postmaster(self.pg)

    def restart_postgres(self) -> None:
        restart_postgres(self.pg)

    def kill_ingest(self) -> int:
        assert self.ingest is not None and self.ingest.pid is not None
        pid = self.ingest.pid
        self.ingest.kill()
        return pid

    def start_ingest(self) -> None:
        assert self.ingest is not None
        self.ingest.start()

    # -- teardown ----------------------------------------------------------------------

    def close(self) -> None:
        """Stop everything that runs (each step even if an earlier one failed)."""
        try:
            if self.ingest is not None:
                self.ingest.stop(timeout=10)
        finally:
            try:
                self.broker.stop()
            finally:
                self.pg.stop(mode="immediate")
