"""The cyclic garbage collector, tuned for a process that handles many small messages.

Such a process (the ingest worker, a load generator) makes a few containers per message
and keeps none of them. At CPython's default young-generation threshold (700
allocations of tracked objects) the collector ran about a hundred times a second and,
at each older collection, walked every object startup made: 13 % of the ingest worker
at 10,000 fixes/s (``perf``: ``gc_collect_main``, ``visit_decref``,
``visit_reachable``). :func:`tune_gc` freezes what startup made (modules, settings,
connections: never garbage) out of the collector's reach and collects the young
generation less often. Reference cycles are still collected.
"""

from __future__ import annotations

import gc
from typing import Final

__all__ = ["GC_YOUNG_THRESHOLD", "tune_gc"]

GC_YOUNG_THRESHOLD: Final = 20_000


def tune_gc() -> None:
    """Call once, after startup and before the hot loop."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)
