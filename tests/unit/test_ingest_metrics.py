"""The batch-filled lag histogram is exposed exactly as the client's Histogram would be."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from ingest.metrics import LAG_BUCKETS, BatchHistogram


def _series(text: bytes, name: str) -> dict[str, float]:
    out = {}
    for line in text.decode().splitlines():
        if line.startswith(name + "_bucket") or line.startswith((name + "_count", name + "_sum")):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def test_batch_histogram_matches_the_client_histogram() -> None:
    rng = np.random.default_rng(7)
    values = np.concatenate(
        [rng.exponential(0.2, 5000), np.array(LAG_BUCKETS), [0.0, 1e9], rng.uniform(0, 5, 100)]
    )
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    batch = BatchHistogram("lag_seconds", "doc", LAG_BUCKETS, ours)
    client = Histogram("lag_seconds", "doc", buckets=LAG_BUCKETS, registry=theirs)
    for chunk in np.array_split(values, 7):  # a batch at a time
        batch.observe_many(chunk)
    batch.observe_many(np.array([]))
    for v in values:
        client.observe(float(v))
    got, want = (
        _series(generate_latest(ours), "lag_seconds"),
        _series(generate_latest(theirs), "lag_seconds"),
    )
    assert got.keys() == want.keys() and len(got) == len(LAG_BUCKETS) + 3
    total = "lag_seconds_sum"
    assert {k: v for k, v in got.items() if k != total} == {
        k: v for k, v in want.items() if k != total
    }
    assert abs(got["lag_seconds_sum"] - want["lag_seconds_sum"]) < 1e-6 * want["lag_seconds_sum"]
