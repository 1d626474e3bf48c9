"""The MQTT 5 codec ingest uses on its hot path, against hand-built packets."""

from __future__ import annotations

import struct

import pytest

from mqtt5 import MqttProtocolError
from mqtt5 import _codec as mqtt5
from mqtt5._errors import reason_text


def test_varint_round_trip_at_boundaries() -> None:
    for n in (0, 1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, 268_435_455):
        enc = mqtt5.varint(n)
        assert len(enc) == (1 if n < 128 else 2 if n < 16_384 else 3 if n < 2_097_152 else 4)
        assert mqtt5._read_varint(enc, 0) == (n, len(enc))


def _publish(topic: str, payload: bytes, qos: int, pid: int, props: bytes = b"", dup: bool = False):
    var = struct.pack("!H", len(topic)) + topic.encode()
    if qos:
        var += struct.pack("!H", pid)
    var += mqtt5.varint(len(props)) + props
    first = 0x30 | (qos << 1) | (0x08 if dup else 0)
    return bytes([first]) + mqtt5.varint(len(var) + len(payload)) + var + payload


def test_publish_with_properties_and_dup_flag() -> None:
    # message expiry (0x02, 4 bytes) + content type (0x03, string) + a user property
    props = b"\x02\x00\x00\x00\x3c" + b"\x03" + mqtt5.utf8("application/json")
    props += b"\x26" + mqtt5.utf8("k") + mqtt5.utf8("v")
    raw = _publish("fleet/PP-1/telemetry", b'{"ts":1}', 1, 4242, props, dup=True)
    packets, used = mqtt5.split_packets(bytearray(raw))
    assert used == len(raw) and len(packets) == 1
    first, body = packets[0]
    p = mqtt5.decode_publish(first, body)
    assert (p.topic, p.payload, p.qos, p.packet_id, p.dup) == (
        "fleet/PP-1/telemetry",
        b'{"ts":1}',
        1,
        4242,
        True,
    )


def test_split_packets_waits_for_incomplete_data() -> None:
    a = _publish("t/a", b"x" * 300, 1, 1)  # two-byte remaining length
    b = _publish("t/b", b"y", 0, 0)
    stream = bytearray(a + b)
    for cut in range(len(stream) + 1):
        packets, used = mqtt5.split_packets(stream[:cut])
        complete = [x for x, end in ((a, len(a)), (b, len(a) + len(b))) if cut >= end]
        assert len(packets) == len(complete)
        assert used == sum(len(x) for x in complete)
    qos0 = mqtt5.decode_publish(*mqtt5.split_packets(bytearray(b))[0][0])
    assert qos0.qos == 0 and qos0.packet_id == 0 and qos0.payload == b"y"


def test_connack_reason_and_receive_maximum() -> None:
    props = b"\x21\x03\xe8" + b"\x12" + mqtt5.utf8("assigned-id")
    body = bytes([1, 0]) + mqtt5.varint(len(props)) + props
    ack = mqtt5.decode_connack(body)
    assert ack.session_present and ack.reason_code == 0 and ack.receive_maximum == 1000
    refused = mqtt5.decode_connack(bytes([0, 0x86, 0]))
    assert refused.reason_code == 0x86
    assert "bad user name or password" in reason_text(0x86)


def test_puback_and_connect_packets_are_well_formed() -> None:
    assert mqtt5.puback_packet(0x1234) == b"\x40\x02\x12\x34"
    pkt = mqtt5.connect_packet(
        "cid", "user", "pw", 30, clean_start=False, session_expiry_s=60, receive_maximum=500
    )
    packets, used = mqtt5.split_packets(bytearray(pkt))
    first, body = packets[0]
    assert first == 0x10 and used == len(pkt)
    assert body[:7] == b"\x00\x04MQTT\x05"
    assert body[7] == 0xC0  # username + password, clean start off


def test_malformed_length_is_an_error() -> None:
    with pytest.raises(MqttProtocolError):
        mqtt5.split_packets(bytearray(b"\x30\xff\xff\xff\xff\x01"))
