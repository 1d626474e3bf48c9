"""Test helpers for the simulator: a recording subscriber and a `fleet sim` subprocess."""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from broker.runner import MosquittoBroker
from devtools.processes import ChildProcess, fleet_argv
from fleet.contract import Fix, TopicKind, Validation, decode_telemetry, parse_topic


class Recorder:
    """Subscribes (as svc-ingest) to all telemetry and status; decodes and keeps it."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.lock = threading.Lock()
        self.fixes: dict[str, list[Fix]] = defaultdict(list)
        self.batches: dict[str, int] = defaultdict(int)
        self.rejected: list[str] = []
        self.status: dict[str, list[tuple[str, bool]]] = defaultdict(list)
        self.lag_ms: list[int] = []  # receive time - fix ts, single fixes only
        self.arrivals: dict[tuple[str, int], list[float]] = defaultdict(list)  # monotonic
        self.ready = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"rec-{time.monotonic_ns()}",
            protocol=mqtt.MQTTv5,
        )
        self.client.username_pw_set("svc-ingest", broker.layout.service_credentials()["svc-ingest"])
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self.ready.set()
        self.client.on_connect = lambda c, *a: c.subscribe(
            [("fleet/+/telemetry", 1), ("fleet/+/status", 1)]
        )
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        if not self.ready.wait(10):
            raise TimeoutError("recorder could not subscribe")

    def _on_message(self, client: object, userdata: object, msg: mqtt.MQTTMessage) -> None:
        parsed = parse_topic(msg.topic)
        assert parsed is not None, msg.topic
        kind, vid = parsed
        with self.lock:
            if kind is TopicKind.STATUS:
                self.status[vid].append((msg.payload.decode(), bool(msg.retain)))
                return
            now = int(time.time() * 1000)
            res = decode_telemetry(kind, vid, msg.payload, now, Validation())
            self.rejected.extend(f"{vid}: {r.reason} {r.detail}" for r in res.rejections)
            self.fixes[vid].extend(res.fixes)
            arrived = time.monotonic()
            for f in res.fixes:
                self.arrivals[(vid, f.ts)].append(arrived)
            if msg.payload.startswith(b'{"fixes"'):
                self.batches[vid] += 1
            else:
                self.lag_ms.extend(now - f.ts for f in res.fixes)

    def vehicles_with_fixes(self) -> set[str]:
        with self.lock:
            return {v for v, f in self.fixes.items() if f}

    def unique_fixes(self) -> int:
        with self.lock:
            return sum(len({f.ts for f in fs}) for fs in self.fixes.values())

    def last_status(self, vid: str) -> str | None:
        with self.lock:
            return self.status[vid][-1][0] if self.status[vid] else None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class SimProcess(ChildProcess):
    """`fleet sim ...` as a subprocess, its output in a log file."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        env = {**os.environ, "FLEET_LOG_LEVEL": "INFO"}
        super().__init__("sim", fleet_argv("sim", *args), env, log_path)
        self.start()

    def log(self) -> str:
        return self.log_text()

    def alive(self) -> bool:
        return self.running()

    def kill9(self) -> None:
        self.kill()
