"""Routes, prepared route lines and settings, loaded once per process (API, CLI)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from analytics.passages import RouteLine
from analytics.settings import AnalyticsSettings
from fleet.routes import Route, load_routes
from fleet.settings import load

__all__ = ["AnalyticsContext", "analytics_context"]


@dataclass(frozen=True)
class AnalyticsContext:
    settings: AnalyticsSettings
    routes: dict[str, Route]
    lines: dict[str, RouteLine]

    @property
    def targets(self) -> dict[str, float | None]:
        return {code: r.target_headway_s for code, r in self.routes.items()}


@cache
def analytics_context() -> AnalyticsContext:
    """Settings from ``FLEET_ANALYTICS_*`` and the routes file they name."""
    settings = load(AnalyticsSettings)
    routes = load_routes(settings.routes_path, settings.checkpoint_spacing_m)
    lines = {code: RouteLine(r, settings.detection) for code, r in routes.items()}
    return AnalyticsContext(settings, routes, lines)
