"""One of two ingest workers on a shared subscription is killed and never comes back.

Both workers share ``$share/<group>/...`` (FLEET_SHARE_GROUP, distinct FLEET_MQTT_CLIENT_ID,
persistent sessions). Worker B is SIGKILLed mid-stream: what it had received but not
committed, and what the broker keeps queueing for its session, never reaches it again.
The devices resend every fix no receipt covered; worker A stores them (a resend that
lands in B's session again is resent again: Mosquitto 2.0 keeps
dispatching to a disconnected member's session): every generated fix ends up in
``positions`` exactly once, with B gone for good.
"""

from __future__ import annotations

import uuid

import pytest

from devtools.scenario import Scenario
from tests.fixtures.ingest import IngestProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]


def test_shared_subscription_worker_killed_for_good(broker, db_dsn, tmp_path):
    group = f"faults{uuid.uuid4().hex[:6]}"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    env = {"FLEET_SHARE_GROUP": group, "FLEET_ANALYTICS": "false"}
    a = IngestProcess(broker, db_dsn, tmp_path / "a", FLEET_MQTT_CLIENT_ID=f"{group}-a", **env)
    b = IngestProcess(broker, db_dsn, tmp_path / "b", FLEET_MQTT_CLIENT_ID=f"{group}-b", **env)
    a.start()
    b.start()
    try:
        # Mosquitto keeps dispatching half of the group's messages, resends included, to
        # B's offline session: each resend round halves what is open, so the devices
        # resend quickly here (every 2 s at most) to keep the test short.
        sc = Scenario(
            port=broker.port,
            gateway_password=broker.creds["svc-gateway"],
            dsn=db_dsn,
            resend_after_s=1.5,
            resend_max_s=2.0,
        )
        stored_by_b: list[float] = []

        def kill_b() -> None:
            stored_by_b.append(b.metric("fleet_ingest_fixes_stored_total"))
            b.kill()

        outcome = sc.run([(4.0, kill_b)], duration_s=12.0, drain_timeout_s=60)
        print(outcome.summary())
        assert outcome.proven, outcome.summary()
        assert stored_by_b and stored_by_b[0] > 0  # B had its share before it died
        assert b.proc is not None and b.proc.poll() is not None  # and stayed dead
    finally:
        b.stop()
        a.stop()
