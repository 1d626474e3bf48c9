"""Per-client live filters: route codes and a bounding box, parsed from client messages."""

from __future__ import annotations

import math
from dataclasses import dataclass

import msgspec

from api.live.frames import Vehicle

__all__ = ["FilterError", "LiveFilter", "parse_filter_message"]

BBox = tuple[float, float, float, float]  # minLon, minLat, maxLon, maxLat


class FilterError(ValueError):
    """A client message that is not a valid filter; the text is sent back to the client."""


class _FilterMessage(msgspec.Struct):
    type: str
    routes: list[str] | None = None
    bbox: list[float] | None = None


_decoder = msgspec.json.Decoder(_FilterMessage)


@dataclass(frozen=True, slots=True)
class LiveFilter:
    """Which vans a client sees. Hashable: clients with equal filters share frames."""

    routes: frozenset[str] | None = None
    bbox: BBox | None = None

    @property
    def is_everything(self) -> bool:
        return self.routes is None and self.bbox is None

    def in_bbox(self, lat: float, lon: float) -> bool:
        if self.bbox is None:
            return True
        min_lon, min_lat, max_lon, max_lat = self.bbox
        return min_lon <= lon <= max_lon and min_lat <= lat <= max_lat

    def matches(self, v: Vehicle) -> bool:
        if self.routes is not None and v.route not in self.routes:
            return False
        return self.in_bbox(v.lat, v.lon)

    def matches_route(self, route: str | None) -> bool:
        return self.routes is None or route in self.routes


def parse_filter_message(raw: str | bytes) -> LiveFilter:
    """``{"type": "filter", "routes": [...] | null, "bbox": [...] | null}`` → LiveFilter."""
    try:
        msg = _decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise FilterError(f"not a filter message: {exc}") from None
    if msg.type != "filter":
        raise FilterError(f"unknown message type {msg.type!r}; the only one is 'filter'")
    routes = None if msg.routes is None else frozenset(msg.routes)
    bbox: BBox | None = None
    if msg.bbox is not None:
        if len(msg.bbox) != 4 or not all(math.isfinite(x) for x in msg.bbox):
            raise FilterError("bbox must be [minLon, minLat, maxLon, maxLat] (finite numbers)")
        min_lon, min_lat, max_lon, max_lat = msg.bbox
        if min_lon > max_lon or min_lat > max_lat:
            raise FilterError("bbox must be [minLon, minLat, maxLon, maxLat] with min <= max")
        bbox = (min_lon, min_lat, max_lon, max_lat)
    return LiveFilter(routes, bbox)
