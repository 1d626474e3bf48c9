"""``fleet api`` as a child process, for the page and live-push benchmarks.

It runs as the broker's ``svc-api`` account on a free port of 127.0.0.1 and is ready
once ``/readyz`` answers (broker and database both reached).
"""

from __future__ import annotations

import os
from pathlib import Path

from devtools.processes import ChildProcess, fleet_argv
from fleet.storage.embedded import free_port

__all__ = ["ApiChild"]

READY_TIMEOUT_S = 60.0


class ApiChild(ChildProcess):
    """One ``fleet api --no-migrate``; ``extra_env`` adds or overrides settings."""

    def __init__(
        self,
        dsn: str,
        mqtt_port: int,
        mqtt_password: str,
        log_path: Path,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "FLEET_DSN": dsn,
            "FLEET_MQTT_HOST": "127.0.0.1",
            "FLEET_MQTT_PORT": str(mqtt_port),
            "FLEET_MQTT_USERNAME": "svc-api",
            "FLEET_MQTT_PASSWORD": mqtt_password,
            "FLEET_LOG_LEVEL": "WARNING",
            **(extra_env or {}),
        }
        argv = fleet_argv("api", "--no-migrate", "--port", str(self.port))
        super().__init__("api", argv, env, log_path)

    def start(self) -> None:
        """Start and wait until ready (:class:`devtools.processes.ChildError` if not)."""
        super().start()
        self.wait_ready(f"{self.base}/readyz", READY_TIMEOUT_S, what="readiness endpoint")
