"""A device can only ever be itself: subscriptions refused at SUBSCRIBE time, no client-id
takeover, TLS with verification. Against the real Mosquitto with the project's config."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from broker.runner import MosquittoBroker, TlsListener
from broker.tls import LocalCa, ensure_local_tls
from fleet.contract import cmd_topic, receipt_topic, telemetry_topic
from fleet.storage.embedded import free_port
from tests.fixtures.mqtt import add_device
from tests.fixtures.waiting import wait_for

NOT_AUTHORIZED = 0x87


class Client:
    """One paho MQTT 5 client that records its CONNACK, SUBACKs and messages."""

    def __init__(
        self,
        port: int,
        user: str,
        password: str,
        client_id: str,
        *,
        clean_start: bool = True,
        tls_ca: Path | None = None,
    ) -> None:
        self.connack: list[int] = []
        self.granted: list[int] = []
        self.messages: list[tuple[str, bytes]] = []
        self.disconnected = threading.Event()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.c.username_pw_set(user, password)
        if tls_ca is not None:
            self.c.tls_set(ca_certs=str(tls_ca), cert_reqs=ssl.CERT_REQUIRED)
        self.c.on_connect = lambda c, u, f, rc, p: self.connack.append(rc.value)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.granted.extend(r.value for r in rcs)
        self.c.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload))
        self.c.on_disconnect = lambda c, u, f, rc, p: self.disconnected.set()
        props = None
        if not clean_start:
            from paho.mqtt.packettypes import PacketTypes  # noqa: PLC0415
            from paho.mqtt.properties import Properties  # noqa: PLC0415

            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
        self.c.connect("127.0.0.1", port, clean_start=clean_start, properties=props)
        self.c.loop_start()
        wait_for(lambda: bool(self.connack), 10, f"CONNACK for {user} as {client_id}")

    @property
    def accepted(self) -> bool:
        return self.connack[-1] == 0

    def subscribe(self, topic: str) -> int:
        n = len(self.granted)
        self.c.subscribe(topic, qos=1)
        wait_for(lambda: len(self.granted) > n, 10, f"SUBACK for {topic}")
        return self.granted[-1]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.mark.parametrize(
    "topic",
    [
        "$share/ingest/fleet/+/telemetry",
        "$share/ingest/#",
        "#",
        "fleet/#",
        "fleet/+/telemetry",
        "$SYS/#",
        cmd_topic("PP-B"),
        receipt_topic("PP-B"),
        "$CONTROL/dynamic-security/#",
    ],
)
def test_a_device_cannot_subscribe_beyond_itself(broker: MosquittoBroker, topic: str) -> None:
    add_device(broker, "PP-B", "pw-b")
    a = Client(broker.port, "PP-A", add_device(broker, "PP-A", "pw-a"), "PP-A")
    try:
        assert a.subscribe(topic) == NOT_AUTHORIZED
        assert a.subscribe(cmd_topic("PP-A")) < 0x80  # its own commands and receipts: fine
        assert a.subscribe(receipt_topic("PP-A")) < 0x80
    finally:
        a.close()


def test_no_client_id_takeover_and_the_victims_queued_command_survives(
    broker: MosquittoBroker,
) -> None:
    pw_a, pw_b = add_device(broker, "PP-A", "pw-a"), add_device(broker, "PP-B", "pw-b")
    # B has a persistent session with its command subscription, then goes offline
    b = Client(broker.port, "PP-B", pw_b, "PP-B", clean_start=False)
    assert b.subscribe(cmd_topic("PP-B")) < 0x80
    b.close()
    api = Client(broker.port, "svc-api", broker.creds["svc-api"], f"api-{time.monotonic_ns()}")
    info = api.c.publish(cmd_topic("PP-B"), b'{"cmd": "set_interval", "interval_s": 5}', qos=1)
    info.wait_for_publish(10)  # queued for B's session once the broker acknowledged it
    api.close()

    # A, with valid credentials of its own, tries B's client id and the ingest worker's
    for stolen in ("PP-B", "fleet-ingest-1"):
        thief = Client(broker.port, "PP-A", pw_a, stolen, clean_start=True)
        assert not thief.accepted, f"PP-A was let in as {stolen}"
        thief.close()

    # B comes back to its session and gets the command queued while it was away
    b = Client(broker.port, "PP-B", pw_b, "PP-B", clean_start=False)
    try:
        wait_for(lambda: bool(b.messages), 10, "B's queued command")
        assert b.messages[0][0] == cmd_topic("PP-B")
    finally:
        b.close()


def test_removed_device_is_disconnected_and_cannot_return(broker: MosquittoBroker) -> None:
    pw = add_device(broker, "PP-GONE", "pw-gone")
    van = Client(broker.port, "PP-GONE", pw, "PP-GONE")
    with broker.accounts() as accounts:
        assert accounts.remove("PP-GONE")
    assert van.disconnected.wait(10)
    van.close()
    again = Client(broker.port, "PP-GONE", pw, "PP-GONE")
    assert not again.accepted
    again.close()


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[MosquittoBroker, Path]]:
    certs = ensure_local_tls(tmp_path / "tls")
    tls = TlsListener(free_port(), certs.certfile, certs.keyfile)
    b = MosquittoBroker(tmp_path / "state", port=free_port(), tls=tls)
    b.start()
    b.creds = b.layout.service_credentials()  # type: ignore[attr-defined]
    try:
        yield b, certs.ca_file
    finally:
        b.stop()


def test_a_device_publishes_over_tls_with_verification(tls_broker, tmp_path: Path) -> None:
    broker, ca_file = tls_broker
    assert broker.tls is not None
    pw = add_device(broker, "PP-TLS", "pw-tls")
    ingest = Client(broker.port, "svc-ingest", broker.creds["svc-ingest"], "ingest-tls-test")
    assert ingest.subscribe("fleet/+/telemetry") < 0x80
    van = Client(broker.tls.port, "PP-TLS", pw, "PP-TLS", tls_ca=ca_file)
    try:
        assert van.accepted
        assert van.c.socket() is not None and "TLS" in van.c.socket().version()  # type: ignore[union-attr]
        van.c.publish(telemetry_topic("PP-TLS"), b'{"ts": 1, "lat": 0, "lon": 0}', qos=1)
        wait_for(lambda: bool(ingest.messages), 10, "the fix, over TLS")
    finally:
        van.close()
        ingest.close()


def test_a_broker_with_another_certificate_is_refused(tls_broker, tmp_path: Path) -> None:
    broker, _ = tls_broker
    assert broker.tls is not None
    other_ca = LocalCa(tmp_path / "impostor").cert_path  # not the CA that signed the broker
    pw = add_device(broker, "PP-TLS2", "pw-tls2")
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="PP-TLS2", protocol=mqtt.MQTTv5)
    c.username_pw_set("PP-TLS2", pw)
    c.tls_set(ca_certs=str(other_ca), cert_reqs=ssl.CERT_REQUIRED)
    with pytest.raises(ssl.SSLCertVerificationError):
        c.connect("127.0.0.1", broker.tls.port)
    # and the plaintext port does not speak TLS: a device cannot be tricked into it either
    plain = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="PP-TLS2", protocol=mqtt.MQTTv5)
    plain.tls_set(ca_certs=str(other_ca), cert_reqs=ssl.CERT_REQUIRED)
    with pytest.raises(OSError):  # SSLError or a reset: no handshake either way
        plain.connect("127.0.0.1", broker.port)


def test_the_reference_agent_uploads_over_tls(tls_broker, tmp_path: Path) -> None:
    """`fleet device run --ca-file`: the whole queue reaches the platform over TLS."""
    from tests.fixtures.firmware import Subscriber, drive_lines, now_ms, run_agent  # noqa: PLC0415

    broker, ca_file = tls_broker
    assert broker.tls is not None
    vid, pw = "PP-AGENT-TLS", add_device(broker, "PP-AGENT-TLS", "pw-agent")
    sink = Subscriber(broker.port, broker.creds["svc-ingest"], vid)  # answers with receipts
    nmea = tmp_path / "drive.nmea"
    nmea.write_text("\n".join(drive_lines(now_ms() - 60_000, 20, step_ms=1000)) + "\n")
    agent = run_agent(
        vid, pw, broker.tls.port, tmp_path / "q.sqlite3", str(nmea),
        "--ca-file", str(ca_file), "--speed", "0", "--interval", "1",
        log=tmp_path / "agent.log",
    )  # fmt: skip
    try:
        assert agent.wait(timeout=60) == 0, (tmp_path / "agent.log").read_text()[-2000:]
        assert sink.count() >= 15
    finally:
        if agent.poll() is None:
            agent.kill()
        sink.close()
