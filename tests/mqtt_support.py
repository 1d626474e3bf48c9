"""Test-side MQTT helpers: a publisher that knows which messages got their PUBACK."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from broker.runner import MosquittoBroker


def add_device(broker: MosquittoBroker, vehicle_id: str, password: str = "pw-secret") -> str:
    """A device account on the running broker (effective when the control call returns)."""
    with broker.accounts() as accounts:
        accounts.put({vehicle_id: password})
    return password


class Publisher:
    """QoS 1 publisher that records which payloads the broker acknowledged."""

    def __init__(self, port: int, username: str, password: str, client_id: str | None = None):
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            # a device's account is bound to its client id (= its vehicle id)
            client_id=client_id
            or (
                f"pub-{username}-{time.monotonic_ns()}" if username.startswith("svc-") else username
            ),
            protocol=mqtt.MQTTv5,
        )
        self.client.username_pw_set(username, password)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.acked: set[int] = set()
        self.sent: dict[int, object] = {}  # mid → tag
        self._lock = threading.Lock()
        self.connected = threading.Event()
        self.client.on_publish = self._on_publish
        self.client.on_connect = lambda c, u, f, rc, p: (
            self.connected.set() if not rc.is_failure else None
        )
        self.client.on_disconnect = lambda c, u, f, rc, p: self.connected.clear()
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        if not self.connected.wait(10):
            raise TimeoutError(f"{username} could not connect to 127.0.0.1:{port}")

    def _on_publish(self, client, userdata, mid, rc, props) -> None:
        with self._lock:
            if not rc.is_failure:
                self.acked.add(mid)

    def publish(self, topic: str, payload: bytes, tag: object = None, qos: int = 1) -> int:
        info = self.client.publish(topic, payload, qos=qos)
        with self._lock:
            self.sent[info.mid] = tag
        return info.mid

    def acked_tags(self) -> list[object]:
        with self._lock:
            return [self.sent[m] for m in self.acked if m in self.sent]

    def wait_all_acked(self, timeout: float = 60) -> None:
        wait_for(lambda: len(self.acked) >= len(self.sent), timeout, "all PUBACKs")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_for(cond: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def count(dsn: str, sql: str, *args: object) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(sql, args).fetchone()  # type: ignore[arg-type]
        return int(row[0]) if row else 0
