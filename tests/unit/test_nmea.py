"""NMEA 0183 parsing and fix assembly, with sentences from real receivers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from firmware_stub.gps_fixes import Discard, FixAssembler, IntervalSampler
from firmware_stub.nmea import (
    KNOTS_TO_MS,
    Gga,
    NmeaError,
    Problem,
    Rmc,
    parse_sentence,
    with_checksum,
)

SAMPLE = Path(__file__).resolve().parents[2] / "firmware_stub" / "data" / "sample.nmea"

# Real-world sentences: the NMEA reference examples, u-blox manuals, a u-blox M8 (GN
# talker, western hemisphere), a Trimble DGPS receiver with a station id, and the
# u-blox cold-start output without a fix.
NMEA_REF_GGA = "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47"
NMEA_REF_RMC = "$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A"
UBLOX_RMC = "$GPRMC,083559.00,A,4717.11437,N,00833.91522,E,0.004,77.52,091202,,,A*57"
UBLOX_GGA = "$GPGGA,092725.00,4717.11399,N,00833.91590,E,1,08,1.01,499.6,M,48.0,M,,*5B"
M8_GGA = "$GNGGA,001043.00,4404.14036,N,12118.85961,W,1,12,0.98,1113.0,M,-21.3,M,,*47"
M8_RMC = "$GNRMC,001031.00,A,4404.13993,N,12118.86023,W,0.146,,100117,,,A*7B"
TRIMBLE_DGPS_GGA = (
    "$GPGGA,172814.0,3723.46587704,N,12202.26957864,W,2,6,1.2,18.893,M,-25.669,M,2.0,0031*4F"
)
COLD_GGA = "$GPGGA,,,,,,0,00,99.99,,,,,,*48"
COLD_RMC = "$GPRMC,,V,,,,,,,,,,N*53"


def test_reference_gga() -> None:
    s = parse_sentence(NMEA_REF_GGA)
    assert isinstance(s, Gga)
    assert s.talker == "GP"
    assert s.time_ms == (12 * 3600 + 35 * 60 + 19) * 1000
    assert s.lat == pytest.approx(48 + 7.038 / 60)
    assert s.lon == pytest.approx(11 + 31.0 / 60)
    assert (s.quality, s.satellites, s.hdop, s.altitude_m) == (1, 8, 0.9, 545.4)


def test_reference_rmc_has_date_speed_course() -> None:
    s = parse_sentence(NMEA_REF_RMC)
    assert isinstance(s, Rmc)
    assert s.valid
    assert s.date == dt.date(1994, 3, 23)
    assert s.speed_knots == 22.4
    assert s.course_deg == 84.4
    assert s.mode is None  # NMEA 2.1 sentence: no mode field


def test_ublox_sentences_with_fractional_seconds() -> None:
    rmc = parse_sentence(UBLOX_RMC)
    assert isinstance(rmc, Rmc)
    assert rmc.time_ms == (8 * 3600 + 35 * 60 + 59) * 1000
    assert rmc.lat == pytest.approx(47 + 17.11437 / 60)
    assert rmc.lon == pytest.approx(8 + 33.91522 / 60)
    assert rmc.date == dt.date(2002, 12, 9)
    assert rmc.mode == "A"
    gga = parse_sentence(UBLOX_GGA)
    assert isinstance(gga, Gga)
    assert gga.hdop == 1.01


def test_western_hemisphere_and_gn_talker() -> None:
    gga = parse_sentence(M8_GGA)
    assert isinstance(gga, Gga)
    assert gga.talker == "GN"
    assert gga.lon == pytest.approx(-(121 + 18.85961 / 60))
    rmc = parse_sentence(M8_RMC)
    assert isinstance(rmc, Rmc)
    assert rmc.course_deg is None  # empty course at standstill
    assert rmc.date == dt.date(2017, 1, 10)


def test_dgps_gga_with_long_coordinates_and_station_id() -> None:
    s = parse_sentence(TRIMBLE_DGPS_GGA)
    assert isinstance(s, Gga)
    assert s.quality == 2
    assert s.lat == pytest.approx(37 + 23.46587704 / 60)


def test_southern_eastern_hemisphere_makassar() -> None:
    line = with_checksum("GNGGA,001500.00,0508.10000,S,11925.38000,E,1,10,0.80,12.0,M,20.1,M,,")
    s = parse_sentence(line)
    assert isinstance(s, Gga)
    assert s.lat == pytest.approx(-(5 + 8.1 / 60))
    assert s.lon == pytest.approx(119 + 25.38 / 60)


def test_cold_start_sentences_parse_as_no_fix() -> None:
    gga = parse_sentence(COLD_GGA)
    rmc = parse_sentence(COLD_RMC)
    assert isinstance(gga, Gga) and isinstance(rmc, Rmc)
    assert gga.quality == 0 and gga.lat is None and gga.time_ms is None
    assert not rmc.valid and rmc.mode == "N" and rmc.date is None


@pytest.mark.parametrize(
    "line",
    [
        "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*48",  # wrong sum
        "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*4",  # one digit
        "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*ZZ",  # not hex
        "$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6B",
        "$GPRMC,123519,A,4807.088,N,01131.000,E,022.4,084.4,230394,003.1,W*6A",  # bit flip
    ],
)
def test_bad_checksums_are_rejected(line: str) -> None:
    with pytest.raises(NmeaError) as err:
        parse_sentence(line)
    assert err.value.problem is Problem.BAD_CHECKSUM


def test_checksum_is_case_insensitive_and_crlf_is_stripped() -> None:
    assert parse_sentence(NMEA_REF_RMC.replace("*6A", "*6a") + "\r\n") is not None


def test_missing_checksum_and_truncated_line() -> None:
    with pytest.raises(NmeaError) as err:
        parse_sentence("$GNGGA,235909.00,0508.16833,S,11926.")
    assert err.value.problem is Problem.NO_CHECKSUM


def test_serial_noise_before_the_dollar_is_dropped() -> None:
    assert isinstance(parse_sentence("\x00\xff#garbage" + NMEA_REF_GGA), Gga)


def test_not_a_sentence() -> None:
    with pytest.raises(NmeaError) as err:
        parse_sentence("hello")
    assert err.value.problem is Problem.NOT_A_SENTENCE


def test_other_sentences_are_ignored_not_rejected() -> None:
    assert (
        parse_sentence("$GPGSV,2,1,08,02,45,120,38,05,30,210,35,12,62,015,41,15,18,300,29,1*64")
        is None
    )
    assert parse_sentence(with_checksum("GNVTG,102.70,T,,M,4.623,N,8.562,K,A")) is None
    assert parse_sentence(with_checksum("PUBX,00,081350.00,4717.113210,N")) is None


@pytest.mark.parametrize("talker", ["GP", "GN", "GL", "GA", "BD"])
def test_talker_ids(talker: str) -> None:
    s = parse_sentence(with_checksum(NMEA_REF_GGA[1:-3].replace("GP", talker, 1)))
    assert isinstance(s, Gga) and s.talker == talker


def test_unknown_talker_is_rejected() -> None:
    with pytest.raises(NmeaError) as err:
        parse_sentence(with_checksum(NMEA_REF_GGA[1:-3].replace("GP", "ZZ", 1)))
    assert err.value.problem is Problem.UNKNOWN_TALKER


@pytest.mark.parametrize(
    "body",
    [
        "GPGGA,123519,4807.038,X,01131.000,E,1,08,0.9,545.4,M,46.9,M,,",  # hemisphere
        "GPGGA,123519,4867.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,",  # 67 minutes
        "GPGGA,123519,9107.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,",  # lat > 90
        "GPGGA,256019,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,",  # hour 25
        "GPGGA,123519,4807.038,N,01131.000,E,one,08,0.9,545.4,M,46.9,M,,",  # quality
        "GPGGA,123519,4807.038,N",  # too short
        "GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,320394,003.1,W",  # 32 March
        "GPRMC,123519,X,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W",  # status
    ],
)
def test_malformed_fields(body: str) -> None:
    with pytest.raises(NmeaError) as err:
        parse_sentence(with_checksum(body))
    assert err.value.problem is Problem.MALFORMED


# -- fix assembly ------------------------------------------------------------------------

T0 = dt.datetime(2025, 3, 14, 0, 15, 0, tzinfo=dt.UTC)
LAT, LON = "0508.10000,S", "11925.38000,E"


def _gga(t: dt.datetime, quality: int = 1, hdop: float = 0.9) -> str:
    return with_checksum(f"GNGGA,{t:%H%M%S}.00,{LAT},{LON},{quality},10,{hdop:.2f},12.0,M,20.1,M,,")


def _rmc(t: dt.datetime, status: str = "A", mode: str = "A") -> str:
    return with_checksum(f"GNRMC,{t:%H%M%S}.00,{status},{LAT},{LON},10.0,87.5,{t:%d%m%y},,,{mode}")


def _assemble(lines: list[str], max_hdop: float | None = 5.0) -> tuple[list, FixAssembler]:
    asm = FixAssembler(max_hdop)
    fixes = []
    for line in lines:
        s = parse_sentence(line)
        assert s is not None
        fixes += asm.feed(s)
    fixes += asm.flush()
    return fixes, asm


def test_pairs_gga_and_rmc_and_takes_the_clock_from_gps() -> None:
    fixes, _ = _assemble([_rmc(T0), _gga(T0)])
    assert len(fixes) == 1
    fix = fixes[0]
    assert fix.ts == int(T0.timestamp() * 1000)
    assert fix.lat == pytest.approx(-(5 + 8.1 / 60))
    assert fix.speed == pytest.approx(10.0 * KNOTS_TO_MS)
    assert (fix.heading, fix.hdop, fix.satellites) == (87.5, 0.9, 10)


def test_a_fix_is_emitted_as_soon_as_its_pair_is_complete() -> None:
    asm = FixAssembler()
    first = parse_sentence(_gga(T0))
    second = parse_sentence(_rmc(T0))
    assert first is not None and second is not None
    assert asm.feed(first) == []
    assert len(asm.feed(second)) == 1
    assert asm.flush() == []


def test_high_hdop_is_filtered_and_the_threshold_is_configurable() -> None:
    lines = [_gga(T0, hdop=7.5), _rmc(T0)]
    fixes, asm = _assemble(lines)
    assert fixes == [] and asm.discarded[Discard.HIGH_HDOP] == 1
    fixes, _ = _assemble(lines, max_hdop=10.0)
    assert len(fixes) == 1
    fixes, _ = _assemble(lines, max_hdop=None)
    assert len(fixes) == 1


@pytest.mark.parametrize(
    ("gga_quality", "status", "mode"),
    [(0, "A", "A"), (1, "V", "N"), (6, "A", "A"), (1, "A", "E"), (1, "A", "N")],
)
def test_no_fix_and_estimated_epochs_are_dropped(gga_quality: int, status: str, mode: str) -> None:
    fixes, asm = _assemble([_gga(T0, quality=gga_quality), _rmc(T0, status, mode)])
    assert fixes == []
    assert asm.discarded[Discard.NO_FIX] == 1


def test_cold_start_without_time_yields_nothing() -> None:
    fixes, asm = _assemble([COLD_GGA, COLD_RMC, COLD_GGA, COLD_RMC])
    assert fixes == []
    assert asm.discarded[Discard.NO_FIX] == 4


def test_gga_without_any_rmc_has_no_date() -> None:
    fixes, asm = _assemble([_gga(T0)])
    assert fixes == [] and asm.discarded[Discard.NO_DATE] == 1


def test_gga_alone_borrows_the_last_date_and_rolls_over_at_midnight() -> None:
    before = dt.datetime(2025, 3, 13, 23, 59, 59, tzinfo=dt.UTC)
    after = before + dt.timedelta(seconds=2)
    fixes, _ = _assemble([_gga(before), _rmc(before), _gga(after)])
    assert [f.ts for f in fixes] == [
        int(before.timestamp() * 1000),
        int(after.timestamp() * 1000),
    ]
    assert fixes[1].speed is None  # no RMC in that epoch


def test_rmc_alone_is_a_fix_without_hdop() -> None:
    fixes, _ = _assemble([_rmc(T0)])
    assert len(fixes) == 1 and fixes[0].hdop is None and fixes[0].speed is not None


def test_midnight_rollover_with_rmc_dates() -> None:
    before = dt.datetime(2025, 3, 13, 23, 59, 59, tzinfo=dt.UTC)
    after = before + dt.timedelta(seconds=1)
    fixes, _ = _assemble([_rmc(before), _gga(before), _rmc(after), _gga(after)])
    assert fixes[1].ts - fixes[0].ts == 1000


def test_sampler_keeps_one_fix_per_interval_of_gps_time() -> None:
    sampler = IntervalSampler(5.0)
    kept = [ts for ts in range(0, 20_000, 1000) if sampler.admit(ts)]
    assert kept == [0, 5000, 10_000, 15_000]
    sampler.interval_s = 2.0
    kept = [ts for ts in range(20_000, 26_000, 1000) if sampler.admit(ts)]
    assert kept == [20_000, 22_000, 24_000]
    assert sampler.admit(1000)  # GPS time went backwards (receiver reset): start over
    with pytest.raises(ValueError):
        sampler.interval_s = 0


def test_sample_log_is_a_realistic_makassar_drive() -> None:
    fixes = []
    rejected: dict[Problem, int] = {}
    asm = FixAssembler(5.0)
    talkers = set()
    for line in SAMPLE.read_text().splitlines():
        try:
            s = parse_sentence(line)
        except NmeaError as exc:
            rejected[exc.problem] = rejected.get(exc.problem, 0) + 1
            continue
        if s is not None:
            talkers.add(s.talker)
            fixes += asm.feed(s)
    fixes += asm.flush()
    assert rejected == {Problem.BAD_CHECKSUM: 3, Problem.NO_CHECKSUM: 1}
    assert asm.discarded[Discard.NO_FIX] > 0 and asm.discarded[Discard.HIGH_HDOP] > 0
    assert talkers == {"GP", "GN"}
    assert len(fixes) > 500
    assert all(-5.2 < f.lat < -5.1 and 119.4 < f.lon < 119.5 for f in fixes)
    ts = [f.ts for f in fixes]
    assert ts == sorted(ts) and len(set(ts)) == len(ts)
    days = {dt.datetime.fromtimestamp(t / 1000, dt.UTC).date() for t in ts}
    assert days == {dt.date(2025, 3, 13), dt.date(2025, 3, 14)}  # crosses UTC midnight
    assert any(f.speed == 0 for f in fixes)  # the van stops to pick up passengers
