"""``fleet bench faults`` end to end, shortened: its schedule, its last line, its exit status."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
LAST_LINE = re.compile(
    r"^generated=(\d+) confirmed=(\d+) stored=(\d+) lost=(\d+) dup_rows=(\d+) drain_s=[\d.]+$"
)


def test_bench_faults_short_run_loses_nothing():
    res = subprocess.run(
        [sys.executable, "-m", "fleet.cli", "bench", "faults"]
        + ["--duration", "24", "--devices", "50", "--rate", "500", "--resend-after", "3"]
        + ["--resend-max", "6", "--drain-timeout", "90"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    lines = res.stdout.strip().splitlines()
    assert lines, res.stderr
    m = LAST_LINE.match(lines[-1])
    assert m, f"last line {lines[-1]!r}\n{res.stdout[-3000:]}\n{res.stderr[-2000:]}"
    generated, confirmed, stored, lost, dup_rows = map(int, m.groups())
    assert generated >= 500 * 24 * 0.95
    assert (lost, dup_rows) == (0, 0), res.stdout
    assert confirmed == stored == generated, res.stdout
    assert res.returncode == 0, res.stdout
    # every fault of the schedule ran, and the state directory is gone
    out = res.stdout
    for action in ("kill-broker", "kill-postgres", "kill-ingest"):
        assert out.count(f"s {action} [live]") == 1, action
    assert out.count("s kill-broker [backlog]") == 1
    assert out.count("s kill-postgres [draining]") == 1
    assert out.count("s kill-ingest [draining]") == 1
    assert "ingest committing" in out  # the draining kills hit a working ingest
    state_dir = re.search(r"state in (\S+);", out)
    assert state_dir and not Path(state_dir.group(1)).exists()
