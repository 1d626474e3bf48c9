"""mqtt5's subscriber and publisher against the real broker: windows, acks, reconnects."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from broker.runner import MosquittoBroker
from mqtt5 import (
    Message,
    MqttConnectionLostError,
    MqttConnectRefusedError,
    MqttError,
    MqttProtocolError,
    MqttSubscriber,
    MqttSubscribeRefusedError,
    Publisher,
    SubscriberOptions,
)
from tests.fixtures.waiting import wait_for
from tracker_sim.gateway_link import GatewayLink
from tracker_sim.links import Credentials, LinkError


class Collector:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[Message] = []

    def __call__(self, batch: list[Message]) -> None:
        with self.lock:
            self.messages.extend(batch)

    def payloads(self) -> list[bytes]:
        with self.lock:
            return [m.payload for m in self.messages]

    def take(self) -> list[Message]:
        with self.lock:
            out, self.messages = self.messages, []
        return out


def ingest_options(broker: MosquittoBroker, **kw: object) -> SubscriberOptions:
    base: dict[str, object] = {
        "host": "127.0.0.1",
        "port": broker.port,
        "username": "svc-ingest",
        "password": broker.creds["svc-ingest"],  # type: ignore[attr-defined]
        "client_id": "test-sub",
        "topics": ["fleet/+/telemetry", "fleet/+/status"],
    }
    base.update(kw)
    return SubscriberOptions(**base)  # type: ignore[arg-type]


def gateway(broker: MosquittoBroker, client_id: str = "test-pub", **kw: int) -> Publisher:
    pub = Publisher(client_id, "svc-gateway", broker.creds["svc-gateway"], **kw)  # type: ignore[attr-defined]
    pub.connect("127.0.0.1", broker.port)
    return pub


@pytest.fixture
def collected(broker: MosquittoBroker) -> Iterator[tuple[MqttSubscriber, Collector]]:
    got = Collector()
    sub = MqttSubscriber(ingest_options(broker), on_batch=got)
    sub.start()
    assert sub.subscribed.wait(10), sub.last_error
    yield sub, got
    sub.stop()


def test_publisher_window_follows_the_receive_maximum_and_every_message_is_acked(
    broker: MosquittoBroker, collected: tuple[MqttSubscriber, Collector]
) -> None:
    _, got = collected
    big = gateway(broker, "pub-big")
    assert big.window == 1000  # max_inflight_messages in broker/mosquitto.conf
    big.close()
    pub = gateway(broker, max_inflight=7)
    assert pub.window == 7
    seen_outstanding: list[int] = []
    msgs = [(f"fleet/w{i % 5}/telemetry", b"%d" % i) for i in range(500)]
    for k in range(0, len(msgs), 50):
        pub.publish_many(msgs[k : k + 50])
        seen_outstanding.append(pub.outstanding)
    assert max(seen_outstanding) <= 7
    assert pub.wait_acked(20)
    assert (pub.published, pub.acked, pub.weight_acked, pub.refused) == (500, 500, 500, 0)
    wait_for(lambda: len(got.payloads()) >= 500, 20, "500 messages at the subscriber")
    assert sorted(got.payloads(), key=int) == [p for _, p in msgs]
    pub.close()


def test_an_error_puback_does_not_count_as_acknowledged(broker: MosquittoBroker) -> None:
    pub = gateway(broker)
    pub.publish("fleet/van-1/telemetry", b"{}", 3)
    pub.publish("fleet/van-1/cmd", b"{}", 5)  # svc-gateway may not write commands
    assert pub.wait_acked(10)
    assert (pub.acked, pub.weight_acked, pub.refused) == (1, 3, 1)
    pub.close()


def test_refused_credentials_are_a_connect_refused_error_with_the_reason_code(
    broker: MosquittoBroker,
) -> None:
    pub = Publisher("bad", "svc-gateway", "wrong-password")
    with pytest.raises(MqttConnectRefusedError) as refused:
        pub.connect("127.0.0.1", broker.port)
    assert refused.value.reason_code in (0x86, 0x87)
    assert isinstance(refused.value, MqttError)
    assert "bad user name or password" in str(refused.value) or "not authorized" in str(
        refused.value
    )
    with pytest.raises(MqttConnectionLostError):
        pub.publish_many([("fleet/van-1/telemetry", b"{}")])  # never connected
    link = GatewayLink("bad-gw", Credentials("svc-gateway", "wrong"))
    with pytest.raises(LinkError, match="check the gateway credentials"):
        link.connect("127.0.0.1", broker.port, 5)


def test_subscriber_failures_carry_the_exception_and_only_the_callers_hint(
    broker: MosquittoBroker,
) -> None:
    """No application advice inside the library: the caller's ``hint`` adds it."""
    seen: list[MqttError | OSError] = []

    def hint(exc: MqttError | OSError) -> str | None:
        seen.append(exc)
        return "check the test's password" if isinstance(exc, MqttConnectRefusedError) else None

    bad = MqttSubscriber(ingest_options(broker, password="wrong", client_id="bad", hint=hint))
    plain = MqttSubscriber(ingest_options(broker, password="wrong", client_id="bad-2"))
    bad.start()
    plain.start()
    try:
        wait_for(lambda: isinstance(bad.last_exception, MqttConnectRefusedError), 10, "refusal")
        wait_for(lambda: isinstance(plain.last_exception, MqttConnectRefusedError), 10, "refusal")
        assert bad.last_error is not None and bad.last_error.endswith("; check the test's password")
        assert f"127.0.0.1:{broker.port}" in bad.last_error
        assert plain.last_error == (
            f"cannot connect to broker 127.0.0.1:{broker.port}: {plain.last_exception}"
        )
        assert seen and all(isinstance(e, MqttConnectRefusedError) for e in seen)
    finally:
        bad.stop()
        plain.stop()


