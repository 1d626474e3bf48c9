"""Headway statistics from successive checkpoint passages.

Formulas (sources in ``docs/analytics.md``):

* headway ``h_i = t_i − t_{i−1}`` between successive vans passing the same checkpoint in
  the same direction;
* mean ``h̄``, median, population standard deviation ``σ`` and ``Cv_h = σ / h̄``
  (TCQSM 3rd ed., ch. 5: headway adherence);
* average wait of randomly arriving passengers ``AWT = Σh² / (2 Σh)``
  (Welding 1957; Osuna & Newell 1972);
* excess wait ``EWT = AWT − H/2`` with a target headway ``H``, otherwise the
  irregularity wait ``AWT − h̄/2`` (Furth & Muller 2006; TfL's EWT);
* bunched share ``h ≤ 0.5·ref`` and gapped share ``h ≥ 1.5·ref`` with ``ref = H`` or
  the window's median headway;
* level of service from ``Cv_h`` with the TCQSM bands A ≤ 0.21, B ≤ 0.30, C ≤ 0.39,
  D ≤ 0.52, E ≤ 0.74, F above.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "BUNCHED_FACTOR",
    "GAPPED_FACTOR",
    "LOS_BANDS",
    "HeadwayStats",
    "headway_stats",
    "headways_from_passages",
    "level_of_service",
]

FloatArray = npt.NDArray[np.float64]

#: TCQSM 3rd ed. (ch. 5, headway adherence) upper bounds of Cv_h for LOS A..E; F above.
LOS_BANDS: Final = (("A", 0.21), ("B", 0.30), ("C", 0.39), ("D", 0.52), ("E", 0.74))
BUNCHED_FACTOR: Final = 0.5
GAPPED_FACTOR: Final = 1.5


def level_of_service(cv: float) -> str:
    """TCQSM headway-adherence LOS letter for a coefficient of variation (bands inclusive)."""
    if not np.isfinite(cv):
        return "-"
    for letter, upper in LOS_BANDS:
        if cv <= upper:
            return letter
    return "F"


@dataclass(frozen=True)
class HeadwayStats:
    """Headway figures for one route/direction/checkpoint (or a set of them) and window."""

    count: int  # number of headways (passages − 1 per checkpoint)
    mean_s: float
    median_s: float
    std_s: float
    cv: float
    awt_s: float
    ewt_s: float
    bunched_share: float
    gapped_share: float
    reference_s: float
    target_s: float | None
    los: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def headway_stats(headways_s: npt.ArrayLike, target_s: float | None = None) -> HeadwayStats:
    """Statistics of a set of headways (seconds); NaN figures when there are none."""
    h = np.asarray(headways_s, dtype=np.float64)
    h = h[np.isfinite(h) & (h > 0)]
    nan = float("nan")
    if h.size == 0:
        return HeadwayStats(0, nan, nan, nan, nan, nan, nan, nan, nan, nan, target_s, "-")
    mean = float(h.mean())
    median = float(np.median(h))
    std = float(h.std())  # population σ, as in TCQSM's Cv_h
    cv = std / mean
    awt = float(np.sum(h * h) / (2.0 * np.sum(h)))
    ewt = awt - (target_s / 2.0 if target_s else mean / 2.0)
    reference = float(target_s) if target_s else median
    bunched = float(np.mean(h <= BUNCHED_FACTOR * reference))
    gapped = float(np.mean(h >= GAPPED_FACTOR * reference))
    return HeadwayStats(
        count=int(h.size),
        mean_s=mean,
        median_s=median,
        std_s=std,
        cv=cv,
        awt_s=awt,
        ewt_s=ewt,
        bunched_share=bunched,
        gapped_share=gapped,
        reference_s=reference,
        target_s=target_s,
        los=level_of_service(cv),
    )


def headways_from_passages(
    keys: npt.ArrayLike, ts: npt.ArrayLike
) -> tuple[npt.NDArray[Any], FloatArray, FloatArray]:
    """Headways between successive passages with the same key.

    ``keys`` identifies the (route, direction, checkpoint) stream of each passage (any
    integer code), ``ts`` the passage times in seconds. Returns ``(key, headway_s, at_s)``
    where ``at_s`` is the time of the later passage of each pair, in key-then-time order;
    the first passage of each stream has no headway.
    """
    k = np.asarray(keys)
    t = np.asarray(ts, dtype=np.float64)
    order = np.lexsort((t, k))
    k, t = k[order], t[order]
    same = k[1:] == k[:-1]
    return k[1:][same], (t[1:] - t[:-1])[same], t[1:][same]
