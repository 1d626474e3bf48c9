"""Live positions: MQTT feed → latest-fix state → per-filter coalesced websocket frames."""

from __future__ import annotations

__all__: list[str] = []
