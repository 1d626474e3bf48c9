"""``fleet ingest`` as a child process, for the benchmarks, the fault rig and the tests.

Start it and wait until its ``/healthz`` answers, read its metrics, and stop it
gracefully (SIGTERM) or crash it (SIGKILL): a :class:`devtools.processes.ChildProcess`.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from devtools.metrics_text import metric_value
from devtools.processes import ChildProcess, fleet_argv

__all__ = ["IngestChild"]


class IngestChild(ChildProcess):
    """One ``fleet ingest --no-migrate`` process configured entirely by ``env``."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        healthy_timeout: float = 30.0,
        stop_timeout: float = 30.0,
    ) -> None:
        super().__init__(
            "ingest",
            fleet_argv("ingest", "--no-migrate"),
            env,
            log_path,
            stop_timeout=stop_timeout,
        )
        self.healthy_timeout = healthy_timeout
        self.metrics_url = f"http://127.0.0.1:{env['FLEET_METRICS_PORT']}"

    def start(self) -> None:
        """Start and wait until healthy (:class:`devtools.processes.ChildError` if not)."""
        super().start()
        self.wait_ready(self.metrics_url + "/healthz", self.healthy_timeout)

    def scrape(self) -> str:
        return httpx.get(self.metrics_url + "/metrics", timeout=5).text

    def metric(self, name: str, labels: str = "") -> float:
        return metric_value(self.scrape(), name, labels)
