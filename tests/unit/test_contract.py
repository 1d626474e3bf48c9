"""The wire contract's decoder: every bad input gets its own reason, good input passes."""

from __future__ import annotations

import json
import time

import pytest

from fleet.contract import (
    MAX_BATCH_FIXES,
    Fix,
    Reason,
    TopicKind,
    Validation,
    decode_telemetry,
    encode_batch,
    encode_fix,
    parse_topic,
)

NOW = int(time.time() * 1000)
RULES = Validation()


def decode(payload: bytes, kind: TopicKind = TopicKind.TELEMETRY, vid: str = "PP-001"):
    return decode_telemetry(kind, vid, payload, NOW, RULES)


def reasons(payload: bytes, **kw) -> list[str]:
    return [r.reason.value for r in decode(payload, **kw).rejections]


def test_single_fix_round_trip() -> None:
    fix = Fix(ts=NOW, lat=-5.14, lon=119.42, speed=8.5, heading=90.0, route="07", seq=3)
    res = decode(encode_fix(fix))
    assert res.fixes == [fix] and res.rejections == []


def test_batch_keeps_good_fixes_and_rejects_bad_ones_individually() -> None:
    good = [Fix(ts=NOW - i * 1000, lat=-5.1, lon=119.4) for i in range(3)]
    bad = Fix(ts=NOW, lat=91.0, lon=119.4)
    res = decode(encode_batch([*good, bad]))
    assert res.fixes == good
    assert [r.reason for r in res.rejections] == [Reason.LAT_OUT_OF_RANGE]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\x00\xffnot json at all", Reason.NOT_JSON),
        (b"[1, 2, 3]", Reason.WRONG_SHAPE),
        (b'{"lat": 1, "lon": 2}', Reason.WRONG_SHAPE),
        (b'{"ts": "yesterday", "lat": 1, "lon": 2}', Reason.WRONG_TYPE),
        (b'{"ts": 1, "lat": NaN, "lon": 2}', Reason.NON_FINITE),
        (b'{"ts": 1, "lat": Infinity, "lon": 2}', Reason.NON_FINITE),
        (f'{{"ts": {NOW}, "lat": 1e999, "lon": 2}}'.encode(), Reason.NON_FINITE),
        (f'{{"ts": {NOW}, "lat": 91, "lon": 2}}'.encode(), Reason.LAT_OUT_OF_RANGE),
        (f'{{"ts": {NOW}, "lat": 1, "lon": -181}}'.encode(), Reason.LON_OUT_OF_RANGE),
        (f'{{"ts": {NOW + 365 * 86400_000}, "lat": 1, "lon": 2}}'.encode(), Reason.TS_IN_FUTURE),
        (f'{{"ts": {NOW - 30 * 86400_000}, "lat": 1, "lon": 2}}'.encode(), Reason.TS_TOO_OLD),
        (f'{{"ts": {NOW}, "lat": 1, "lon": 2, "speed": 500}}'.encode(), Reason.SPEED_OUT_OF_RANGE),
        (
            f'{{"ts": {NOW}, "lat": 1, "lon": 2, "heading": 400}}'.encode(),
            Reason.HEADING_OUT_OF_RANGE,
        ),
        (b'{"fixes": []}', Reason.EMPTY_BATCH),
        (b"x" * (64 * 1024 + 1), Reason.PAYLOAD_TOO_LARGE),
        (
            f'{{"vehicle_id": "PP-999", "ts": {NOW}, "lat": 1, "lon": 2}}'.encode(),
            Reason.VEHICLE_MISMATCH,
        ),
    ],
    ids=lambda value: value.value if isinstance(value, Reason) else "payload",  # no clock in ids
)
def test_each_bad_input_has_its_own_reason(payload: bytes, reason: Reason) -> None:
    assert reasons(payload) == [reason.value]


def test_oversized_batch() -> None:
    fixes = [{"ts": NOW, "lat": 0, "lon": 0}] * (MAX_BATCH_FIXES + 1)
    payload = json.dumps({"fixes": fixes}, separators=(",", ":")).encode()
    assert len(payload) < 64 * 1024
    assert reasons(payload) == [Reason.BATCH_TOO_LARGE.value]


def test_owntracks_location_converts_kmh() -> None:
    payload = json.dumps(
        {
            "_type": "location",
            "tst": NOW // 1000,
            "lat": -5.13,
            "lon": 119.41,
            "vel": 36,
            "cog": 45,
            "acc": 8,
        }
    ).encode()
    res = decode(payload, kind=TopicKind.OWNTRACKS, vid="phone1")
    assert len(res.fixes) == 1
    fix = res.fixes[0]
    assert fix.ts == (NOW // 1000) * 1000 and fix.speed == pytest.approx(10.0) and fix.heading == 45


def test_owntracks_non_location_is_not_a_fix() -> None:
    assert reasons(b'{"_type": "transition"}', kind=TopicKind.OWNTRACKS) == [
        Reason.NOT_A_LOCATION.value
    ]


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("fleet/PP-001/telemetry", (TopicKind.TELEMETRY, "PP-001")),
        ("fleet/PP-001/status", (TopicKind.STATUS, "PP-001")),
        ("owntracks/budi/phone", (TopicKind.OWNTRACKS, "budi")),
        ("fleet/PP-001/other", None),
        ("fleet/../telemetry", None),
        ("elsewhere/x/telemetry", None),
    ],
)
def test_parse_topic(topic: str, expected) -> None:
    assert parse_topic(topic) == expected
