"""The demo's simulator first drives the last hour fast, then goes on live."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from devtools.demo import sim_argv
from tracker_sim.timeparse import parse_start


def _option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def test_at_real_time_the_sim_starts_an_hour_back_and_catches_up() -> None:
    before = dt.datetime.now(dt.UTC)
    argv = sim_argv(300, 1.0, Path("/d"), [], 8883, Path("/ca"), history_s=3600)
    assert _option(argv, "--speedup") == "0"  # as fast as it goes, never past the clock
    start = _option(argv, "--start")
    assert start is not None
    back = before - parse_start(start, before)
    assert dt.timedelta(minutes=59) < back < dt.timedelta(minutes=61)


def test_no_history_or_a_faster_clock_keeps_the_plain_pace() -> None:
    for speedup, history in ((1.0, 0.0), (20.0, 3600.0)):
        argv = sim_argv(20, speedup, Path("/d"), [], 8883, Path("/ca"), history_s=history)
        assert _option(argv, "--speedup") == f"{speedup:g}" and "--start" not in argv
