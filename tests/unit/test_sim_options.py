"""`fleet sim` option parsing, fleet splitting and device credential provisioning."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from broker.runner import BrokerLayout
from fleet.routes import load_routes
from tracker_sim.device_credentials import (
    CredentialsFileError,
    provision_devices,
    read_credentials,
)
from tracker_sim.runner import split_vehicles
from tracker_sim.timeparse import WITA, parse_duration, parse_start

NOW = dt.datetime(2026, 11, 23, 5, 0, tzinfo=dt.UTC)  # 13:00 WITA


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("30m", 1800), ("2h", 7200), ("1.5d", 129600)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_bad_duration_says_how() -> None:
    with pytest.raises(ValueError, match="e.g. 30m"):
        parse_duration("ten minutes")


def test_start_times() -> None:
    assert parse_start("now", NOW) == NOW
    # HH:MM is Makassar local time, the latest one not in the future
    assert parse_start("07:00", NOW) == dt.datetime(2026, 11, 23, 7, 0, tzinfo=WITA)
    assert parse_start("17:30", NOW) == dt.datetime(2026, 11, 22, 17, 30, tzinfo=WITA)
    assert parse_start("2026-11-20T07:15:00", NOW) == dt.datetime(2026, 11, 20, 7, 15, tzinfo=WITA)
    assert parse_start("2026-11-20T07:15:00+00:00", NOW).utcoffset() == dt.timedelta(0)
    assert parse_start("1795390000000", NOW).timestamp() == 1795390000.0
    with pytest.raises(ValueError, match="HH:MM"):
        parse_start("yesterday", NOW)
    with pytest.raises(ValueError, match="not a time of day"):
        parse_start("25:00", NOW)


def test_vehicles_are_spread_over_routes() -> None:
    routes = load_routes()
    split = split_vehicles(routes, 300)
    assert sum(split.values()) == 300
    assert max(split.values()) - min(split.values()) <= 1
    assert list(split) == list(routes)


def test_provisioning_creates_and_reuses_device_credentials(tmp_path: Path) -> None:
    data = tmp_path / "data"
    creds = tmp_path / "creds.csv"
    ids = ["pp-A-001", "pp-A-002"]
    first = provision_devices(data, ids, creds)
    with BrokerLayout(data).accounts() as accounts:
        assert set(accounts.devices()) == set(ids)
        assert all(accounts.file.check(v, first[v]) for v in ids)
    assert creds.stat().st_mode & 0o777 == 0o600
    assert provision_devices(data, ids, creds) == first  # stable across runs
    # a device the broker knows but whose password we lost gets a new one
    creds.write_text("vehicle_id,password\npp-A-001," + first["pp-A-001"] + "\n")
    again = provision_devices(data, ids, creds)
    assert again["pp-A-001"] == first["pp-A-001"] and again["pp-A-002"] != first["pp-A-002"]
    with BrokerLayout(data).accounts() as accounts:
        assert accounts.file.check("pp-A-002", again["pp-A-002"])
    assert read_credentials(creds) == again


def test_broken_credentials_file_names_the_line(tmp_path: Path) -> None:
    creds = tmp_path / "creds.csv"
    creds.write_text("vehicle_id,password\npp-A-001\n")
    with pytest.raises(CredentialsFileError, match=r"creds.csv:2: expected 'vehicle_id,password'"):
        read_credentials(creds)
    with pytest.raises(CredentialsFileError, match="cannot read"):
        read_credentials(tmp_path / "missing.csv")
