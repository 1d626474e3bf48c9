"""The uplink: one MQTT connection at a time, uploading the queue oldest first.

The uploader thread owns the MQTT client; it shares the queue with the GPS side. Per
connection it

1. connects as the vehicle (username = vehicle id) with a retained ``offline`` last will
   on ``fleet/<id>/status``, publishes a retained ``online`` there, and subscribes to
   ``fleet/<id>/cmd``;
2. sends the queue oldest first as ``{"fixes": [...]}`` batches (at most
   ``MAX_BATCH_FIXES`` fixes and ``MAX_PAYLOAD_BYTES`` bytes each) with QoS 1, keeping at
   most ``window`` batches unacknowledged;
3. deletes a batch's fixes from the queue only when its PUBACK arrives.

When the connection drops, unacknowledged batches stay in the queue and the next
connection starts again from the oldest fix; a batch that was delivered but whose
PUBACK was lost is therefore sent twice, which the contract makes harmless (a fix is
identified by vehicle and ``ts``). Every connection uses a fresh client, so the MQTT
library never re-sends on its own behind the queue's back. Reconnects wait an
exponential backoff with jitter (:mod:`firmware_stub.backoff`).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from firmware_stub.backoff import Backoff
from firmware_stub.fix_queue import FixQueue, QueueError
from fleet.contract import (
    MAX_BATCH_FIXES,
    MAX_PAYLOAD_BYTES,
    STATUS_OFFLINE,
    STATUS_ONLINE,
    Command,
    Fix,
    cmd_topic,
    encode_batch,
    encode_fix,
    status_topic,
    telemetry_topic,
)

__all__ = ["UplinkConfig", "UplinkStats", "Uploader"]

log = logging.getLogger(__name__)

BATCH_OVERHEAD: Final = len(b'{"fixes":[]}')
LOOP_TICK_S: Final = 0.05
STATUS_LOG_EVERY_S: Final = 60.0


@dataclass(frozen=True, slots=True)
class UplinkConfig:
    vehicle_id: str
    password: str | None = None
    host: str = "127.0.0.1"
    port: int = 1883
    keepalive_s: int = 30
    batch_max_fixes: int = MAX_BATCH_FIXES
    batch_max_bytes: int = MAX_PAYLOAD_BYTES
    window: int = 4  # batches published and not yet acknowledged
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    connect_timeout_s: float = 10.0
    upload_limit_bps: int = 0  # payload bytes per second on a metered link; 0 = unlimited
    session_expiry_s: int = 86_400  # commands sent while offline wait this long

    def __post_init__(self) -> None:
        if not 1 <= self.batch_max_fixes <= MAX_BATCH_FIXES:
            raise ValueError(f"batch_max_fixes must be in 1..{MAX_BATCH_FIXES}")
        if not 512 <= self.batch_max_bytes <= MAX_PAYLOAD_BYTES:
            raise ValueError(f"batch_max_bytes must be in 512..{MAX_PAYLOAD_BYTES}")
        if self.window < 1:
            raise ValueError("window must be at least 1")


@dataclass(slots=True)
class UplinkStats:
    connects: int = 0
    connect_failures: int = 0
    batches_sent: int = 0
    fixes_acked: int = 0
    commands: int = 0
    bad_commands: int = 0
    last_error: str = ""
    since_connected: float | None = None  # monotonic time of the current connection


@dataclass(frozen=True, slots=True)
class _Batch:
    first_seq: int
    last_seq: int
    count: int


def build_batch(fixes: list[Fix], max_bytes: int) -> tuple[list[Fix], bytes]:
    """The longest prefix of ``fixes`` whose ``{"fixes": [...]}`` fits in ``max_bytes``."""
    size, take = BATCH_OVERHEAD, 0
    for fix in fixes:
        grown = size + len(encode_fix(fix)) + (1 if take else 0)
        if grown > max_bytes:
            break
        size, take = grown, take + 1
    if take == 0:
        raise ValueError(f"a single fix does not fit in {max_bytes} bytes")
    payload = encode_batch(fixes[:take])
    assert len(payload) == size, (len(payload), size)
    return fixes[:take], payload


class Uploader(threading.Thread):
    """Background thread: connect, upload the queue, obey commands, reconnect."""

    def __init__(
        self,
        config: UplinkConfig,
        queue: FixQueue,
        on_command: Callable[[Command], str | None],
        *,
        rng: random.Random | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(name=f"uplink-{config.vehicle_id}", daemon=True)
        self.config = config
        self.stats = UplinkStats()
        self.connected = threading.Event()
        self._queue = queue
        self._on_command = on_command
        self._backoff = Backoff(config.backoff_initial_s, config.backoff_max_s, rng)
        self._monotonic = monotonic
        self._stop_requested = threading.Event()
        self._inflight: dict[int, _Batch] = {}
        self._cursor = 0  # highest seq handed to the current connection
        self._next_send_at = 0.0
        self._session_state = "idle"

    # -- control, from other threads -------------------------------------------------

    def stop(self) -> None:
        """Finish: publish ``offline`` if connected, disconnect, end the thread."""
        self._stop_requested.set()

    @property
    def inflight_batches(self) -> int:
        return len(self._inflight)

    # -- thread body -----------------------------------------------------------------

    def run(self) -> None:
        while not self._stop_requested.is_set():
            try:
                self._session()
            except QueueError as exc:  # e.g. a full disk: retry, the GPS side reports it
                self._fail(str(exc))
            except Exception:  # a bug must not end uploads for good: log it, back off, retry
                log.exception("uplink session failed")
                self._fail("uplink session failed")
            if self._stop_requested.is_set():
                break
            delay = self._backoff.next_delay()
            log.info(
                "reconnecting after backoff",
                extra={"delay_s": round(delay, 2), "attempt": self._backoff.failures},
            )
            self._stop_requested.wait(delay)

    def _new_client(self) -> mqtt.Client:
        cfg = self.config
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=cfg.vehicle_id,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        client.username_pw_set(cfg.vehicle_id, cfg.password)
        client.will_set(status_topic(cfg.vehicle_id), STATUS_OFFLINE, qos=1, retain=True)
        client.max_inflight_messages_set(cfg.window + 4)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _session(self) -> None:
        cfg = self.config
        client = self._new_client()
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = cfg.session_expiry_s
        self._session_state = "connecting"
        self._inflight.clear()
        self._cursor = 0
        try:
            client.connect(cfg.host, cfg.port, cfg.keepalive_s, clean_start=False, properties=props)
        except OSError as exc:
            self._fail(f"broker {cfg.host}:{cfg.port} unreachable: {exc}")
            return
        deadline = self._monotonic() + cfg.connect_timeout_s
        while self._session_state == "connecting" and not self._stop_requested.is_set():
            if client.loop(LOOP_TICK_S) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
            if self._monotonic() > deadline:
                self._fail(f"no CONNACK from {cfg.host}:{cfg.port} in {cfg.connect_timeout_s} s")
                break
        if self._session_state != "connected":
            if self._session_state == "connecting" and not self._stop_requested.is_set():
                self._fail("connection closed before CONNACK")
            client.disconnect()
            return
        try:
            self._connected_loop(client)
        finally:
            self.connected.clear()
            self.stats.since_connected = None
            self._inflight.clear()

    def _connected_loop(self, client: mqtt.Client) -> None:
        vid = self.config.vehicle_id
        self._backoff.reset()
        self.stats.connects += 1
        self.stats.since_connected = self._monotonic()
        client.publish(status_topic(vid), STATUS_ONLINE, qos=1, retain=True)
        client.subscribe(cmd_topic(vid), qos=1)
        self.connected.set()
        log.info("connected", extra={"broker": f"{self.config.host}:{self.config.port}"})
        next_report = self._monotonic() + STATUS_LOG_EVERY_S
        while self._session_state == "connected":
            if self._stop_requested.is_set():
                self._goodbye(client)
                return
            self._fill_window(client)
            if self._monotonic() >= next_report:
                next_report += STATUS_LOG_EVERY_S
                log.info(
                    "uplink status",
                    extra={
                        "queued": self._queue.depth(),
                        "fixes_acked": self.stats.fixes_acked,
                        "batches_sent": self.stats.batches_sent,
                        "connects": self.stats.connects,
                    },
                )
            if client.loop(LOOP_TICK_S) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
        if self._session_state == "connected":  # loop() failed without on_disconnect
            self._fail("connection lost")
        client.disconnect()

    def _goodbye(self, client: mqtt.Client) -> None:
        """Graceful stop: say ``offline`` ourselves (a clean disconnect sends no will)."""
        info = client.publish(status_topic(self.config.vehicle_id), STATUS_OFFLINE, 1, True)
        self._session_state = "closing"
        deadline = self._monotonic() + 2.0
        while not info.is_published() and self._monotonic() < deadline:
            if client.loop(LOOP_TICK_S) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
        client.disconnect()
        client.loop(LOOP_TICK_S)
        log.info("disconnected on request")

    def _fail(self, message: str) -> None:
        self._session_state = "failed"
        self.stats.connect_failures += 1
        self.stats.last_error = message
        log.warning("%s", message)

    # -- upload ------------------------------------------------------------------------

    def _fill_window(self, client: mqtt.Client) -> None:
        cfg = self.config
        while len(self._inflight) < cfg.window:
            if cfg.upload_limit_bps and self._monotonic() < self._next_send_at:
                return
            fixes = self._queue.oldest(self._cursor, cfg.batch_max_fixes)
            if not fixes:
                return
            batch, payload = build_batch(fixes, cfg.batch_max_bytes)
            info = client.publish(telemetry_topic(cfg.vehicle_id), payload, qos=1)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return  # connection just dropped; the batch stays queued
            first, last = batch[0].seq, batch[-1].seq
            assert first is not None and last is not None
            self._inflight[info.mid] = _Batch(first, last, len(batch))
            self._cursor = last
            self.stats.batches_sent += 1
            if cfg.upload_limit_bps:
                start = max(self._monotonic(), self._next_send_at)
                self._next_send_at = start + len(payload) / cfg.upload_limit_bps

    # -- paho callbacks (run in this thread, inside client.loop) ----------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            hint = ""
            if reason.value in (0x86, 0x87):  # bad user name or password / not authorized
                hint = (
                    f"; the MQTT username must be the vehicle id ({self.config.vehicle_id!r})"
                    " with the password from `fleet device add`"
                )
            self._fail(f"broker refused the connection: {reason}{hint}")
            return
        self._session_state = "connected"

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if self._session_state == "connected":
            self._fail(f"disconnected: {reason}")
            pending = sum(b.count for b in self._inflight.values())
            if pending:
                log.info("unacknowledged fixes stay queued", extra={"fixes": pending})

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        batch = self._inflight.pop(mid, None)
        if batch is None:
            return  # the status message
        if reason.is_failure:
            # Keep the fixes; start over from the oldest after a backoff.
            self._fail(f"broker rejected a batch of {batch.count} fixes: {reason}")
            client.disconnect()
            return
        self._queue.delete_range(batch.first_seq, batch.last_seq)
        self.stats.fixes_acked += batch.count

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            command = msgspec.json.decode(msg.payload, type=Command)
        except msgspec.DecodeError as exc:
            self.stats.bad_commands += 1
            log.warning("ignored a malformed command: %s", exc, extra={"topic": msg.topic})
            return
        problem = self._on_command(command)
        if problem is None:
            self.stats.commands += 1
            log.info("command applied", extra={"cmd": command.cmd, "id": command.id})
        else:
            self.stats.bad_commands += 1
            log.warning("command refused: %s", problem, extra={"cmd": command.cmd})
