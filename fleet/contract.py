"""The public wire contract between devices and the platform (see docs/contract.md).

Topics::

    fleet/{vehicle_id}/telemetry   one fix, or {"fixes": [...]} (store-and-forward batch)
    fleet/{vehicle_id}/status      retained "online" / "offline" (the last will)
    fleet/{vehicle_id}/cmd         server → device commands
    fleet/{vehicle_id}/ack         server → device storage receipts (fleet.receipts)
    owntracks/{user}/{device}      OwnTracks ``_type: location`` (vehicle id = user)

A fix is identified by ``(vehicle_id, ts)``; the vehicle id always comes from the
topic.  :func:`decode_telemetry` turns raw bytes into valid fixes and per-item
rejections; it never raises on bad input.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass
from typing import Final

import msgspec

__all__ = [
    "MAX_BATCH_FIXES",
    "MAX_DEPTH",
    "MAX_PAYLOAD_BYTES",
    "MAX_SEQ",
    "ROUTE_RE",
    "STATUS_OFFLINE",
    "STATUS_ONLINE",
    "VEHICLE_ID_RE",
    "Command",
    "DecodeResult",
    "Decoded",
    "Fix",
    "Reason",
    "Rejection",
    "TopicKind",
    "Validation",
    "cmd_topic",
    "decode_message",
    "decode_status",
    "decode_telemetry",
    "encode_batch",
    "encode_fix",
    "parse_topic",
    "receipt_topic",
    "status_topic",
    "telemetry_topic",
]

MAX_PAYLOAD_BYTES: Final = 64 * 1024
MAX_BATCH_FIXES: Final = 1000
MAX_SEQ: Final = 2**63  # seq is a per-device counter in [0, 2^63): PostgreSQL's bigint
MAX_DEPTH: Final = 8  # JSON nesting: a batch needs 3 ({"fixes": [{...}]})
VEHICLE_ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Route codes (trayek) as printed on the vans: "B", "E1", "05-A"; nothing else reaches the
# database, the map or a report.
ROUTE_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,15}\Z")
MAX_SPEED_MS: Final = 100.0  # 360 km/h: anything above is a broken receiver
MAX_ACCURACY_M: Final = 100_000.0
STATUS_ONLINE: Final = "online"
STATUS_OFFLINE: Final = "offline"


class Reason(enum.StrEnum):
    """Why input was rejected; each is its own counter label and dead-letter reason."""

    PAYLOAD_TOO_LARGE = "payload_too_large"
    NOT_JSON = "not_json"
    NON_FINITE = "non_finite_number"
    WRONG_SHAPE = "wrong_shape"
    WRONG_TYPE = "wrong_type"
    BATCH_TOO_LARGE = "batch_too_large"
    EMPTY_BATCH = "empty_batch"
    VEHICLE_MISMATCH = "vehicle_mismatch"
    BAD_TOPIC = "bad_topic"
    LAT_OUT_OF_RANGE = "lat_out_of_range"
    LON_OUT_OF_RANGE = "lon_out_of_range"
    TS_IN_FUTURE = "ts_in_future"
    TS_TOO_OLD = "ts_too_old"
    SPEED_OUT_OF_RANGE = "speed_out_of_range"
    HEADING_OUT_OF_RANGE = "heading_out_of_range"
    ACCURACY_OUT_OF_RANGE = "accuracy_out_of_range"
    NOT_A_LOCATION = "not_a_location"
    SEQ_OUT_OF_RANGE = "seq_out_of_range"
    BAD_ROUTE = "bad_route"
    TOO_DEEP = "too_deep"
    BAD_STATUS = "bad_status"
    UNDECODABLE = "undecodable"  # the decoder itself failed: a bug, still only this message
    DATABASE_REFUSED = "database_refused"  # PostgreSQL refused the row (SQLSTATE 22/23)


class Fix(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """One GPS fix as devices send it. ``ts`` is UTC epoch milliseconds.

    Not tracked by the cyclic garbage collector (``gc=False``: it holds only scalars),
    like the other per-message structs of the ingest hot path."""

    ts: int
    lat: float
    lon: float
    speed: float | None = None  # m/s
    heading: float | None = None  # degrees from north, [0, 360)
    accuracy: float | None = None  # metres
    route: str | None = None  # route code (trayek)
    seq: int | None = None  # per-device counter


class _Telemetry(msgspec.Struct):
    """Everything a telemetry payload may carry: a fix, a batch, or (wrongly) both."""

    ts: int | None = None
    lat: float | None = None
    lon: float | None = None
    speed: float | None = None
    heading: float | None = None
    accuracy: float | None = None
    route: str | None = None
    seq: int | None = None
    fixes: list[Fix] | None = None
    vehicle_id: str | None = None
    vehicle: str | None = None


class _OwnTracks(msgspec.Struct):
    """The subset of OwnTracks' location message we use (``vel`` is km/h)."""

    _type: str = msgspec.field(name="_type", default="")
    tst: int | None = None
    lat: float | None = None
    lon: float | None = None
    vel: float | None = None
    cog: float | None = None
    acc: float | None = None
    tid: str | None = None


