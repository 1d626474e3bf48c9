"""Shared core of the Makassar fleet telemetry platform.

What every component shares lives here and nowhere else: the wire contract
(:mod:`fleet.contract`), settings (:mod:`fleet.settings`), geometry
(:mod:`fleet.geometry`), the routes (:mod:`fleet.routes`), structured logging
(:mod:`fleet.logs`) and the storage schema (:mod:`fleet.storage`).  The lean MQTT 5
client the hot paths use is a library of its own (:mod:`mqtt5`).
"""

__version__ = "0.1.0"
