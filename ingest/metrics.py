"""Prometheus metrics of the ingest worker, and its /metrics + /healthz endpoint."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

__all__ = ["BatchHistogram", "HealthServer", "IngestMetrics"]

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
# Fine buckets below one second: the benchmark reads publish→commit percentiles from them.
LAG_BUCKETS = (
    0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.1, 0.125,
    0.15, 0.175, 0.2, 0.225, 0.25, 0.3, 0.35, 0.4, 0.5, 0.75, 1, 2, 5, 10, 30, 60, 300, 3600,
)  # fmt: skip


class BatchHistogram(Collector):
    """A Prometheus histogram filled a batch at a time: one numpy call per committed batch
    where ``Histogram.observe`` is a Python call (and a lock) per fix, the largest single
    cost of the hot path in the profile (docs/benchmarks.md). Exposed exactly like a
    client histogram (``_bucket{le=...}``, ``_count``, ``_sum``)."""

    def __init__(
        self, name: str, documentation: str, buckets: tuple[float, ...], registry: CollectorRegistry
    ) -> None:
        self.name = name
        self.documentation = documentation
        self._bounds = np.asarray(buckets, dtype=np.float64)
        self._counts = np.zeros(len(buckets) + 1, dtype=np.int64)  # the last: +Inf
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: np.ndarray) -> None:
        if values.size == 0:
            return
        # bucket i holds values <= bounds[i] (Prometheus' "le"); beyond the last: +Inf
        counts = np.bincount(
            np.searchsorted(self._bounds, values, side="left"), minlength=len(self._counts)
        )
        with self._lock:
            self._counts += counts
            self._sum += float(values.sum())

    def collect(self) -> list[HistogramMetricFamily]:
        with self._lock:
            cumulative = np.cumsum(self._counts)
            total = self._sum
        buckets = [
            (floatToGoString(b), float(c))  # type: ignore[no-untyped-call]
            for b, c in zip(self._bounds, cumulative[:-1], strict=True)
        ]
        buckets.append(("+Inf", float(cumulative[-1])))
        return [HistogramMetricFamily(self.name, self.documentation, buckets, sum_value=total)]


class IngestMetrics:
    """All counters in one place; names follow Prometheus conventions."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        p = "fleet_ingest_"
        r = registry
        self.messages = Counter(p + "messages_received", "MQTT messages received", registry=r)
        self.fixes_received = Counter(p + "fixes_received", "Valid fixes decoded", registry=r)
        self.fixes_stored = Counter(
            p + "fixes_stored", "Fixes newly stored (committed)", registry=r
        )
        self.duplicates = Counter(p + "fixes_duplicate", "Fixes already stored (no-op)", registry=r)
        self.rejected = Counter(p + "rejected", "Rejected input, by reason", ["reason"], registry=r)
        self.status_updates = Counter(p + "status_updates", "Status messages applied", registry=r)
        self.batches = Counter(p + "batches", "Batches committed", registry=r)
        self.db_errors = Counter(p + "db_errors", "Failed batch writes (retried)", registry=r)
        self.receipts = Counter(p + "receipts_sent", "Storage receipts published", registry=r)
        self.receipts_dropped = Counter(
            p + "receipts_dropped",
            "Receipts not sent (broker unreachable; devices resend)",
            registry=r,
        )
        self.batch_seconds = Histogram(
            p + "batch_seconds",
            "First message received → batch committed",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.lag_seconds = BatchHistogram(
            p + "lag_seconds", "Fix timestamp → committed, per fix", LAG_BUCKETS, r
        )
        self.pending = Gauge(
            p + "pending_messages", "Received, not yet committed and acked", registry=r
        )
        self.connected = Gauge(p + "mqtt_connected", "1 while connected to the broker", registry=r)
        self.last_commit = Gauge(
            p + "last_commit_timestamp_seconds", "Unix time of last commit", registry=r
        )


class HealthServer:
    """/metrics (Prometheus text) and /healthz (JSON) on a small background HTTP server."""

    def __init__(self, bind: str, port: int, health: Callable[[], tuple[bool, dict[str, object]]]):
        health_fn = health

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    body, ctype, code = generate_latest(), CONTENT_TYPE_LATEST, 200
                elif self.path == "/healthz":
                    ok, detail = health_fn()
                    body = json.dumps({"ok": ok, **detail}).encode()
                    ctype, code = "application/json", 200 if ok else 503
                else:
                    body, ctype, code = b'{"error": "not found"}', "application/json", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer((bind, port), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="ingest-health", daemon=True
        )

    def start(self) -> None:
        self._thread.start()
        log.info("metrics and health endpoint up", extra={"port": self.port})

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def monotonic_ms() -> float:
    return time.monotonic() * 1000.0