class Command(msgspec.Struct, omit_defaults=True):
    """A server → device command on ``fleet/{vehicle_id}/cmd``."""

    cmd: str  # "set_interval"
    interval_s: float | None = None
    id: str | None = None


class TopicKind(enum.Enum):
    TELEMETRY = "telemetry"
    STATUS = "status"
    CMD = "cmd"
    ACK = "ack"
    OWNTRACKS = "owntracks"


_TOPIC_KINDS: Final = {kind.value: kind for kind in TopicKind}


def telemetry_topic(vehicle_id: str) -> str:
    return f"fleet/{vehicle_id}/telemetry"


def status_topic(vehicle_id: str) -> str:
    return f"fleet/{vehicle_id}/status"


def cmd_topic(vehicle_id: str) -> str:
    return f"fleet/{vehicle_id}/cmd"


def receipt_topic(vehicle_id: str) -> str:
    return f"fleet/{vehicle_id}/ack"


def parse_topic(topic: str) -> tuple[TopicKind, str] | None:
    """Return the topic's kind and vehicle id, or None when it is not ours."""
    parts = topic.split("/")
    if len(parts) == 3 and parts[0] == "fleet" and VEHICLE_ID_RE.match(parts[1]):
        kind = _TOPIC_KINDS.get(parts[2])  # a dict, not TopicKind(...): once per message
        return None if kind is None else (kind, parts[1])
    if len(parts) == 3 and parts[0] == "owntracks" and VEHICLE_ID_RE.match(parts[1]):
        return TopicKind.OWNTRACKS, parts[1]
    return None


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: Reason
    detail: str
    fragment: bytes  # the offending payload or fix
    seq: int | None = None  # the refused fix's seq, when it had a usable one
    one_fix: bool = False  # one fix of the message refused (else the whole message)


class DecodeResult(msgspec.Struct, gc=False):
    fixes: list[Fix] = msgspec.field(default_factory=list)
    rejections: list[Rejection] = msgspec.field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Validation:
    """Plausibility bounds for fixes, relative to the receiving clock."""

    max_future_ms: int = 300_000
    max_age_ms: int = 7 * 24 * 3600 * 1000


_telemetry_decoder = msgspec.json.Decoder(_Telemetry)
_owntracks_decoder = msgspec.json.Decoder(_OwnTracks)
_encoder = msgspec.json.Encoder()
_NON_FINITE = re.compile(rb"\b(NaN|-?Infinity)\b")
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_OPENERS = frozenset(b"[{")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def encode_fix(fix: Fix) -> bytes:
    return _encoder.encode(fix)


def encode_batch(fixes: list[Fix]) -> bytes:
    return _encoder.encode({"fixes": fixes})


def _decode_error_reason(payload: bytes, err: msgspec.DecodeError) -> Reason:
    if not isinstance(err, msgspec.ValidationError):
        return Reason.NON_FINITE if _NON_FINITE.search(payload) else Reason.NOT_JSON
    msg = str(err)
    if msg.startswith("Number out of range"):
        return Reason.NON_FINITE  # 1e999 and friends decode to infinity
    # A wrong top-level container ("Expected `object`, got `array`") is a shape problem;
    # a field with the wrong JSON type is a type problem.
    if msg.startswith("Expected `object`") or "missing required field" in msg:
        return Reason.WRONG_SHAPE
    return Reason.WRONG_TYPE


