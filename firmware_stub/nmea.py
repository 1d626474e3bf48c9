"""NMEA 0183 sentences a GPS receiver speaks: framing, checksums, GGA and RMC.

Only what a position tracker needs is decoded: ``GGA`` (fix quality, satellites, HDOP,
altitude) and ``RMC`` (validity, speed, course and the date). Every other sentence type
(GSV, GSA, VTG, TXT, ...) is recognised as well-formed and ignored.

Talker ids: ``GP`` (GPS), ``GL`` (GLONASS), ``GA`` (Galileo), ``GB``/``BD`` (BeiDou),
``GQ`` (QZSS), ``GI`` (NavIC) and ``GN`` (combined GNSS) are accepted.

:func:`parse_sentence` raises :class:`NmeaError` (with a machine-readable ``reason``) for
input that is not a valid sentence, so that a caller can count what it throws away.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from functools import reduce
from typing import Final

__all__ = [
    "KNOTS_TO_MS",
    "TALKERS",
    "Gga",
    "NmeaError",
    "Problem",
    "Rmc",
    "checksum",
    "parse_sentence",
    "with_checksum",
]

KNOTS_TO_MS: Final = 1852.0 / 3600.0
TALKERS: Final = frozenset({"GP", "GL", "GA", "GB", "BD", "GQ", "GI", "GN"})
MAX_SENTENCE_CHARS: Final = 120  # NMEA says 82; some receivers exceed it, nobody by this much


class Problem(enum.StrEnum):
    """Why a line was not a usable sentence; each is its own counter."""

    NOT_A_SENTENCE = "not_a_sentence"
    NO_CHECKSUM = "no_checksum"
    BAD_CHECKSUM = "bad_checksum"
    UNKNOWN_TALKER = "unknown_talker"
    MALFORMED = "malformed"


class NmeaError(ValueError):
    """A line that is not a valid NMEA sentence (or a GGA/RMC with unreadable fields)."""

    def __init__(self, problem: Problem, detail: str, line: str) -> None:
        super().__init__(f"{problem.value}: {detail}: {line[:MAX_SENTENCE_CHARS]!r}")
        self.problem = problem
        self.detail = detail
        self.line = line


@dataclass(frozen=True, slots=True)
class Gga:
    """Global positioning system fix data (one epoch's position and its quality)."""

    talker: str
    time_ms: int | None  # UTC milliseconds since midnight
    lat: float | None
    lon: float | None
    quality: int  # 0 no fix, 1 GPS, 2 DGPS, 4/5 RTK, 6 dead reckoning, 7 manual, 8 sim
    satellites: int | None
    hdop: float | None
    altitude_m: float | None


@dataclass(frozen=True, slots=True)
class Rmc:
    """Recommended minimum data: validity, position, speed, course and the UTC date."""

    talker: str
    time_ms: int | None
    valid: bool  # status A (valid) / V (void)
    lat: float | None
    lon: float | None
    speed_knots: float | None
    course_deg: float | None
    date: dt.date | None
    mode: str | None  # NMEA 2.3+: A autonomous, D differential, E estimated, N not valid, ...


Sentence = Gga | Rmc


def checksum(body: str) -> int:
    """XOR of every character between ``$`` and ``*``."""
    return reduce(lambda acc, ch: acc ^ ord(ch), body, 0)


def with_checksum(body: str) -> str:
    """Frame a sentence body (without ``$``) as ``$body*HH``."""
    return f"${body}*{checksum(body):02X}"


def _frame(line: str) -> str:
    """Return the checked body of a sentence (between ``$`` and ``*``)."""
    text = line.strip()
    start = text.rfind("$")  # serial noise before the last '$' is dropped
    if start < 0:
        raise NmeaError(Problem.NOT_A_SENTENCE, "no '$'", line)
    text = text[start:]
    if len(text) > MAX_SENTENCE_CHARS:
        raise NmeaError(Problem.NOT_A_SENTENCE, f"longer than {MAX_SENTENCE_CHARS} chars", line)
    star = text.find("*")
    if star < 0:
        raise NmeaError(Problem.NO_CHECKSUM, "no '*hh' checksum", line)
    body, given = text[1:star], text[star + 1 :]
    try:
        expected = int(given, 16)
    except ValueError:
        raise NmeaError(Problem.BAD_CHECKSUM, f"checksum {given!r} is not hex", line) from None
    if len(given) != 2:
        raise NmeaError(Problem.BAD_CHECKSUM, f"checksum {given!r} is not two digits", line)
    actual = checksum(body)
    if actual != expected:
        detail = f"checksum {expected:02X} given, {actual:02X} computed"
        raise NmeaError(Problem.BAD_CHECKSUM, detail, line)
    return body


def parse_sentence(line: str) -> Sentence | None:
    """Decode one line: a :class:`Gga`, an :class:`Rmc`, or None for other valid sentences.

    Raises :class:`NmeaError` for a line that is not a valid sentence.
    """
    body = _frame(line)
    fields = body.split(",")
    address = fields[0]
    if address.startswith("P") or len(address) != 5:
        return None  # proprietary ($PUBX, $PMTK...) or not a talker sentence
    talker, kind = address[:2], address[2:]
    if kind not in ("GGA", "RMC"):
        return None
    if talker not in TALKERS:
        raise NmeaError(Problem.UNKNOWN_TALKER, f"talker {talker!r}", line)
    try:
        return _parse_gga(talker, fields) if kind == "GGA" else _parse_rmc(talker, fields)
    except (ValueError, IndexError) as exc:
        raise NmeaError(Problem.MALFORMED, str(exc), line) from None


def _parse_gga(talker: str, f: list[str]) -> Gga:
    if len(f) < 10:
        raise ValueError(f"GGA needs at least 10 fields, got {len(f)}")
    return Gga(
        talker=talker,
        time_ms=_time_ms(f[1]),
        lat=_coordinate(f[2], f[3], 2, "NS"),
        lon=_coordinate(f[4], f[5], 3, "EW"),
        quality=int(f[6]) if f[6] else 0,
        satellites=int(f[7]) if f[7] else None,
        hdop=float(f[8]) if f[8] else None,
        altitude_m=float(f[9]) if f[9] else None,
    )


def _parse_rmc(talker: str, f: list[str]) -> Rmc:
    if len(f) < 10:
        raise ValueError(f"RMC needs at least 10 fields, got {len(f)}")
    if f[2] not in ("A", "V"):
        raise ValueError(f"RMC status {f[2]!r} is neither A nor V")
    return Rmc(
        talker=talker,
        time_ms=_time_ms(f[1]),
        valid=f[2] == "A",
        lat=_coordinate(f[3], f[4], 2, "NS"),
        lon=_coordinate(f[5], f[6], 3, "EW"),
        speed_knots=float(f[7]) if f[7] else None,
        course_deg=float(f[8]) if f[8] else None,
        date=_date(f[9]),
        mode=f[12] if len(f) > 12 and f[12] else None,
    )


def _time_ms(text: str) -> int | None:
    """``hhmmss`` or ``hhmmss.sss`` → milliseconds since midnight."""
    if not text:
        return None
    if len(text) < 6 or not text[:6].isdigit():
        raise ValueError(f"time {text!r} is not hhmmss[.sss]")
    hours, minutes = int(text[0:2]), int(text[2:4])
    seconds = float(text[4:])
    if hours > 23 or minutes > 59 or not 0 <= seconds < 61:  # 60.x: leap second
        raise ValueError(f"time {text!r} out of range")
    return (hours * 3600 + minutes * 60) * 1000 + round(seconds * 1000)


def _coordinate(value: str, hemisphere: str, degree_digits: int, allowed: str) -> float | None:
    """``ddmm.mmmm`` / ``dddmm.mmmm`` plus N/S/E/W → signed decimal degrees."""
    if not value and not hemisphere:
        return None
    if hemisphere not in allowed or len(hemisphere) != 1:
        raise ValueError(f"hemisphere {hemisphere!r} is not one of {allowed}")
    dot = value.find(".")
    whole = value if dot < 0 else value[:dot]
    if len(whole) != degree_digits + 2 or not whole.isdigit():
        raise ValueError(f"coordinate {value!r} is not {'d' * degree_digits}mm.mmmm")
    degrees = int(value[:degree_digits])
    minutes = float(value[degree_digits:])
    decimal = degrees + minutes / 60.0
    if minutes >= 60.0 or decimal > (90.0 if degree_digits == 2 else 180.0):
        raise ValueError(f"coordinate {value!r} out of range")
    return -decimal if hemisphere in "SW" else decimal


def _date(text: str) -> dt.date | None:
    """``ddmmyy`` → date; two-digit years 80-99 are 19xx, 00-79 are 20xx."""
    if not text:
        return None
    if len(text) != 6 or not text.isdigit():
        raise ValueError(f"date {text!r} is not ddmmyy")
    day, month, year = int(text[0:2]), int(text[2:4]), int(text[4:6])
    return dt.date(year + (1900 if year >= 80 else 2000), month, day)