def test_a_refused_subscription_names_each_topic_and_reason_code(broker: MosquittoBroker) -> None:
    sub = MqttSubscriber(
        ingest_options(broker, client_id="acl", topics=["fleet/+/telemetry", "fleet/+/cmd"])
    )
    sub.start()
    try:
        wait_for(lambda: isinstance(sub.last_exception, MqttSubscribeRefusedError), 10, "SUBACK")
        assert sub.connected.is_set() and not sub.subscribed.is_set()
        exc = sub.last_exception
        assert isinstance(exc, MqttSubscribeRefusedError)
        assert exc.refused == {"fleet/+/cmd": 0x87}
        assert (
            sub.last_error == "broker refused the subscription: fleet/+/cmd (0x87 (not authorized))"
        )
    finally:
        sub.stop()


def _one_shot_broker(answer: bytes) -> tuple[int, threading.Thread]:
    """A listener that reads the client's first packet, sends ``answer`` and closes."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:
        with server:
            conn, _ = server.accept()
            with conn:
                conn.recv(65536)  # CONNECT
                conn.sendall(answer)
                conn.recv(65536)  # SUBSCRIBE, or the client closing

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return port, thread


@pytest.mark.parametrize(
    ("answer", "error", "fields"),
    [
        # CONNACK refused: 0x85 client identifier not valid
        (b"\x20\x03\x00\x85\x00", MqttConnectRefusedError, {"reason_code": 0x85}),
        # CONNACK accepted, then DISCONNECT 0x8E session taken over
        (b"\x20\x03\x00\x00\x00\xe0\x02\x8e\x00", MqttConnectionLostError, {"reason_code": 0x8E}),
        # not a CONNACK at all (a PINGRESP)
        (b"\xd0\x00", MqttProtocolError, {"packet_type": 13}),
    ],
)
def test_what_the_broker_said_is_in_the_exception_fields(
    answer: bytes, error: type[MqttError], fields: dict[str, int]
) -> None:
    port, served = _one_shot_broker(answer)
    seen: list[MqttError | OSError] = []
    sub = MqttSubscriber(
        SubscriberOptions(
            host="127.0.0.1",
            port=port,
            username=None,
            password=None,
            client_id="probe",
            topics=["fleet/+/telemetry"],
            reconnect_max_s=60.0,
            hint=lambda exc: seen.append(exc) or None,
        )
    )
    sub.start()
    try:
        wait_for(lambda: bool(seen), 10, "the first failure")
        exc = seen[0]
        assert isinstance(exc, error), repr(exc)
        assert {k: getattr(exc, k) for k in fields} == fields
        assert any(e is sub.last_exception for e in seen)  # (it may have retried since)
    finally:
        sub.stop()
        served.join(5)


def test_publisher_resends_unacknowledged_messages_after_a_broker_restart(
    broker: MosquittoBroker, collected: tuple[MqttSubscriber, Collector]
) -> None:
    sub, got = collected
    pub = gateway(broker)
    for i in range(20):
        pub.publish("fleet/r1/telemetry", b"%d" % i, 1)  # queued, not yet written
    broker.kill()
    for _ in range(100):
        pub.pump(0.02)
        if not pub.connected:
            break
    assert not pub.connected and pub.outstanding == 20 and pub.acked == 0
    assert not pub.publish("fleet/r1/telemetry", b"late")
    wait_for(lambda: not sub.subscribed.is_set(), 10, "the subscriber to notice the loss")
    broker.start()
    assert sub.subscribed.wait(20), "subscriber did not resubscribe after the restart"
    pub.resume("127.0.0.1", broker.port)
    assert pub.wait_acked(20)
    assert pub.acked == 20
    wait_for(lambda: len(set(got.payloads())) >= 20, 20, "resent messages at the subscriber")
    assert set(got.payloads()) == {b"%d" % i for i in range(20)}
    pub.close()


def test_manual_ack_is_bounded_by_receive_maximum_and_bound_to_its_connection(
    broker: MosquittoBroker,
) -> None:
    inbox_sub = MqttSubscriber(
        ingest_options(
            broker,
            client_id="manual-sub",
            clean_start=False,
            session_expiry_s=300,
            receive_maximum=10,
            manual_ack=True,
        )
    )
    inbox_sub.start()
    try:
        assert inbox_sub.subscribed.wait(10), inbox_sub.last_error
        pub = gateway(broker)
        pub.publish_many([("fleet/m1/telemetry", b"%d" % i) for i in range(30)])
        assert pub.wait_acked(10)
        first: list[Message] = []
        wait_for(lambda: _drain(inbox_sub, first) >= 10, 10, "10 messages")
        # Nothing acked: the broker holds the rest back (Receive Maximum 10).  Proving
        # that nothing else arrives needs a (short) wait.
        time.sleep(0.5)
        assert _drain(inbox_sub, first) == 10
        # The connection drops: acks of the old connection are not sent, the broker
        # redelivers those messages on the new one.
        gen = inbox_sub.generation
        sock = inbox_sub._sock
        assert sock is not None
        sock.shutdown(socket.SHUT_RDWR)
        wait_for(
            lambda: inbox_sub.generation > gen and inbox_sub.connected.is_set(), 15, "reconnect"
        )
        assert inbox_sub.ack(first) == 0
        again: list[Message] = []
        delivered: set[bytes] = set()
        while len(delivered) < 30:
            wait_for(lambda: _drain(inbox_sub, again) > 0, 10, "redelivered and further messages")
            assert all(m.generation == inbox_sub.generation for m in again)
            assert inbox_sub.ack(again) == len(again)
            delivered |= {m.payload for m in again}
            again.clear()
        assert delivered == {b"%d" % i for i in range(30)}
        assert {m.payload for m in first} <= delivered
        pub.close()
    finally:
        inbox_sub.stop()


def _drain(sub: MqttSubscriber, into: list[Message]) -> int:
    """Move what the subscriber queued into ``into``; return how many ``into`` holds."""
    while not sub.inbox.empty():
        into.extend(sub.inbox.get_nowait())
    return len(into)


def test_immediate_ack_qos0_gets_retained_status_and_can_publish(broker: MosquittoBroker) -> None:
    pub = gateway(broker)
    pub.publish("fleet/s1/status", b"online", retain=True)
    assert pub.wait_acked(10) and pub.acked == 1
    got = Collector()
    api = MqttSubscriber(
        ingest_options(
            broker,
            username="svc-api",
            password=broker.creds["svc-api"],  # type: ignore[attr-defined]
            client_id="api-sub",
            qos=0,
        ),
        on_batch=got,
    )
    api.start()
    try:
        assert api.subscribed.wait(10), api.last_error
        wait_for(lambda: b"online" in got.payloads(), 10, "the retained status")
        assert got.take()[0].topic == "fleet/s1/status"
        assert api.publish("fleet/s1/cmd", b'{"cmd": "ping"}')
    finally:
        api.stop()
        pub.close()


def test_inbox_is_bounded_in_bytes_and_qos0_cannot_flood_it(broker: MosquittoBroker) -> None:
    """QoS 0 has no Receive Maximum: the byte bound stops the reader, TCP holds the rest."""
    limit, chunk = 64 * 1024, 16 * 1024
    sub = MqttSubscriber(
        ingest_options(broker, qos=0, max_inbox_bytes=limit, read_chunk=chunk, client_id="b0")
    )
    sub.start()
    try:
        wait_for(sub.subscribed.is_set, 10, "subscription")
        pub = gateway(broker)
        payload = b"x" * 1024
        pub.publish_many((f"fleet/v{i % 50}/telemetry", payload) for i in range(2000))
        pub.close()
        # the reader stops once over the bound: at most one more read lands on top of it
        time.sleep(0.5)
        assert sub.inbox_bytes <= limit + chunk + 2048
        received = 0
        while (batch := sub.take(1.0)) is not None:
            assert sub.inbox_bytes <= limit + chunk + 2048
            received += len(batch)
        # QoS 0 carries no guarantee: the broker drops what it cannot send (Mosquitto keeps
        # about max_inflight_messages for a slow reader), but memory stayed bounded here and
        # reading goes on.
        assert received >= limit // 1024
        pub = gateway(broker, "test-pub-2")
        pub.publish_many([("fleet/v1/telemetry", b"after")])
        pub.close()
        batch = sub.take(5.0)
        assert batch is not None and batch[-1].payload == b"after"
    finally:
        sub.stop()