def check_fix(fix: Fix, now_ms: int, rules: Validation) -> tuple[Reason, str] | None:
    """Range checks for one fix; None when it is plausible."""
    lat, lon = fix.lat, fix.lon
    if not (math.isfinite(lat) and math.isfinite(lon)):
        return Reason.NON_FINITE, "lat/lon must be finite numbers"
    if not -90.0 <= lat <= 90.0:
        return Reason.LAT_OUT_OF_RANGE, f"lat {lat} outside [-90, 90]"
    if not -180.0 <= lon <= 180.0:
        return Reason.LON_OUT_OF_RANGE, f"lon {lon} outside [-180, 180]"
    if fix.ts > now_ms + rules.max_future_ms:
        return Reason.TS_IN_FUTURE, f"ts {fix.ts} is {(fix.ts - now_ms) // 1000} s ahead"
    if fix.ts < now_ms - rules.max_age_ms:
        return Reason.TS_TOO_OLD, f"ts {fix.ts} is {(now_ms - fix.ts) // 1000} s old"
    speed, heading, accuracy = fix.speed, fix.heading, fix.accuracy
    if speed is not None and not (0.0 <= speed <= MAX_SPEED_MS):
        if not math.isfinite(speed):
            return Reason.NON_FINITE, "speed must be a finite number"
        return Reason.SPEED_OUT_OF_RANGE, f"speed {speed} m/s outside [0, {MAX_SPEED_MS}]"
    if heading is not None and not (0.0 <= heading <= 360.0):
        if not math.isfinite(heading):
            return Reason.NON_FINITE, "heading must be a finite number"
        return Reason.HEADING_OUT_OF_RANGE, f"heading {heading} outside [0, 360]"
    if accuracy is not None and not (0.0 <= accuracy <= MAX_ACCURACY_M):
        if not math.isfinite(accuracy):
            return Reason.NON_FINITE, "accuracy must be a finite number"
        return Reason.ACCURACY_OUT_OF_RANGE, f"accuracy {accuracy} m out of range"
    if fix.seq is not None and not 0 <= fix.seq < MAX_SEQ:
        return Reason.SEQ_OUT_OF_RANGE, f"seq {str(fix.seq)[:24]} outside [0, 2^63)"
    if fix.route is not None and not ROUTE_RE.match(fix.route):
        shown = fix.route[:20].encode("unicode_escape").decode("ascii")
        return Reason.BAD_ROUTE, (
            f"route '{shown}' is not a route code (1-16 of A-Z a-z 0-9 _ . -, "
            "starting with a letter or digit)"
        )
    return None


def _screen(fixes: list[Fix], now_ms: int, rules: Validation, out: DecodeResult) -> None:
    for fix in fixes:
        problem = check_fix(fix, now_ms, rules)
        if problem is None:
            out.fixes.append(fix)
        else:
            seq = fix.seq if fix.seq is not None and 0 <= fix.seq < MAX_SEQ else None
            out.rejections.append(
                Rejection(problem[0], problem[1], _encoder.encode(fix), seq, one_fix=True)
            )


def _nesting_depth(payload: bytes) -> int:
    """How deep the JSON containers nest (strings skipped); cheap for ordinary payloads."""
    if payload.count(b"[") + payload.count(b"{") <= MAX_DEPTH:
        return 0  # cannot nest deeper than it has containers
    brackets = _STRINGS.sub(b"", payload).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for b in brackets:
        if b in _OPENERS:
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def decode_telemetry(
    kind: TopicKind, vehicle_id: str, payload: bytes, now_ms: int, rules: Validation
) -> DecodeResult:
    """Decode and validate one telemetry message. Never raises on bad input."""
    out = DecodeResult()
    if len(payload) > MAX_PAYLOAD_BYTES:
        detail = f"{len(payload)} bytes > {MAX_PAYLOAD_BYTES}"
        out.rejections.append(Rejection(Reason.PAYLOAD_TOO_LARGE, detail, payload))
        return out
    depth = _nesting_depth(payload)
    if depth > MAX_DEPTH:
        detail = f"JSON nested {depth} levels deep > {MAX_DEPTH}"
        out.rejections.append(Rejection(Reason.TOO_DEEP, detail, payload))
        return out
    if kind is TopicKind.OWNTRACKS:
        return _decode_owntracks(payload, now_ms, rules, out)
    try:
        msg = _telemetry_decoder.decode(payload)
    except msgspec.DecodeError as err:
        reason = _decode_error_reason(payload, err)
        out.rejections.append(Rejection(reason, str(err), payload))
        return out
    named = msg.vehicle_id if msg.vehicle_id is not None else msg.vehicle
    if named is not None and named != vehicle_id:
        detail = f"payload names vehicle {named!r} but was published on {vehicle_id!r}'s topic"
        out.rejections.append(Rejection(Reason.VEHICLE_MISMATCH, detail, payload))
        return out
    if msg.fixes is not None:
        if msg.ts is not None or msg.lat is not None:
            detail = "a payload is either one fix or {'fixes': [...]}, not both"
            out.rejections.append(Rejection(Reason.WRONG_SHAPE, detail, payload))
        elif len(msg.fixes) > MAX_BATCH_FIXES:
            detail = f"{len(msg.fixes)} fixes > {MAX_BATCH_FIXES} per batch"
            out.rejections.append(Rejection(Reason.BATCH_TOO_LARGE, detail, payload))
        elif not msg.fixes:
            out.rejections.append(Rejection(Reason.EMPTY_BATCH, "empty fixes list", payload))
        else:
            _screen(msg.fixes, now_ms, rules, out)
        return out
    if msg.ts is None or msg.lat is None or msg.lon is None:
        detail = "a fix needs ts, lat and lon (or send {'fixes': [...]})"
        out.rejections.append(Rejection(Reason.WRONG_SHAPE, detail, payload))
        return out
    fix = Fix(
        ts=msg.ts,
        lat=msg.lat,
        lon=msg.lon,
        speed=msg.speed,
        heading=msg.heading,
        accuracy=msg.accuracy,
        route=msg.route,
        seq=msg.seq,
    )
    _screen([fix], now_ms, rules, out)
    return out


