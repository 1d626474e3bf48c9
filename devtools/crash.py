"""``kill -9`` and restart of the platform's processes, each on its own data directory.

* Mosquitto: SIGKILL (nothing saved since its last autosave), restart on the same
  persistence directory and port.
* PostgreSQL: SIGKILL of the postmaster (its pid is the first line of
  ``<pgdata>/postmaster.pid``); the backends notice their postmaster died and exit; the
  restart runs crash recovery from the WAL.
* ``fleet ingest``: :meth:`devtools.ingest_child.IngestChild.kill` / ``start``.
"""

from __future__ import annotations

import logging
import os
import signal
import time

from broker.runner import BrokerError, MosquittoBroker
from devtools.processes import wait_gone
from fleet.storage.embedded import EmbeddedPostgres, EmbeddedPostgresError

__all__ = ["kill_broker", "kill_postmaster", "restart_broker", "restart_postgres"]

log = logging.getLogger(__name__)


def kill_broker(broker: MosquittoBroker) -> int:
    """SIGKILL Mosquitto; return its pid."""
    proc = broker.proc
    if proc is None:
        raise RuntimeError("the broker is not running")
    pid = proc.pid
    broker.kill()  # SIGKILL and reap
    return pid


def restart_broker(broker: MosquittoBroker, attempts: int = 20) -> None:
    """Start Mosquitto again on the same data dir and port (retrying while the port frees)."""
    for attempt in range(attempts):
        try:
            broker.start(timeout=5)
        except BrokerError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.25)
        else:
            return


def _postmaster_pid(pg: EmbeddedPostgres) -> int:
    pidfile = pg.pgdata / "postmaster.pid"
    return int(pidfile.read_text().split("\n", 1)[0])


def kill_postmaster(pg: EmbeddedPostgres, timeout: float = 10.0) -> int:
    """SIGKILL the postmaster; return its pid once it is gone."""
    pid = _postmaster_pid(pg)
    os.kill(pid, signal.SIGKILL)
    wait_gone(pid, timeout)
    return pid


def restart_postgres(pg: EmbeddedPostgres, attempts: int = 20) -> None:
    """Start the killed server again (crash recovery) once its orphaned backends are gone."""
    # EmbeddedPostgres counts an unreaped (zombie) postmaster as running: wait for init
    deadline = time.monotonic() + 30
    while pg.is_running() and time.monotonic() < deadline:
        time.sleep(0.01)
    for attempt in range(attempts):
        try:
            pg.start(timeout=60)
        except EmbeddedPostgresError as exc:
            # "pre-existing shared memory block is still in use": a backend of the killed
            # postmaster has not noticed yet. It will.
            if attempt == attempts - 1:
                raise
            log.info("PostgreSQL not restartable yet (%s); retrying", str(exc).splitlines()[0])
            time.sleep(0.5)
        else:
            return
