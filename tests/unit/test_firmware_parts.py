"""The agent's parts on their own: queue durability, batches, backoff, sources, pacing."""

from __future__ import annotations

import importlib.util
import itertools
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import tty
from pathlib import Path

import pytest

from firmware_stub.backoff import Backoff
from firmware_stub.fix_queue import FixQueue, QueueError
from firmware_stub.sources import ReplayPacer, SourceError, open_source
from firmware_stub.uploader import UplinkConfig, build_batch
from fleet.contract import MAX_BATCH_FIXES, MAX_PAYLOAD_BYTES, Fix, TopicKind, decode_telemetry
from tests.fixtures.firmware import LENIENT, drive_lines, now_ms

# -- the queue ---------------------------------------------------------------------------


def test_queue_is_fifo_and_durable_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    q = FixQueue(path)
    seqs = [q.put(ts=1000 * i, lat=-5.1, lon=119.4, route="B1") for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    assert [f.seq for f in q.oldest(0, 3)] == [1, 2, 3]
    assert [f.seq for f in q.oldest(3, 10)] == [4, 5]
    assert q.delete_range(1, 2) == 2
    q.close()
    q = FixQueue(path)
    assert q.depth() == 3
    assert q.oldest(0, 1)[0] == Fix(ts=2000, lat=-5.1, lon=119.4, route="B1", seq=3)
    q.delete_range(3, 5)
    assert q.put(ts=9000, lat=-5.1, lon=119.4) == 6  # seq is never reused
    q.close()


def test_queue_deletes_receipt_ranges_idempotently(tmp_path: Path) -> None:
    q = FixQueue(tmp_path / "q.sqlite3")
    for i in range(10):
        q.put(ts=1000 * i, lat=-5.1, lon=119.4)
    # overlapping, repeated and out-of-queue ranges count each queued fix once
    assert q.delete_ranges([(2, 4), (3, 5), (9, 20), (100, 200)]) == 6
    assert [f.seq for f in q.oldest(0, 20)] == [1, 6, 7, 8]
    assert q.delete_ranges([(2, 4)]) == 0  # a receipt applied twice deletes nothing more
    assert q.delete_ranges([]) == 0
    q.close()


def test_queue_uses_wal_and_full_sync(tmp_path: Path) -> None:
    q = FixQueue(tmp_path / "q.sqlite3")
    assert q._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert q._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    q.close()


def test_queue_drops_the_oldest_when_full(tmp_path: Path) -> None:
    q = FixQueue(tmp_path / "q.sqlite3", max_fixes=3)
    for i in range(5):
        q.put(ts=i, lat=0.0, lon=0.0)
    assert [f.ts for f in q.oldest(0, 10)] == [2, 3, 4]
    q.close()


def test_queue_error_names_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(QueueError, match="cannot open the fix queue"):
        FixQueue(blocker / "q.sqlite3")


WRITER = """
import os, signal, sys
from firmware_stub.fix_queue import FixQueue
q = FixQueue(__import__("pathlib").Path(sys.argv[1]))
for i in range(200):
    q.put(ts=i, lat=-5.1, lon=119.4)
    print(i, flush=True)  # reported only after the commit returned
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_queued_fixes_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    proc = subprocess.run(
        [sys.executable, "-c", WRITER, str(path)],
        capture_output=True,
        timeout=120,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == -signal.SIGKILL
    reported = len(proc.stdout.splitlines())
    assert reported == 200
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*) FROM fixes").fetchone()[0] == reported
    db.close()


# -- batches -------------------------------------------------------------------------------


def _fixes(n: int) -> list[Fix]:
    start = now_ms()
    return [
        Fix(ts=start + i, lat=-5.13 + i * 1e-6, lon=119.42, speed=8.31, heading=45.0,
            accuracy=4.5, route="B1", seq=i + 1)
        for i in range(n)
    ]  # fmt: skip


def test_batch_fills_up_to_the_byte_limit_and_decodes_per_contract() -> None:
    fixes = _fixes(MAX_BATCH_FIXES)
    batch, payload = build_batch(fixes, MAX_PAYLOAD_BYTES)
    assert len(payload) <= MAX_PAYLOAD_BYTES
    assert 0 < len(batch) < MAX_BATCH_FIXES  # the 64 KiB limit bites first
    _, longer = build_batch(fixes[: len(batch) + 1], 10**9)
    assert len(longer) > MAX_PAYLOAD_BYTES  # one more would not have fitted
    decoded = decode_telemetry(TopicKind.TELEMETRY, "van-1", payload, now_ms(), LENIENT)
    assert decoded.rejections == [] and decoded.fixes == batch


def test_batch_respects_the_fix_count_and_a_small_byte_budget() -> None:
    batch, _ = build_batch(_fixes(10), 10**6)
    assert len(batch) == 10
    batch, payload = build_batch(_fixes(50), 1024)
    assert len(payload) <= 1024 and len(batch) >= 5
    with pytest.raises(ValueError):
        UplinkConfig(vehicle_id="v", batch_max_fixes=MAX_BATCH_FIXES + 1)
    with pytest.raises(ValueError):
        UplinkConfig(vehicle_id="v", batch_max_bytes=MAX_PAYLOAD_BYTES + 1)


def test_receipt_settings_are_checked() -> None:
    cfg = UplinkConfig(vehicle_id="v")
    assert cfg.receipts and cfg.receipt_timeout_s == 15.0 and cfg.receipt_timeout_max_s == 120
    with pytest.raises(ValueError, match="receipt_timeout_s"):
        UplinkConfig(vehicle_id="v", receipt_timeout_s=200.0)
    with pytest.raises(ValueError, match="receipt_timeout_s"):
        UplinkConfig(vehicle_id="v", receipt_timeout_s=0.0)
    with pytest.raises(ValueError, match="receipt_window"):
        UplinkConfig(vehicle_id="v", receipt_window=0)


# -- backoff -------------------------------------------------------------------------------


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    b = Backoff(1.0, 60.0, random.Random(7))
    delays = [b.next_delay() for _ in range(10)]
    caps = [min(60.0, 2.0**n) for n in range(10)]
    assert all(cap / 2 <= d <= cap for d, cap in zip(delays, caps, strict=True))
    assert max(delays) <= 60.0 and delays[-1] >= 30.0
    assert len({round(d, 6) for d in delays}) == 10  # jittered, not a fixed ladder
    b.reset()
    assert b.next_delay() <= 1.0
    with pytest.raises(ValueError):
        Backoff(5.0, 1.0)


def test_backoff_spreads_a_fleet_that_lost_the_same_tower() -> None:
    first_retries = [Backoff(8.0, 60.0, random.Random(i)).next_delay() for i in range(200)]
    assert max(first_retries) - min(first_retries) > 3.0


# -- sources -------------------------------------------------------------------------------


def test_log_file_is_a_replay_and_can_loop(tmp_path: Path) -> None:
    log = tmp_path / "drive.nmea"
    lines = drive_lines(now_ms(), 3)
    log.write_text("\r\n".join(lines) + "\r\n")
    src = open_source(str(log), loop=True)
    assert src.replay
    got = [line.strip() for line in itertools.islice(src, 2 * len(lines))]
    assert got == lines + lines
    src.close()
    once = open_source(str(log))
    assert [line.strip() for line in once] == lines


def test_missing_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        open_source(str(tmp_path / "nope.nmea"))


def test_fifo_is_read_live(tmp_path: Path) -> None:
    fifo = tmp_path / "gps.fifo"
    os.mkfifo(fifo)
    lines = drive_lines(now_ms(), 2)

    def writer() -> None:
        with fifo.open("w") as f:
            f.write("\r\n".join(lines) + "\r\n")

    t = threading.Thread(target=writer)
    t.start()
    src = open_source(str(fifo))
    assert not src.replay
    assert [line.strip() for line in src] == lines
    t.join(5)


def test_a_tty_can_be_read_as_a_plain_file() -> None:
    master, slave = os.openpty()
    tty.setraw(slave)  # what `stty raw` does to a real serial port
    src = open_source(os.ttyname(slave), plain_tty=True)
    lines = drive_lines(now_ms(), 2)
    os.write(master, ("\r\n".join(lines) + "\r\n").encode())
    it = iter(src)
    got = [next(it).strip() for _ in lines]
    assert got == lines
    src.close()
    os.close(master)
    os.close(slave)


def test_a_serial_port_needs_pyserial_or_says_what_to_install() -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        if importlib.util.find_spec("serial") is None:
            with pytest.raises(SourceError, match="pip install pyserial") as err:
                open_source(os.ttyname(slave), baud=9600)
            assert "--plain-tty" in str(err.value)
        else:  # pyserial present: it reads the port
            src = open_source(os.ttyname(slave), baud=9600)
            lines = drive_lines(now_ms(), 1)
            os.write(master, ("\r\n".join(lines) + "\r\n").encode())
            it = iter(src)
            assert [next(it).strip() for _ in lines] == lines
            src.close()
    finally:
        os.close(master)
        os.close(slave)


def test_line_noise_is_decoded_not_raised(tmp_path: Path) -> None:
    log = tmp_path / "noise.nmea"
    log.write_bytes(b"\xff\xfe$GPGGA,garbage*00\r\n")
    assert len(list(open_source(str(log)))) == 1


# -- replay pacing ------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds


def test_replay_pacer_follows_gps_time_scaled() -> None:
    clock = FakeClock()
    pacer = ReplayPacer(10.0, monotonic=clock.monotonic, sleep=clock.sleep)
    for ts in range(0, 5000, 1000):
        pacer.pace(ts)
    assert clock.slept == [0.1, 0.1, 0.1, 0.1]
    pacer.pace(0)  # the log started over: re-anchor, no wait
    assert len(clock.slept) == 4


def test_replay_pacer_does_not_wait_when_behind_or_at_speed_zero() -> None:
    clock = FakeClock()
    pacer = ReplayPacer(1.0, monotonic=clock.monotonic, sleep=clock.sleep)
    pacer.pace(0)
    clock.now += 5.0  # slow consumer: already 5 s behind
    pacer.pace(1000)
    assert clock.slept == []
    fast = ReplayPacer(0, monotonic=clock.monotonic, sleep=clock.sleep)
    fast.pace(0)
    fast.pace(10_000)
    assert clock.slept == []