def _decode_owntracks(
    payload: bytes, now_ms: int, rules: Validation, out: DecodeResult
) -> DecodeResult:
    try:
        msg = _owntracks_decoder.decode(payload)
    except msgspec.DecodeError as err:
        out.rejections.append(Rejection(_decode_error_reason(payload, err), str(err), payload))
        return out
    if msg._type != "location":
        # OwnTracks also sends transition, waypoint, lwt...: not fixes, but not errors either
        detail = f"OwnTracks _type {msg._type!r} is not a location"
        out.rejections.append(Rejection(Reason.NOT_A_LOCATION, detail, payload))
        return out
    if msg.tst is None or msg.lat is None or msg.lon is None:
        detail = "OwnTracks location needs tst, lat and lon"
        out.rejections.append(Rejection(Reason.WRONG_SHAPE, detail, payload))
        return out
    fix = Fix(
        ts=msg.tst * 1000,
        lat=msg.lat,
        lon=msg.lon,
        speed=None if msg.vel is None else msg.vel / 3.6,
        heading=msg.cog,
        accuracy=msg.acc,
    )
    _screen([fix], now_ms, rules, out)
    return out


_status_decoder = msgspec.json.Decoder(str | dict[str, str])


def decode_status(payload: bytes) -> str | None:
    """``online`` / ``offline`` from a status payload, or None when it is neither.

    Accepted: the plain word (what the contract asks for), a JSON string ``"online"``, or
    ``{"status": "online"}``; case and surrounding white space do not matter.
    """
    if len(payload) > 256:
        return None
    text = payload.strip()
    if text[:1] in (b'"', b"{"):
        try:
            value = _status_decoder.decode(text)
        except msgspec.DecodeError:
            return None
        word = value.get("status", "") if isinstance(value, dict) else value
    else:
        word = text.decode("ascii", "replace")
    word = word.strip().lower()
    return word if word in (STATUS_ONLINE, STATUS_OFFLINE) else None


class Decoded(msgspec.Struct, gc=False):
    """One MQTT message, decoded: fixes or a status, and what was refused. (A C-level
    struct, as are the other per-message objects of the hot path: a dataclass costs
    several times the CPU to make.)"""

    kind: TopicKind | None  # None: not a contract topic
    vehicle_id: str
    fixes: list[Fix] = msgspec.field(default_factory=list)
    status: str | None = None
    rejections: list[Rejection] = msgspec.field(default_factory=list)


def decode_message(topic: str, payload: bytes, now_ms: int, rules: Validation) -> Decoded:
    """The one decoder for every consumer (ingest, the live feed). Never raises.

    Telemetry and OwnTracks topics give fixes, status topics a status; a ``cmd`` or
    ``ack`` topic (server → device) gives nothing. Anything refused is a rejection; an
    unexpected failure of the decoder itself refuses this message only (``undecodable``).
    """
    parsed = parse_topic(topic)
    if parsed is None:
        out = Decoded(None, "")
        out.rejections.append(
            Rejection(Reason.BAD_TOPIC, "topic is not part of the contract", payload)
        )
        return out
    kind, vehicle_id = parsed
    out = Decoded(kind, vehicle_id)
    try:
        if kind is TopicKind.STATUS:
            out.status = decode_status(payload)
            if out.status is None:
                out.rejections.append(
                    Rejection(Reason.BAD_STATUS, "status must be 'online' or 'offline'", payload)
                )
        elif kind in (TopicKind.TELEMETRY, TopicKind.OWNTRACKS):
            result = decode_telemetry(kind, vehicle_id, payload, now_ms, rules)
            out.fixes, out.rejections = result.fixes, result.rejections
    except Exception as exc:  # a decoder bug must cost this message, never the worker
        out.fixes, out.status = [], None
        out.rejections = [Rejection(Reason.UNDECODABLE, f"{type(exc).__name__}: {exc}", payload)]
    return out
