"""``python -m devtools.bench_hotpath``: CPU per message of ingest's Python hot path.

What the worker does for every message, without the network and the database: split
the bytes read into MQTT packets, make the messages, decode and validate each against
the contract, build the batch items, book the storage receipts and fill the lag
histogram. It runs the worker's own code on synthetic single-fix messages of
``--devices`` vans and prints the best of ``--runs`` CPU times (process time, so other
load on the machine barely moves it). The figure to compare before and after a change
of the hot path; ``fleet bench ingest`` gives the whole system's cost per fix.
"""

from __future__ import annotations

import argparse
import time

import msgspec
from prometheus_client import CollectorRegistry

from fleet.settings import IngestSettings
from ingest.metrics import IngestMetrics
from ingest.worker import IngestWorker
from mqtt5 import _codec as codec

__all__ = ["hot_path_us", "main"]


def _packets(messages: int, devices: int) -> bytes:
    now = int(time.time() * 1000)
    out = bytearray()
    for i in range(messages):
        fix = {"ts": now - 1000, "lat": -5.14, "lon": 119.42, "speed": 8.1, "heading": 90.0,
               "route": "B", "seq": i}  # fmt: skip
        topic = f"fleet/B1-{i % devices:05d}/telemetry".encode()
        out += codec.publish_packet(topic, msgspec.json.encode(fix), i % 65000 + 1, qos=1)
    return bytes(out)


def hot_path_us(messages: int = 20_000, devices: int = 5_000, runs: int = 7) -> float:
    """Best-of-``runs`` CPU microseconds per message."""
    worker = IngestWorker(
        IngestSettings(dsn="postgresql://unused"),
        "postgresql://unused",
        IngestMetrics(CollectorRegistry()),
    )
    source, packets = worker.source, _packets(messages, devices)
    best = float("inf")
    for _ in range(runs):
        t0 = time.process_time()
        split, _ = codec.split_packets(bytearray(packets))
        source._handle(split)
        batch = source.take(0)
        assert batch is not None and len(batch) == messages
        items = worker._decode_batch(batch)
        worker._settle(items, time.time())
        receipts = list(worker.receipts.drain())
        best = min(best, time.process_time() - t0)
        assert all(item.fixes for item in items) and len(receipts) == min(devices, messages)
    return best / messages * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--devices", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=7)
    a = parser.parse_args()
    us = hot_path_us(a.messages, a.devices, a.runs)
    print(f"hot_path_us_per_message={us:.2f} messages={a.messages} devices={a.devices}")  # noqa: T201


if __name__ == "__main__":
    main()
