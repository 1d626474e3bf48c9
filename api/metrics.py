"""Prometheus metrics of one API process (its own registry, so apps can coexist in tests)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

__all__ = ["ApiMetrics"]


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.ws_clients = Gauge(
            "fleet_api_ws_clients", "Live websocket clients connected.", registry=r
        )
        self.frames_sent = Counter(
            "fleet_api_ws_frames_sent", "Frames sent to live websocket clients.", registry=r
        )
        self.dropped_clients = Counter(
            "fleet_api_ws_dropped_clients",
            "Live clients closed with 1013 because they did not keep up.",
            registry=r,
        )
        self.fixes_received = Counter(
            "fleet_api_fixes_received", "Valid fixes received on the live MQTT feed.", registry=r
        )
        self.fixes_rejected = Counter(
            "fleet_api_fixes_rejected", "Invalid fixes seen on the live MQTT feed.", registry=r
        )
        self.late_fixes = Counter(
            "fleet_api_late_fixes",
            "Telemetry messages (a batch counts once) no newer than the van's position.",
            registry=r,
        )
        self.incident_changes_pushed = Counter(
            "fleet_api_incident_changes_pushed",
            "Incident changes (opened, updated, acknowledged, resolved, ended) pushed live.",
            registry=r,
        )
        self.auth_failures = Counter(
            "fleet_api_auth_failures",
            "Failed authentications (a token or session looked up and not found).",
            registry=r,
        )
        self.auth_rate_limited = Counter(
            "fleet_api_auth_rate_limited",
            "Requests refused with 429 (or 4429) after repeated failed authentication.",
            registry=r,
        )
        self.ws_refused_per_token = Counter(
            "fleet_api_ws_refused_per_token",
            "Live connections refused because their token held FLEET_WS_MAX_PER_TOKEN.",
            registry=r,
        )
        self.mqtt_connected = Gauge(
            "fleet_api_mqtt_connected", "1 while the live MQTT feed is connected.", registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
