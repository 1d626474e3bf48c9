"""The behavioural parameters of the fleet model (:class:`SimConfig`)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SimConfig"]


@dataclass(frozen=True)
class SimConfig:
    """Behavioural parameters of the model (defaults: a weekday in Makassar)."""

    free_speed_day_ms: float = 9.0  # cruising for passengers, ≈ 32 km/h
    free_speed_night_ms: float = 12.0  # 22:00-05:00
    peak_slowdown: float = 0.3  # everywhere, at the height of a peak
    driver_speed_sd: float = 0.08  # personal speed factor ~ N(1, sd)
    mood_sd: float = 0.05  # per-second random walk of the speed factor
    accel_ms2: float = 1.2
    min_gap_m: float = 12.0  # a moving van keeps at least this behind the moving van ahead
    stops_per_km: float = 2.0  # at the nominal (even) gap, daytime off-peak
    dwell_mean_s: float = 15.0  # at the nominal gap; grows with the gap
    dwell_min_s: float = 4.0
    layover_min_s: float = 30.0
    layover_mean_s: float = 90.0  # exponential part on top of the minimum
    # A van leaves a terminal no sooner than this share of the route's even headway
    # after the previous one ("ngetem": it waits for passengers the last one left).
    departure_spacing: float = 0.9
    typical_speed_ms: float = 6.0  # to turn the even gap (m) into an even headway (s)
    min_gap_ratio: float = 0.4  # gap / even gap is clipped to [min_gap_ratio, 3]
    stop_rate_exponent: float = 0.5  # stops per km ∝ (gap / even gap) ** this
    dwell_exponent: float = 0.5  # mean dwell ∝ (gap / even gap) ** this
    shadow_gap_m: float = 60.0  # a van this close behind one that stops ...
    shadow_prob: float = 0.7  # ... stops too with this probability, leaving just after it
    bad_fix_prob: float = 0.002
    bad_fix_min_m: float = 80.0
    bad_fix_max_m: float = 600.0
    coverage_loss_per_h: float = 0.4  # per van, when dropout is on
    coverage_loss_min_s: float = 60.0
    coverage_loss_max_s: float = 600.0
    offline_per_h: float = 0.05  # device switched off (last will), when dropout is on
    offline_min_s: float = 300.0
    offline_max_s: float = 1800.0
    max_substep_s: float = 1.0
