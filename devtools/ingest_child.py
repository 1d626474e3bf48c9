"""``fleet ingest`` as a child process, for the benchmark and the fault tests.

Start it and wait until its ``/healthz`` answers, read its metrics, and stop it
gracefully (SIGTERM) or crash it (SIGKILL).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

__all__ = ["IngestChild", "metric_value"]


def metric_value(text: str, name: str, labels: str = "") -> float:
    """One sample from Prometheus text (0.0 when absent), e.g. ``rejected_total{reason="x"}``."""
    key = f"{name}{{{labels}}} " if labels else name + " "
    for line in text.splitlines():
        if line.startswith(key):
            return float(line.split()[-1])
    return 0.0


class IngestChild:
    """One ``fleet ingest --no-migrate`` process configured entirely by ``env``."""

    def __init__(self, env: dict[str, str], log_path: Path, healthy_timeout: float = 30.0):
        self.env = env
        self.log_path = log_path
        self.healthy_timeout = healthy_timeout
        self.metrics_url = f"http://127.0.0.1:{env['FLEET_METRICS_PORT']}"
        self.proc: subprocess.Popen[bytes] | None = None

    def _log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""

    def start(self) -> None:
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fleet.cli", "ingest", "--no-migrate"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.wait_healthy()

    def wait_healthy(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.healthy_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ingest exited ({self.log_path}):\n{self._log_tail()}")
            try:
                if httpx.get(self.metrics_url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"ingest did not become healthy ({self.log_path}):\n{self._log_tail()}")

    def scrape(self) -> str:
        return httpx.get(self.metrics_url + "/metrics", timeout=5).text

    def metric(self, name: str, labels: str = "") -> float:
        return metric_value(self.scrape(), name, labels)

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed or acknowledged on the way out."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout``."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
