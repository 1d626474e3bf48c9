"""Helpers for the firmware stub tests: NMEA synthesis, an MQTT test subscriber, a TCP
proxy that can freeze a link, and running ``fleet device run`` as a subprocess."""

from __future__ import annotations

import datetime as dt
import math
import os
import queue
import select
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from firmware_stub.agent import AgentConfig, DeviceAgent, RunSummary
from firmware_stub.nmea import with_checksum
from firmware_stub.uploader import UplinkConfig
from fleet.contract import (
    Fix,
    TopicKind,
    Validation,
    decode_telemetry,
    receipt_topic,
    status_topic,
)
from fleet.receipts import Receipt, encode_receipt, to_ranges

REPO = Path(__file__).resolve().parent.parent
FLEET = REPO / ".venv" / "bin" / "fleet"
MAKASSAR = (-5.1350, 119.4230)


# -- NMEA synthesis ------------------------------------------------------------------


def _coord(value: float, lat: bool) -> tuple[str, str]:
    hemi = ("N" if value >= 0 else "S") if lat else ("E" if value >= 0 else "W")
    value = abs(value)
    deg = int(value)
    minutes = (value - deg) * 60
    width = 2 if lat else 3
    return f"{deg:0{width}d}{minutes:08.5f}", hemi


def _hms(t: dt.datetime) -> str:
    return t.strftime("%H%M%S.") + f"{t.microsecond // 10000:02d}"


def gga(
    t: dt.datetime,
    lat: float,
    lon: float,
    *,
    quality: int = 1,
    sats: int = 9,
    hdop: float = 0.9,
    alt: float = 14.2,
    talker: str = "GN",
) -> str:
    la, ns = _coord(lat, True)
    lo, ew = _coord(lon, False)
    body = (
        f"{talker}GGA,{_hms(t)},{la},{ns},{lo},{ew},{quality},{sats:02d},{hdop:.2f},"
        f"{alt:.1f},M,20.1,M,,"
    )
    return with_checksum(body)


def rmc(
    t: dt.datetime,
    lat: float,
    lon: float,
    *,
    speed_ms: float = 0.0,
    course: float | None = None,
    valid: bool = True,
    mode: str = "A",
    talker: str = "GN",
) -> str:
    la, ns = _coord(lat, True)
    lo, ew = _coord(lon, False)
    kn = speed_ms / (1852 / 3600)
    crs = "" if course is None else f"{course:.2f}"
    body = (
        f"{talker}RMC,{_hms(t)},{'A' if valid else 'V'},{la},{ns},{lo},{ew},{kn:.3f},{crs},"
        f"{t.strftime('%d%m%y')},,,{mode}"
    )
    return with_checksum(body)


def epoch(ts_ms: int, lat: float, lon: float, **kw: float) -> list[str]:
    """GGA + RMC of one epoch at UTC epoch milliseconds ``ts_ms``."""
    t = dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC)
    hdop = float(kw.get("hdop", 0.9))
    speed = float(kw.get("speed_ms", 8.0))
    return [gga(t, lat, lon, hdop=hdop), rmc(t, lat, lon, speed_ms=speed, course=45.0)]


def track_point(i: int) -> tuple[float, float]:
    """The i-th point of a straight drive north-east from central Makassar (~8 m apart)."""
    step = 8.0 / 111_320
    return MAKASSAR[0] + i * step * math.cos(math.radians(45)), MAKASSAR[1] + i * step * 0.7


def drive_lines(start_ms: int, count: int, step_ms: int = 1000) -> list[str]:
    lines: list[str] = []
    for i in range(count):
        lat, lon = track_point(i)
        lines += epoch(start_ms + i * step_ms, lat, lon)
    return lines


