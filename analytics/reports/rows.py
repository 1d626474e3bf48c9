"""What a report's row builder receives, and how it writes its figures."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from analytics.congestion import FreeFlow
from analytics.reports.params import ReportParams

__all__ = ["ReportInput", "figure"]


@dataclass(frozen=True)
class ReportInput:
    """A report's fetched rows (every time piece, in order) and what it was asked for."""

    rows: Sequence[Sequence[Any]]
    params: ReportParams
    freeflow: FreeFlow = field(default_factory=dict)  # only for reports that read it


def figure(x: float | None) -> float | None:
    """A figure as reports show it: 4 decimals, None when unknown (None, NaN, ±inf)."""
    return None if x is None or not math.isfinite(x) else round(x, 4)
