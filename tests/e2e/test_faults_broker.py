"""kill -9 of Mosquitto: under live load, and while it holds a backlog for a stopped ingest.

Mosquitto PUBACKs a message on receipt and writes its persistence file only every
``autosave_interval`` (30 s), so a SIGKILL loses what arrived since (here: everything,
ingest's session included, so the restarted broker answers 0x10 "no matching
subscribers" until ingest is back). The receipt-aware devices keep every fix until a
storage receipt covers it and resend the rest: every fix they *generated* must end up in
``positions`` exactly once.
"""

from __future__ import annotations

import pytest

from devtools.crash import kill_broker, restart_broker
from devtools.scenario import Scenario

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]


def scenario(broker, worker) -> Scenario:
    return Scenario(port=broker.port, gateway_password=broker.creds["svc-gateway"], dsn=worker.dsn)


def test_broker_kill9_under_live_load(broker, ingest_worker):
    sc = scenario(broker, ingest_worker)
    pids: list[int] = []

    def crash_broker() -> None:
        pids.append(kill_broker(broker))
        restart_broker(broker)

    outcome = sc.run([(5.0, crash_broker)])
    assert outcome.proven, outcome.summary()
    assert len(pids) == 1 and broker.proc is not None and broker.proc.pid != pids[0]
    assert "disconnected from broker" in ingest_worker.log_path.read_text()


def test_broker_kill9_while_backlog_queued(broker, ingest_worker):
    """Ingest is down from 3 s to 11 s; the broker, holding that backlog, dies at 7 s."""
    sc = scenario(broker, ingest_worker)
    backlog: list[int] = []

    def crash_broker() -> None:
        backlog.append(sc.devices.open)
        kill_broker(broker)
        restart_broker(broker)

    outcome = sc.run([(3.0, ingest_worker.kill), (7.0, crash_broker), (11.0, ingest_worker.start)])
    assert outcome.proven, outcome.summary()
    # ~4 s at 1,000 fixes/s were queued (unreceipted) when the broker died
    assert backlog and backlog[0] > 3000, backlog
