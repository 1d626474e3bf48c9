"""Test helpers for the API: a real uvicorn in a thread, tokens, MQTT publishing, ws clients."""

from __future__ import annotations

import base64
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from websockets.sync.client import ClientConnection, connect

from api.server import build_server
from api.tokens import Role, create_token
from broker.runner import MosquittoBroker
from fleet.settings import ApiSettings
from fleet.storage.embedded import free_port


def wait_for(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def make_token(dsn: str, role: Role = Role.VIEWER, name: str = "test") -> str:
    with psycopg.connect(dsn) as conn:
        return create_token(conn, name, role)[1]


class RunningApi:
    def __init__(self, settings: ApiSettings) -> None:
        self.settings = settings
        self.server = build_server(settings)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)
        self.base = f"http://127.0.0.1:{settings.api_port}"
        self.ws_base = f"ws://127.0.0.1:{settings.api_port}"

    @property
    def app(self) -> Any:
        return self.server.config.app

    def start(self) -> None:
        self.thread.start()
        wait_for(lambda: self.server.started, 20, "uvicorn to start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)

    def hub(self) -> Any:
        app = self.server.config.app
        return app.state.hub

    def wait_feed_connected(self) -> None:
        wait_for(self.server.config.app.state.feed.connected.is_set, 10, "MQTT feed")


@contextmanager
def running_api(dsn: str, broker: MosquittoBroker, **overrides: Any) -> Iterator[RunningApi]:
    settings = ApiSettings(
        dsn=dsn,
        mqtt_host="127.0.0.1",
        mqtt_port=broker.port,
        mqtt_username="svc-api",
        mqtt_password=broker.layout.service_credentials()["svc-api"],
        api_port=free_port(),
        api_bind="127.0.0.1",
        **overrides,
    )
    api = RunningApi(settings)
    api.start()
    try:
        api.wait_feed_connected()
        yield api
    finally:
        api.stop()


class Gateway:
    """Publishes fixes for any van as ``svc-gateway`` (QoS 1, waits for PUBACK)."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"gw-{os.getpid()}-{time.monotonic_ns()}"
        )
        self.client.username_pw_set(
            "svc-gateway", broker.layout.service_credentials()["svc-gateway"]
        )
        self.client.max_inflight_messages_set(1000)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)

    def fix(
        self, vid: str, ts: int, lat: float, lon: float, route: str = "B1", **extra: Any
    ) -> None:
        doc = {"ts": ts, "lat": lat, "lon": lon, "route": route, **extra}
        self.publish(f"fleet/{vid}/telemetry", msgspec.json.encode(doc))

    def batch(self, vid: str, fixes: list[dict[str, Any]]) -> None:
        self.publish(f"fleet/{vid}/telemetry", msgspec.json.encode({"fixes": fixes}))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def ws_connect(
    api: RunningApi,
    token: str | None,
    *,
    headers: dict[str, str] | None = None,
    path: str = "/ws/live",
) -> ClientConnection:
    """A live client sending ``token`` as ``Authorization: Bearer`` (the only way for REST)."""
    sent = dict(headers or {})
    if token:
        sent["Authorization"] = f"Bearer {token}"
    ws = connect(
        f"{api.ws_base}{path}",
        additional_headers=sent,
        open_timeout=10,
        compression=None,
        max_size=None,
    )
    return ws.__enter__()  # closed by the test or when the server stops


def recv_json(ws: ClientConnection, timeout: float = 5) -> dict[str, Any]:
    doc: dict[str, Any] = msgspec.json.decode(ws.recv(timeout=timeout))
    return doc


def recv_until(
    ws: ClientConnection, cond: Callable[[dict[str, Any]], bool], timeout: float = 10
) -> dict[str, Any]:
    """Frames are read (and dropped) until one satisfies ``cond``."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no matching frame")
        frame = recv_json(ws, left)
        if cond(frame):
            return frame


def now_ms() -> int:
    return int(time.time() * 1000)


class StalledClient:
    """A websocket client on a raw socket with a tiny receive buffer that never reads.

    Only the handshake is read; afterwards nothing is, until :meth:`drain_close_code`
    reads everything the server managed to send and returns the close code, if any.
    """

    def __init__(self, port: int, token: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /ws/live HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Authorization: Bearer {token}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("closed during handshake")
            head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head

    def drain_close_code(self, timeout: float = 30) -> int | None:
        self.sock.settimeout(timeout)
        buf = bytearray()
        while True:
            try:
                chunk = self.sock.recv(1 << 20)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            buf += chunk
        i = 0
        while i + 2 <= len(buf):
            opcode = buf[i] & 0x0F
            n = buf[i + 1] & 0x7F
            j = i + 2
            if n == 126:
                n = struct.unpack("!H", buf[j : j + 2])[0]
                j += 2
            elif n == 127:
                n = struct.unpack("!Q", buf[j : j + 8])[0]
                j += 8
            if j + n > len(buf):
                break
            if opcode == 0x8:
                return int(struct.unpack("!H", buf[j : j + 2])[0])
            i = j + n
        return None

    def close(self) -> None:
        self.sock.close()