def now_ms() -> int:
    return (time.time_ns() // 1_000_000) // 1000 * 1000  # whole seconds, like a receiver


# -- MQTT test subscriber --------------------------------------------------------------


def add_device(broker: object, vid: str | None = None) -> tuple[str, str]:
    vid = vid or f"van-{uuid.uuid4().hex[:8]}"
    password = f"pw-{uuid.uuid4().hex}"
    with broker.accounts() as accounts:  # type: ignore[attr-defined]
        accounts.put({vid: password})
    return vid, password


LENIENT = Validation(max_future_ms=10**13, max_age_ms=10**13)


class Subscriber:
    """``svc-ingest`` with a persistent session: records every fix and status it gets.

    With ``receipts`` it also plays ingest's part of the contract: each telemetry message
    is answered with a storage receipt for its fixes (received = "stored" here), so the
    agent empties its queue. Without, the agent keeps every fix and resends.
    """

    def __init__(
        self,
        port: int,
        password: str,
        vid: str,
        username: str = "svc-ingest",
        *,
        receipts: bool = True,
    ) -> None:
        self.vid = vid
        self.receipts = receipts
        self.receipts_sent = 0
        self.fixes: list[Fix] = []
        self.messages = 0
        self.batches: list[tuple[int, int]] = []  # (payload bytes, fixes) per message
        self.arrivals: list[float] = []  # time.monotonic() per message
        self.statuses: list[tuple[str, bool]] = []
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"test-sub-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self.connected.clear()
        self.client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", port, 30, clean_start=False, properties=props)
        self.client.loop_start()
        assert self.connected.wait(10), "test subscriber did not connect"

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        if not flags.session_present:
            client.subscribe([(f"fleet/{self.vid}/telemetry", 1), (status_topic(self.vid), 1)])
        self.connected.set()

    def _on_message(self, client, userdata, msg) -> None:
        if msg.topic.endswith("/status"):
            with self.lock:
                self.statuses.append((msg.payload.decode(), bool(msg.retain)))
            return
        res = decode_telemetry(TopicKind.TELEMETRY, self.vid, msg.payload, 0, LENIENT)
        assert not res.rejections, res.rejections
        with self.lock:
            self.messages += 1
            self.batches.append((len(msg.payload), len(res.fixes)))
            self.arrivals.append(time.monotonic())
            self.fixes.extend(res.fixes)
        if self.receipts:
            seqs = [f.seq for f in res.fixes if f.seq is not None]
            receipt = encode_receipt(Receipt(seq=to_ranges(seqs)))
            client.publish(receipt_topic(self.vid), receipt, qos=1)
            with self.lock:
                self.receipts_sent += 1

    def count(self) -> int:
        with self.lock:
            return len(self.fixes)

    def snapshot(self) -> list[Fix]:
        with self.lock:
            return list(self.fixes)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def publish_receipt(port: int, password: str, vid: str, payload: bytes) -> None:
    """Publish one storage receipt to the device as ``svc-ingest`` (ingest's user)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.username_pw_set("svc-ingest", password)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        info = client.publish(receipt_topic(vid), payload, qos=1)
        info.wait_for_publish(5)
        assert info.is_published(), "the receipt got no PUBACK"
    finally:
        client.disconnect()  # first: the loop thread then ends at once
        client.loop_stop()


def retained_status(port: int, password: str, vid: str, timeout: float = 5) -> str | None:
    """What a fresh subscriber sees retained on the vehicle's status topic."""
    got: queue.Queue[str] = queue.Queue()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.username_pw_set("svc-api", password)
    client.on_connect = lambda c, *a: c.subscribe(status_topic(vid), 1)
    client.on_message = lambda c, u, m: got.put(m.payload.decode()) if m.retain else None
    client.connect("127.0.0.1", port, 30)
    client.loop_start()
    try:
        return got.get(timeout=timeout)
    except queue.Empty:
        return None
    finally:
        client.loop_stop()
        client.disconnect()


# -- a TCP proxy that can hold the device's bytes (a link that stalls) ---------------


class FreezableProxy:
    """Forwards 127.0.0.1:<port> to the broker; :meth:`freeze` holds device → broker bytes."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.frozen = threading.Event()
        self.held = 0  # bytes the device sent while frozen, never forwarded
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def freeze(self) -> None:
        self.frozen.set()

    def cut(self) -> None:
        """Drop every open connection (a cell handover); new ones are forwarded again."""
        conns, self._conns = self._conns, []
        for sock in conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self) -> None:
        self.listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                down, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.target_port))
            self._conns += [down, up]
            threading.Thread(target=self._pump, args=(down, up), daemon=True).start()

    def _pump(self, down: socket.socket, up: socket.socket) -> None:
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([down, up], [], [], 0.1)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is down:
                        if self.frozen.is_set():
                            self.held += len(data)
                        else:
                            up.sendall(data)
                    else:
                        down.sendall(data)
        except OSError:
            return
        finally:
            down.close()
            up.close()

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        self._thread.join(2)
        for sock in self._conns:
            sock.close()


# -- the agent as a subprocess -----------------------------------------------------------


def run_agent(
    vid: str,
    password: str,
    port: int,
    queue_path: Path,
    nmea: str,
    *args: str,
    log: Path,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "FLEET_MQTT_PASSWORD": password,
        "FLEET_MQTT_HOST": "127.0.0.1",
        "FLEET_LOG_LEVEL": "INFO",
        **(env or {}),
    }
    cmd = [
        str(FLEET) if FLEET.exists() else sys.executable,
        *([] if FLEET.exists() else ["-m", "fleet.cli"]),
        "device",
        "run",
        "--nmea",
        nmea,
        "--vehicle-id",
        vid,
        "--port",
        str(port),
        "--queue",
        str(queue_path),
        "--backoff-max",
        "0.5",
        *args,
    ]
    with log.open("ab") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)


def queue_stats(queue_path: Path) -> tuple[int, int]:
    """(highest seq ever assigned, fixes still queued), read without disturbing the agent."""
    db = sqlite3.connect(f"file:{queue_path}?mode=ro", uri=True, timeout=5)
    try:
        seq = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'fixes'").fetchone()
        depth = db.execute("SELECT count(*) FROM fixes").fetchone()[0]
        return (seq[0] if seq else 0), depth
    except sqlite3.OperationalError:
        return 0, 0
    finally:
        db.close()


def queued_seqs(queue_path: Path) -> list[int]:
    """The seqs still in the agent's queue, oldest first (read-only)."""
    db = sqlite3.connect(f"file:{queue_path}?mode=ro", uri=True, timeout=5)
    try:
        return [row[0] for row in db.execute("SELECT seq FROM fixes ORDER BY seq")]
    finally:
        db.close()


def lines_from(q: queue.Queue[str | None]) -> Iterator[str]:
    """A line source fed by a test: put lines, put None to end it."""
    while (line := q.get()) is not None:
        yield line


# -- the agent in-process, fed line by line by the test -------------------------------


class AgentHarness:
    """A :class:`DeviceAgent` running in a thread on lines the test feeds it."""

    def __init__(
        self,
        port: int,
        vid: str,
        password: str,
        queue_path: Path,
        *,
        interval_s: float = 1.0,
        drain_timeout_s: float = 60.0,
        **uplink: object,
    ) -> None:
        settings: dict[str, object] = {"backoff_initial_s": 0.05, "backoff_max_s": 0.5}
        settings.update(uplink)
        config = AgentConfig(
            uplink=UplinkConfig(vehicle_id=vid, password=password, port=port, **settings),  # type: ignore[arg-type]
            queue_path=queue_path,
            interval_s=interval_s,
            drain_timeout_s=drain_timeout_s,
        )
        self.agent = DeviceAgent(config)
        self.summary: RunSummary | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.summary = self.agent.run(lines_from(self._lines))

    def feed(self, lines: list[str]) -> None:
        for line in lines:
            self._lines.put(line)

    def fed_all(self) -> bool:
        return self._lines.empty()

    def finish(self, timeout: float = 60):
        """End the source; the agent drains its queue and stops."""
        self._lines.put(None)
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "agent did not stop"
        assert self.summary is not None
        return self.summary

    def kill(self) -> None:
        self.agent.stop()
        self._lines.put(None)
        self._thread.join(15)
