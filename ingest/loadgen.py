"""A paced QoS 1 load generator for the ingest benchmark (one process per call).

Publishes as the gateway service user for ``devices`` vans, ``rate`` fixes/s in total,
one fix per message (or ``per_message`` fixes in a ``{"fixes": [...]}`` batch), with
``ts`` = the publish time in ms, so the worker's lag histogram measures publish → commit.

The generator publishes with :class:`fleet.mqtt.publisher.Publisher` (MQTT 5 QoS 1,
honouring the broker's Receive Maximum) because a general-purpose client spends tens
of microseconds per message in Python, and the generator must never be what limits
the measurement.  Only a success PUBACK counts a message as acknowledged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from fleet.contract import Fix, encode_batch, encode_fix, telemetry_topic
from fleet.mqtt.publisher import Publisher

__all__ = ["LoadResult", "LoadSpec", "publish_load"]


@dataclass(frozen=True)
class LoadSpec:
    host: str
    port: int
    username: str
    password: str
    device_ids: list[str]
    rate: float  # fixes/s for this process
    duration_s: float
    per_message: int = 1
    as_fast_as_possible: bool = False
    client_id: str = "bench-load"


@dataclass(frozen=True)
class LoadResult:
    fixes_published: int
    fixes_acked: int
    messages: int
    seconds: float


def publish_load(spec: LoadSpec) -> LoadResult:
    pub = Publisher(spec.client_id, spec.username, spec.password)
    pub.connect(spec.host, spec.port)
    topics = [telemetry_topic(d) for d in spec.device_ids]
    last_ts = [0] * len(topics)
    total = int(spec.rate * spec.duration_s)
    per = spec.per_message
    sent = messages = dev = 0
    n_dev = len(topics)
    t0 = time.monotonic()
    while sent < total:
        if spec.as_fast_as_possible:
            due = min(total, sent + 2000 * per)
        else:
            due = min(total, int((time.monotonic() - t0) * spec.rate) + per)
        chunk: list[tuple[str, bytes]] = []
        now_ms = int(time.time() * 1000)
        while sent < due:
            ts = max(now_ms, last_ts[dev] + 1)
            lat = -5.14 - dev * 1e-5
            if per == 1:
                payload = encode_fix(Fix(ts=ts, lat=lat, lon=119.42, seq=sent))
            else:
                payload = encode_batch(
                    [Fix(ts=ts + k, lat=lat, lon=119.42, seq=sent + k) for k in range(per)]
                )
            last_ts[dev] = ts + per - 1
            chunk.append((topics[dev], payload))
            sent += per
            messages += 1
            dev = (dev + 1) % n_dev
        if chunk:
            pub.publish_many(chunk)
        if not spec.as_fast_as_possible:
            pub.pump(0.002)
    pub.wait_acked(timeout=max(120.0, spec.duration_s))
    seconds = time.monotonic() - t0
    pub.close()
    return LoadResult(sent, pub.acked * per, messages, seconds)
