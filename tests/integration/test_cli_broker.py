"""`fleet device add|list|remove`, `fleet db migrate` and settings errors, as a user runs them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import psycopg

from broker.dynsec import DynsecFile
from broker.runner import wait_for_port
from fleet.storage.embedded import free_port


def fleet(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleet.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_device_add_list_remove(tmp_path):
    r = fleet("device", "add", "PP-0042", "--data-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    password = r.stdout.split("password (shown once): ")[1].strip()
    accounts = DynsecFile(tmp_path / "broker" / "dynamic-security.json")
    assert accounts.check("PP-0042", password)
    assert not accounts.check("PP-0042", password + "x")

    again = fleet("device", "add", "PP-0042", "--data-dir", str(tmp_path))
    assert again.returncode == 2 and "already exists" in again.stderr

    assert fleet("device", "list", "--data-dir", str(tmp_path)).stdout.split() == ["PP-0042"]
    assert fleet("device", "remove", "PP-0042", "--data-dir", str(tmp_path)).returncode == 0
    assert fleet("device", "list", "--data-dir", str(tmp_path)).stdout.split() == []
    gone = fleet("device", "remove", "PP-0042", "--data-dir", str(tmp_path))
    assert gone.returncode == 2 and "no device" in gone.stderr


def test_device_ids_are_validated_and_service_names_reserved(tmp_path):
    bad = fleet("device", "add", "../etc", "--data-dir", str(tmp_path))
    assert bad.returncode == 2 and "vehicle id" in bad.stderr
    svc = fleet("device", "add", "svc-ingest", "--data-dir", str(tmp_path))
    assert svc.returncode == 2 and "reserved" in svc.stderr


def test_db_migrate_is_idempotent(pg_server):
    dsn = pg_server.create_database()
    first = fleet("db", "migrate", "--dsn", dsn)
    assert first.returncode == 0, first.stderr
    assert "applied" in first.stdout
    second = fleet("db", "migrate", "--dsn", dsn)
    assert second.returncode == 0 and "up to date" in second.stdout
    with psycopg.connect(dsn) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
    assert versions == sorted(set(versions)) and versions[0] == 1


def test_bad_setting_is_one_clear_line():
    r = fleet(
        "ingest", env={"FLEET_BATCH_MAX_FIXES": "lots", "FLEET_DSN": "postgresql://x@127.0.0.1:1/x"}
    )
    assert r.returncode == 2
    assert "FLEET_BATCH_MAX_FIXES" in r.stderr
    assert "Traceback" not in r.stderr


def test_fleet_broker_stops_cleanly_on_sigterm(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fleet.cli",
            "broker",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert wait_for_port("127.0.0.1", port, 30), "fleet broker did not listen"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0  # mosquitto is gone too
    finally:
        if proc.poll() is None:
            proc.kill()
