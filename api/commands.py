"""Server → device commands over MQTT, from the API's event loop (aiomqtt).

The live feed (:mod:`api.live.mqtt_feed`) reads thousands of messages a second on a
thread of its own; commands are a few a minute and belong to request handlers, so they
go through an asyncio client of their own: one persistent connection as ``svc-api``,
reconnected with backoff in a background task. :meth:`CommandSender.send` returns only
when the broker has acknowledged the QoS 1 PUBLISH (the command is then queued in the
device's persistent session until it is online), or raises :class:`BrokerUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

import aiomqtt

__all__ = ["BrokerUnavailableError", "CommandSender"]

log = logging.getLogger(__name__)

RECONNECT_MAX_S = 10.0


class BrokerUnavailableError(RuntimeError):
    """No connection to the broker, or it did not acknowledge in time."""


class CommandSender:
    def __init__(
        self,
        host: str,
        port: int,
        username: str | None,
        password: str | None,
        *,
        client_id: str | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        self.host, self.port = host, port
        self.username, self.password = username, password
        self.client_id = client_id or f"fleet-api-cmd-{uuid.uuid4().hex[:8]}"
        self.timeout_s = timeout_s
        self.connected = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mqtt-commands")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        delay = 0.5
        while True:
            try:
                async with aiomqtt.Client(
                    self.host,
                    self.port,
                    username=self.username,
                    password=self.password,
                    identifier=self.client_id,
                    protocol=aiomqtt.ProtocolVersion.V5,
                    keepalive=30,
                    timeout=self.timeout_s,
                ) as client:
                    self._client, delay = client, 0.5
                    self.connected.set()
                    log.info("command channel connected", extra={"broker": self.host})
                    async for _ in client.messages:  # nothing subscribed: ends on disconnect
                        pass
            except aiomqtt.MqttError as exc:
                log.warning(
                    "command channel to the broker lost (%s); retrying in %.1f s", exc, delay
                )
            finally:
                self._client = None
                self.connected.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)

    async def send(self, topic: str, payload: bytes) -> None:
        """Publish with QoS 1 and wait for the broker's PUBACK."""
        client = self._client
        if client is None:
            raise BrokerUnavailableError("the API is not connected to the MQTT broker")
        try:
            await asyncio.wait_for(client.publish(topic, payload, qos=1), self.timeout_s)
        except (aiomqtt.MqttError, TimeoutError) as exc:
            raise BrokerUnavailableError(f"the broker did not take the command: {exc}") from None
