"""Gateway mode transport: the lean MQTT 5 QoS 1 publisher of :mod:`fleet.mqtt.publisher`.

paho-mqtt spends ~50-100 µs of Python per QoS 1 message (message objects, a condition
variable per message, reason-code decoding of every PUBACK), which caps one process
at ~5,000 messages/s — too slow to load-test ingest.  A gateway only ever *publishes*,
so it uses :class:`fleet.mqtt.publisher.Publisher`: a non-blocking socket, PUBLISH
packets appended to one buffer and written with few ``send`` calls, PUBACKs parsed in
bulk.  Every fix is still its own PUBLISH and counted only when its success PUBACK
arrives.  :class:`GatewayPool` drives many such connections with one selector and
reconnects lost ones.  The per-device mode keeps paho (:mod:`tracker_sim.links`):
realistic clients, LWT.
"""

from __future__ import annotations

import logging
import selectors
import threading
import time
from collections.abc import Sequence
from typing import Final

from fleet.mqtt.codec import MqttProtocolError
from fleet.mqtt.publisher import Publisher
from tracker_sim.links import MAX_INFLIGHT_PER_LINK, Credentials, LinkError, Sender

__all__ = ["GatewayLink", "GatewayPool"]

log = logging.getLogger(__name__)

KEEPALIVE_S: Final = 60
RECONNECT_EVERY_S: Final = 2.0


class GatewayLink(Publisher):
    """One MQTT 5 connection that publishes QoS 1 messages for many vans."""

    def __init__(self, client_id: str, creds: Credentials) -> None:
        super().__init__(
            client_id,
            creds.username,
            creds.password,
            keepalive_s=KEEPALIVE_S,
            max_inflight=MAX_INFLIGHT_PER_LINK,
        )
        self.creds = creds
        self.device: str | None = None

    @property
    def fixes_acked(self) -> int:
        return self.weight_acked

    def connect(self, host: str, port: int, timeout: float = 15.0) -> None:
        try:
            super().connect(host, port, timeout)
        except MqttProtocolError as exc:
            raise LinkError(
                f"the broker refused {self.creds.username} ({exc}); check the gateway "
                "credentials (--password, FLEET_MQTT_PASSWORD or --data-dir)"
            ) from None
        except OSError as exc:
            raise LinkError(
                f"cannot reach the MQTT broker at {host}:{port}: {exc.strerror or exc}"
                " (is `fleet broker` running? check --host/--port or FLEET_MQTT_HOST/PORT)"
            ) from None

    def publish(self, topic: str, payload: bytes, fixes: int = 0, retain: bool = False) -> bool:
        """Queue one QoS 1 PUBLISH carrying ``fixes`` fixes; written by the pool."""
        return super().publish(topic, payload, fixes, retain)


class GatewayPool:
    """The same driving interface as :class:`tracker_sim.links.LinkPool`."""

    def __init__(
        self,
        host: str,
        port: int,
        max_outstanding: int = 5000,
        stopping: threading.Event | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.max_outstanding = max_outstanding
        self.stopping = stopping or threading.Event()
        self.links: list[GatewayLink] = []
        self._selector = selectors.DefaultSelector()
        self._registered = 0

    def connect(self, links: Sequence[GatewayLink], timeout: float = 20.0) -> None:
        for link in links:
            link.connect(self.host, self.port, timeout)
            assert link.sock is not None
            self._selector.register(link.sock, selectors.EVENT_READ, link)
            self._registered += 1
            self.links.append(link)

    def pump(self, timeout: float) -> None:
        for link in self.links:
            link.write()
        for key, _ in self._selector.select(timeout) if self._registered else ():
            link = key.data
            link.read()
            if not link.connected:
                self._selector.unregister(key.fileobj)
                self._registered -= 1
                log.warning(
                    "gateway connection %s lost; reconnecting (%d messages to resend)",
                    link.client_id,
                    link.outstanding,
                )
        if not self._registered and timeout > 0:
            time.sleep(timeout)
        now = time.monotonic()
        for link in self.links:
            if link.connected:
                link.keepalive()
            elif link.lost_at is not None and now - link.lost_at >= RECONNECT_EVERY_S:
                try:
                    link.resume(self.host, self.port, timeout=5.0)
                except LinkError as exc:
                    link.lost_at = now
                    log.debug("reconnect of %s failed: %s", link.client_id, exc)
                    continue
                assert link.sock is not None
                self._selector.register(link.sock, selectors.EVENT_READ, link)
                self._registered += 1
                log.warning("gateway connection %s restored", link.client_id)

    def wait_for_room(self, link: Sender) -> None:
        """Back-pressure: wait while ``link`` has too much in flight or is reconnecting
        (unless the simulator is stopping)."""
        while (link.full or not link.connected) and not self.stopping.is_set():
            self.pump(0.01)

    def outstanding(self) -> int:
        """Unacknowledged messages, including those waiting for a reconnect."""
        return sum(lk.outstanding for lk in self.links)

    def throttle(self) -> None:
        while self.outstanding() > self.max_outstanding:
            self.pump(0.01)

    def flush(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.outstanding() > 0 and time.monotonic() < deadline:
            self.pump(0.02)
        return self.outstanding() == 0

    def close(self, timeout: float = 10.0) -> None:
        self.flush(timeout)
        for link in self.links:
            if link.sock is not None and link.connected:
                self._selector.unregister(link.sock)
            link.close()
        self.links = []

    def totals(self) -> tuple[int, int]:
        return sum(lk.acked for lk in self.links), sum(lk.fixes_acked for lk in self.links)
