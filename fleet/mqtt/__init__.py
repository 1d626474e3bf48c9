"""The platform's own MQTT 5 clients, for the paths where paho-mqtt is too slow per message.

* :mod:`fleet.mqtt.codec`: the packets, encoded and decoded directly.
* :mod:`fleet.mqtt.handshake`: connect and wait for the CONNACK.
* :mod:`fleet.mqtt.subscriber`: :class:`~fleet.mqtt.subscriber.MqttSubscriber` (ingest,
  the API's live feed).
* :mod:`fleet.mqtt.publisher`: :class:`~fleet.mqtt.publisher.Publisher`, a QoS 1
  publisher (load generators, the simulator's gateway mode).

Devices and tests keep paho-mqtt: realistic clients, wills, and an independent
implementation to test these against.
"""

from fleet.mqtt.codec import MqttProtocolError
from fleet.mqtt.publisher import Publisher
from fleet.mqtt.subscriber import Message, MqttSubscriber, SubscriberOptions

__all__ = ["Message", "MqttProtocolError", "MqttSubscriber", "Publisher", "SubscriberOptions"]
