"""fleet.mqtt's subscriber and publisher against the real broker: windows, acks, reconnects."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from broker.runner import MosquittoBroker
from fleet.mqtt.codec import MqttProtocolError
from fleet.mqtt.publisher import Publisher
from fleet.mqtt.subscriber import Message, MqttSubscriber, SubscriberOptions
from tests.mqtt_support import wait_for
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


def test_refused_credentials_name_the_reason(broker: MosquittoBroker) -> None:
    pub = Publisher("bad", "svc-gateway", "wrong-password")
    with pytest.raises(MqttProtocolError, match="bad user name or password|not authorized"):
        pub.connect("127.0.0.1", broker.port)
    link = GatewayLink("bad-gw", Credentials("svc-gateway", "wrong"))
    with pytest.raises(LinkError, match="check the gateway credentials"):
        link.connect("127.0.0.1", broker.port, 5)


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
