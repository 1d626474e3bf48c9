"""Lean MQTT 5 clients for the paths where paho-mqtt is too slow per message.

* :class:`MqttSubscriber` (with :class:`SubscriberOptions`): QoS 0/1 on one reader
  thread, whole batches per read, batched or manual PUBACKs, reconnects by itself.
* :class:`Publisher`: QoS 1 on one non-blocking socket, a window bounded by the broker's
  Receive Maximum, PUBACKs parsed in bulk, optional resend after a reconnect.

Errors: every failure is a :class:`MqttError` (refused connection, lost connection,
refused subscription, protocol violation, timeout; with the broker's reason code where
it sent one), except an unreachable broker, which is the socket's :class:`OSError`.
The package holds no application text: a caller adds its own advice (``hint``).

Logging goes to the ``mqtt5`` logger; the application configures handlers.
"""

import logging

from mqtt5._errors import (
    MqttConnectionLostError,
    MqttConnectRefusedError,
    MqttError,
    MqttProtocolError,
    MqttSubscribeRefusedError,
    MqttTimeoutError,
)
from mqtt5._publisher import Publisher
from mqtt5._subscriber import Hint, Message, MqttSubscriber, SubscriberOptions

__all__ = [
    "Hint",
    "Message",
    "MqttConnectRefusedError",
    "MqttConnectionLostError",
    "MqttError",
    "MqttProtocolError",
    "MqttSubscribeRefusedError",
    "MqttSubscriber",
    "MqttTimeoutError",
    "Publisher",
    "SubscriberOptions",
]

logging.getLogger("mqtt5").addHandler(logging.NullHandler())
