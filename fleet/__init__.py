"""Shared core of the Makassar fleet telemetry platform.

What every component shares lives here and nowhere else: the wire contract
(:mod:`fleet.contract`), settings (:mod:`fleet.settings`), geometry
(:mod:`fleet.geometry`), structured logging (:mod:`fleet.logs`) and the storage
schema (:mod:`fleet.storage`).
"""

__version__ = "0.1.0"
