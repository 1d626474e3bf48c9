"""MQTT connections of the simulator, all driven from one thread (no paho threads).

Each :class:`Link` is one paho-mqtt client (MQTT 5) used with an external event loop:
``publish`` writes straight to the socket, :meth:`LinkPool.pump` reads PUBACKs and
flushes partial writes, ``loop_misc`` keeps the connection alive.  One thread can so
drive hundreds of device connections (per-device mode) or a few fast gateway
connections.  QoS 1 throughout; the pool applies back-pressure when too many
messages are unacknowledged.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import ssl
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from fleet.contract import STATUS_OFFLINE, STATUS_ONLINE, status_topic

__all__ = [
    "MAX_INFLIGHT_PER_LINK",
    "Credentials",
    "Link",
    "LinkError",
    "LinkPool",
    "PumpedPool",
    "Sender",
]

log = logging.getLogger(__name__)

KEEPALIVE_S: Final = 30
# Unacknowledged QoS 1 messages per connection: below the broker's receive maximum
# (max_inflight_messages 1000 in broker/mosquitto.conf).  paho's own in-flight window is
# switched off (0): with a window, every PUBACK scans all queued messages (O(n) per ack).
MAX_INFLIGHT_PER_LINK: Final = 900
MISC_EVERY_S: Final = 1.0


class LinkError(RuntimeError):
    """A connection could not be set up (unreachable broker, refused credentials)."""


class Sender(Protocol):
    """What the publisher needs of a connection (paho :class:`Link` or a gateway link)."""

    @property
    def connected(self) -> bool: ...

    @property
    def full(self) -> bool: ...

    def publish(self, topic: str, payload: bytes, fixes: int = 0, retain: bool = False) -> bool: ...


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str
    tls_ca: Path | None = None  # connect over TLS, verifying the broker against this CA


@dataclass(eq=False)
class Link:
    """One MQTT connection; ``device`` is set when it speaks for exactly one van."""

    client_id: str
    creds: Credentials
    device: str | None = None
    client: mqtt.Client = field(init=False)
    connected: bool = False
    refused: str | None = None
    published: int = 0
    acked: int = 0
    fixes_acked: int = 0
    _fix_count: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5,
        )
        c.username_pw_set(self.creds.username, self.creds.password)
        if self.creds.tls_ca is not None:
            c.tls_set(ca_certs=str(self.creds.tls_ca), cert_reqs=ssl.CERT_REQUIRED)
        c.max_inflight_messages_set(0)  # we bound in-flight ourselves (MAX_INFLIGHT_PER_LINK)
        c.max_queued_messages_set(0)
        if self.device is not None:
            c.will_set(status_topic(self.device), STATUS_OFFLINE, qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        self.client = c

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason: ReasonCode,
        props: Properties | None,
    ) -> None:
        if reason.is_failure:
            self.refused = str(reason)
            return
        self.connected = True
        self.refused = None
        if self.device is not None:
            client.publish(status_topic(self.device), STATUS_ONLINE, qos=1, retain=True)
            self.published += 1

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason: ReasonCode,
        props: Properties | None,
    ) -> None:
        self.connected = False

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason: ReasonCode,
        props: Properties | None,
    ) -> None:
        self.acked += 1
        self.fixes_acked += self._fix_count.pop(mid, 0)

    @property
    def outstanding(self) -> int:
        return self.published - self.acked

    @property
    def full(self) -> bool:
        return self.published - self.acked >= MAX_INFLIGHT_PER_LINK

    def publish(self, topic: str, payload: bytes, fixes: int = 0, retain: bool = False) -> bool:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return False
        self.published += 1
        if fixes:
            self._fix_count[info.mid] = fixes
        return True


class PumpedPool(ABC):
    """A set of connections driven by :meth:`pump` from the calling thread, with
    back-pressure on what the broker (or ingest) has not yet acknowledged."""

    max_outstanding: int

    @abstractmethod
    def pump(self, timeout: float) -> None: ...

    @abstractmethod
    def outstanding(self) -> int: ...

    def can_progress(self) -> bool:
        """Whether pumping can still settle what is outstanding."""
        return True

    def throttle(self) -> None:
        """Back-pressure: pump until what is outstanding is below the limit."""
        while self.outstanding() > self.max_outstanding:
            self.pump(0.01)

    def flush(self, timeout: float) -> bool:
        """Pump until nothing is outstanding; False on timeout or when nothing can move."""
        deadline = time.monotonic() + timeout
        while self.outstanding() > 0 and time.monotonic() < deadline:
            if not self.can_progress():
                return False
            self.pump(0.02)
        return self.outstanding() == 0


class LinkPool(PumpedPool):
    """Connects, pumps and closes a set of links from the calling thread."""

    def __init__(self, host: str, port: int, max_outstanding: int = 2000) -> None:
        self.host = host
        self.port = port
        self.max_outstanding = max_outstanding
        self.links: list[Link] = []
        self._selector = selectors.DefaultSelector()
        self._registered: dict[int, Link] = {}
        self._last_misc = time.monotonic()

    # -------------------------------------------------------------- connections

    def _register(self, link: Link) -> None:
        sock = link.client.socket()
        if sock is None:
            return
        fd = sock.fileno()
        if fd in self._registered:
            self._selector.unregister(fd)
        self._selector.register(fd, selectors.EVENT_READ, link)
        self._registered[fd] = link

    def _unregister(self, link: Link) -> None:
        for fd, known in list(self._registered.items()):
            if known is link:
                self._selector.unregister(fd)
                del self._registered[fd]

    def _open(self, link: Link) -> None:
        try:
            link.client.connect(self.host, self.port, keepalive=KEEPALIVE_S)
        except OSError as exc:
            raise LinkError(
                f"cannot reach the MQTT broker at {self.host}:{self.port}: {exc.strerror or exc}"
                " (is `fleet broker` running? check --host/--port or FLEET_MQTT_HOST/PORT)"
            ) from None
        self._register(link)

    def connect(self, links: Sequence[Link], timeout: float = 20.0, retries: int = 3) -> None:
        """Connect every link and wait for all CONNACKs; retry refusals a few times
        (a broker that was just sent SIGHUP may not have re-read its password file yet)."""
        pending = list(links)
        self.links.extend(links)
        for attempt in range(retries + 1):
            for link in pending:
                link.refused = None
                self._open(link)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                self.pump(0.05)
                if all(lk.connected or lk.refused for lk in pending):
                    break
            refused = [lk for lk in pending if lk.refused]
            silent = [lk for lk in pending if not lk.connected and not lk.refused]
            if silent:
                raise LinkError(
                    f"{len(silent)} of {len(pending)} connections got no CONNACK from "
                    f"{self.host}:{self.port} within {timeout:.0f} s"
                )
            if not refused:
                return
            if attempt == retries:
                names = ", ".join(lk.creds.username for lk in refused[:5])
                raise LinkError(
                    f"the broker refused {len(refused)} connection(s) ({refused[0].refused}); "
                    f"users: {names}. Check the credentials (--credentials, --data-dir, "
                    "FLEET_MQTT_USERNAME/PASSWORD)"
                )
            for lk in refused:
                self._unregister(lk)
            pending = refused
            time.sleep(0.5 * (attempt + 1))

    def drop(self, link: Link) -> None:
        """Cut the connection without DISCONNECT, as a power cut would: the broker
        publishes the link's last will."""
        sock = link.client.socket()
        self._unregister(link)
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        link.client.loop_read()  # paho sees EOF and closes its side
        link.connected = False

    def reopen(self, link: Link) -> None:
        """Reconnect a dropped link (CONNACK arrives through pump)."""
        try:
            link.client.reconnect()
        except OSError as exc:
            log.debug("reconnect of %s failed: %s", link.client_id, exc)
            return
        self._register(link)

    def close(self, timeout: float = 10.0) -> None:
        """Wait for outstanding PUBACKs (bounded), then DISCONNECT every link."""
        self.flush(timeout)
        for link in self.links:
            if link.connected:
                link.client.disconnect()
                link.client.loop_write()
            self._unregister(link)
        self.links = []

    # -------------------------------------------------------------- event loop

    def pump(self, timeout: float) -> None:
        """Flush pending writes, read what arrived (PUBACKs, CONNACKs), keep alive."""
        for link in self.links:
            if link.client.want_write():
                link.client.loop_write()
        events = self._selector.select(timeout) if self._registered else []
        if not self._registered and timeout > 0:
            time.sleep(timeout)
        for key, _ in events:
            link = key.data
            if link.client.loop_read() != mqtt.MQTT_ERR_SUCCESS and not link.connected:
                self._unregister(link)
        now = time.monotonic()
        if now - self._last_misc >= MISC_EVERY_S:
            self._last_misc = now
            for link in self.links:
                if link.client.socket() is not None:
                    link.client.loop_misc()

    def outstanding(self) -> int:
        """Unacknowledged messages on live links (a dropped link resends on reconnect)."""
        return sum(lk.outstanding for lk in self.links if lk.connected)

    def wait_for_room(self, link: Sender) -> None:
        """Pump until ``link`` may send another message (or it is disconnected)."""
        while link.full and link.connected:
            self.pump(0.01)

    def can_progress(self) -> bool:
        return any(lk.connected for lk in self.links)

    def totals(self) -> tuple[int, int]:
        """(messages acknowledged, fixes acknowledged) over all links."""
        return sum(lk.acked for lk in self.links), sum(lk.fixes_acked for lk in self.links)

    def connected(self) -> Iterable[Link]:
        return (lk for lk in self.links if lk.connected)
