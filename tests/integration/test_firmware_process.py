"""``fleet device run`` as a real process: kill -9, last will, signals, stdin."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from broker.runner import MosquittoBroker
from tests.fixtures.firmware import (
    FreezableProxy,
    Subscriber,
    drive_lines,
    new_device,
    now_ms,
    queue_stats,
    retained_status,
    run_agent,
)
from tests.fixtures.waiting import wait_for

SAMPLE = Path(__file__).resolve().parents[2] / "firmware_stub" / "data" / "sample.nmea"
SAMPLE_FIXES = 629  # epochs of the sample log that survive the filters (see test_nmea)


@pytest.fixture
def device(broker: MosquittoBroker) -> tuple[str, str]:
    return new_device(broker)


@pytest.fixture
def sub(broker: MosquittoBroker, device: tuple[str, str]):
    s = Subscriber(broker.port, broker.creds["svc-ingest"], device[0])
    yield s
    s.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def test_kill_9_mid_upload_loses_nothing(
    broker: MosquittoBroker, device: tuple[str, str], sub: Subscriber, tmp_path: Path
) -> None:
    """Batches on the wire without a receipt when the agent dies are sent again."""
    vid, password = device
    n = 1200
    start = now_ms() - 3_600_000
    log_file = tmp_path / "nmea.log"
    log_file.write_text("\r\n".join(drive_lines(start, n)) + "\r\n")
    queue_path = tmp_path / "queue.sqlite3"
    proxy = FreezableProxy(broker.port)  # the "cellular link": it can stall
    agent_log = tmp_path / "agent.log"
    args = ("--speed", "0", "--interval", "1", "--batch-max-fixes", "20")
    proc = run_agent(vid, password, proxy.port, queue_path, str(log_file), *args, log=agent_log)
    try:
        wait_for(lambda: sub.count() >= 40, 30, "the upload to start")
        proxy.freeze()  # from now on the broker sees nothing, so no PUBACK comes back
        wait_for(lambda: queue_stats(queue_path)[0] == n, 60, "the whole log to be queued")
        wait_for(lambda: proxy.held > 0, 10, "a batch in flight on the stalled link")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        _stop(proc)
        proxy.close()
    received_before = {f.ts for f in sub.snapshot()}
    highest_seq, depth = queue_stats(queue_path)
    assert highest_seq == n
    assert len(received_before) < n and depth > 0  # it really died mid-upload
    assert depth >= n - len(received_before)  # unreceipted fixes are still on disk

    empty = tmp_path / "empty.nmea"
    empty.write_text("")
    again = run_agent(vid, password, broker.port, queue_path, str(empty), log=agent_log)
    try:
        assert again.wait(60) == 0, agent_log.read_text()[-3000:]
    finally:
        _stop(again)
    wait_for(lambda: len({f.ts for f in sub.snapshot()}) >= n, 10, "every fix")
    got = sub.snapshot()
    assert {f.ts for f in got} == {start + i * 1000 for i in range(n)}
    assert queue_stats(queue_path)[1] == 0
    # Duplicates would be allowed by the contract, but here there are none: everything
    # the broker received before the link stalled was receipted (receipts still reach
    # the device: only its uplink stalls), and the held batches never reached it.
    assert len(got) == n


def test_last_will_offline_appears_when_the_agent_is_killed(
    broker: MosquittoBroker, device: tuple[str, str], sub: Subscriber, tmp_path: Path
) -> None:
    vid, password = device
    api = broker.creds["svc-api"]
    proc = run_agent(
        vid,
        password,
        broker.port,
        tmp_path / "queue.sqlite3",
        str(SAMPLE),
        "--speed",
        "1",
        "--replay-now",
        log=tmp_path / "agent.log",
    )
    try:
        wait_for(lambda: sub.count() >= 1, 30, "the first fix in real time")
        assert retained_status(broker.port, api, vid) == "online"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        _stop(proc)
    wait_for(lambda: ("offline", False) in sub.statuses, 10, "the last will")
    assert retained_status(broker.port, api, vid) == "offline"
    # --replay-now: the log's GPS time is shifted so the replay looks live.
    assert abs(sub.snapshot()[0].ts - now_ms()) < 60_000


def test_sigterm_says_offline_and_keeps_the_queue(
    broker: MosquittoBroker, device: tuple[str, str], sub: Subscriber, tmp_path: Path
) -> None:
    vid, password = device
    queue_path = tmp_path / "queue.sqlite3"
    proc = run_agent(
        vid,
        password,
        broker.port,
        queue_path,
        str(SAMPLE),
        "--speed",
        "20",
        log=tmp_path / "agent.log",
    )
    try:
        wait_for(lambda: sub.count() >= 2, 30, "some fixes")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        _stop(proc)
    assert retained_status(broker.port, broker.creds["svc-api"], vid) == "offline"
    assert "stopped; queued fixes are kept" in (tmp_path / "agent.log").read_text()


def test_stdin_pipe_sample_log_end_to_end(
    broker: MosquittoBroker, device: tuple[str, str], sub: Subscriber, tmp_path: Path
) -> None:
    """``fleet device run --nmea -`` reads a pipe; the sample log yields its 629 fixes."""
    vid, password = device
    log = tmp_path / "agent.log"
    with SAMPLE.open("rb") as stdin:
        env = {**os.environ, "FLEET_MQTT_PASSWORD": password, "FLEET_DEVICE_ID": vid}
        env["FLEET_DEVICE_QUEUE"] = str(tmp_path / "q.sqlite3")
        env["FLEET_MQTT_PORT"] = str(broker.port)
        fleet = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "fleet"
        out = subprocess.run(
            [str(fleet), "device", "run", "--nmea", "-", "--interval", "1", "--route", "B1"],
            stdin=stdin,
            env=env,
            capture_output=True,
            timeout=120,
            check=False,
        )
    log.write_bytes(out.stderr)
    assert out.returncode == 0, out.stderr.decode()[-3000:]
    assert f"{SAMPLE_FIXES} fixes queued, 0 left" in out.stdout.decode()
    assert (tmp_path / "q.sqlite3").exists()  # FLEET_DEVICE_QUEUE is honoured
    assert "'bad_checksum': 3" in out.stdout.decode()
    wait_for(lambda: sub.count() >= SAMPLE_FIXES, 10, "every fix")
    fixes = sub.snapshot()
    assert len(fixes) == SAMPLE_FIXES
    assert all(f.route == "B1" for f in fixes)
    # Accuracy comes from the GGA's HDOP; one epoch lost its GGA to a truncated line.
    assert sum(f.accuracy is None for f in fixes) == 1
    assert all(-5.2 < f.lat < -5.1 and 119.4 < f.lon < 119.5 for f in fixes)


def test_no_receipts_flag_and_setting(
    broker: MosquittoBroker, device: tuple[str, str], tmp_path: Path
) -> None:
    """Nobody stores the fixes (no ingest): by default they stay queued; ``--no-receipts``
    (or ``FLEET_DEVICE_RECEIPTS=false``) deletes them on the PUBACK, as before receipts."""
    vid, password = device
    queue_path = tmp_path / "queue.sqlite3"
    log = tmp_path / "agent.log"
    fast = ("--speed", "0", "--interval", "1")
    proc = run_agent(
        vid, password, broker.port, queue_path, str(SAMPLE), *fast, "--drain-timeout", "2",
        log=log,
    )  # fmt: skip
    try:
        assert proc.wait(60) == 1, log.read_text()[-3000:]  # not drained
    finally:
        _stop(proc)
    assert queue_stats(queue_path) == (SAMPLE_FIXES, SAMPLE_FIXES)
    assert "storage receipts" in log.read_text()

    empty = tmp_path / "empty.nmea"
    empty.write_text("")
    proc = run_agent(vid, password, broker.port, queue_path, str(empty), "--no-receipts", log=log)
    try:
        assert proc.wait(60) == 0, log.read_text()[-3000:]
    finally:
        _stop(proc)
    assert queue_stats(queue_path) == (SAMPLE_FIXES, 0)

    env = {"FLEET_DEVICE_RECEIPTS": "false"}
    proc = run_agent(vid, password, broker.port, queue_path, str(SAMPLE), *fast, log=log, env=env)
    try:
        assert proc.wait(60) == 0, log.read_text()[-3000:]
    finally:
        _stop(proc)
    assert queue_stats(queue_path) == (2 * SAMPLE_FIXES, 0)
    assert "no receipts (PUBACK deletes)" in log.read_text()
