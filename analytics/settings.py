"""Analytics settings (``FLEET_ANALYTICS_*``), validated once at start-up."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from analytics.passages import DetectionParams

__all__ = ["AnalyticsSettings", "parse_hours"]


def parse_hours(spec: str) -> frozenset[int]:
    """``"5-6,10-14,20"`` → {5, 6, 10, 11, 12, 13, 14, 20} (local hours of day, inclusive)."""
    hours: set[int] = set()
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        lo_s, _, hi_s = part.partition("-")
        lo, hi = int(lo_s), int(hi_s or lo_s)
        if not (0 <= lo <= hi <= 23):
            raise ValueError(f"hour range {part!r} must be within 0-23, low to high")
        hours.update(range(lo, hi + 1))
    return frozenset(hours)


class AnalyticsSettings(BaseSettings):
    """Passage detection, rollups and alert thresholds."""

    model_config = SettingsConfigDict(env_prefix="FLEET_ANALYTICS_", extra="ignore")

    routes_path: Path | None = Field(
        default=None, description="Routes GeoJSON; default: the bundled Makassar routes."
    )
    checkpoint_spacing_m: float = Field(default=400.0, gt=0)
    interval_s: float = Field(default=5.0, gt=0, description="Seconds between loop cycles.")
    overlap_s: float = Field(
        default=30.0,
        ge=0,
        description="Re-read rows that arrived this long before the watermark (rows of "
        "transactions still open at the previous cycle).",
    )
    initial_lookback_s: float = Field(default=3600.0, ge=0)
    max_offset_m: float = Field(default=60.0, gt=0)
    hysteresis_m: float = Field(default=45.0, gt=0)
    max_gap_s: float = Field(default=300.0, gt=0)
    max_traversal_s: float = Field(default=1800.0, gt=0)
    area_refresh_s: float = Field(
        default=30.0, ge=0, description="Seconds between H3 area-speed refreshes (0: every cycle)."
    )
    h3_resolution: int = Field(default=9, ge=0, le=15)
    timezone: str = "Asia/Makassar"
    offpeak_hours: str = Field(
        default="5,10-14,20-22", description="Local hours whose speeds define free flow."
    )
    freeflow_lookback_days: int = Field(default=28, ge=1)
    bunching_factor: float = Field(default=0.33, gt=0)
    bunching_distance_m: float = Field(default=150.0, ge=0)
    gap_factor: float = Field(default=2.0, gt=1)
    stopped_minutes: float = Field(default=5.0, gt=0)
    stopped_radius_m: float = Field(default=100.0, gt=0)
    terminal_radius_m: float = Field(default=300.0, ge=0)
    offline_minutes: float = Field(default=10.0, gt=0)
    incident_clear_s: float = Field(
        default=120.0,
        ge=0,
        description="An incident ends only after its condition stayed clear this long, so a "
        "headway flickering at the threshold is one incident (0: end at once).",
    )

    @field_validator("offpeak_hours")
    @classmethod
    def _hours_parse(cls, v: str) -> str:
        parse_hours(v)
        return v

    @property
    def offpeak(self) -> frozenset[int]:
        return parse_hours(self.offpeak_hours)

    @property
    def detection(self) -> DetectionParams:
        return DetectionParams(
            max_offset_m=self.max_offset_m,
            hysteresis_m=self.hysteresis_m,
            max_gap_s=self.max_gap_s,
        )
