"""The reference device agent: NMEA 0183 in, store-and-forward queue, MQTT out.

``fleet device run --nmea FILE|PORT|-`` runs it; docs/firmware.md explains it for a
tracker maker.
"""

from firmware_stub.agent import AgentConfig, DeviceAgent, RunSummary
from firmware_stub.fix_queue import FixQueue, QueueError
from firmware_stub.gps_fixes import FixAssembler, GpsFix, IntervalSampler
from firmware_stub.nmea import Gga, NmeaError, Rmc, parse_sentence
from firmware_stub.sources import LineSource, ReplayPacer, SourceError, open_source
from firmware_stub.uploader import UplinkConfig, Uploader

__all__ = [
    "AgentConfig",
    "DeviceAgent",
    "FixAssembler",
    "FixQueue",
    "Gga",
    "GpsFix",
    "IntervalSampler",
    "LineSource",
    "NmeaError",
    "QueueError",
    "ReplayPacer",
    "Rmc",
    "RunSummary",
    "SourceError",
    "UplinkConfig",
    "Uploader",
    "open_source",
    "parse_sentence",
]
