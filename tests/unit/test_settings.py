"""fleet.settings: one module, one naming scheme, old names with a warning, MQTT hints."""

from __future__ import annotations

import pytest

from fleet.settings import ApiSettings, IngestSettings, SettingsError, load, mqtt_hint
from mqtt5 import (
    MqttConnectionLostError,
    MqttConnectRefusedError,
    MqttProtocolError,
    MqttSubscribeRefusedError,
)


def test_ingest_and_api_read_the_client_id_from_the_same_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLEET_MQTT_CLIENT_ID", "worker-7")
    assert load(IngestSettings).mqtt_client_id == "worker-7"
    assert load(ApiSettings).mqtt_client_id == "worker-7"


def test_the_old_ingest_client_id_still_works_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FLEET_MQTT_CLIENT_ID", raising=False)
    monkeypatch.setenv("FLEET_CLIENT_ID", "old-name")
    with pytest.warns(FutureWarning, match="rename it FLEET_MQTT_CLIENT_ID"):
        assert load(IngestSettings).mqtt_client_id == "old-name"
    monkeypatch.setenv("FLEET_MQTT_CLIENT_ID", "new-name")
    with pytest.warns(FutureWarning, match="FLEET_CLIENT_ID is ignored"):
        assert load(IngestSettings).mqtt_client_id == "new-name"


def test_an_invalid_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_BATCH_MAX_FIXES", "0")
    with pytest.raises(SettingsError, match="FLEET_BATCH_MAX_FIXES"):
        load(IngestSettings)


def test_mqtt_hints_follow_the_exception_and_its_reason_code() -> None:
    assert "FLEET_MQTT_PASSWORD" in (mqtt_hint(MqttConnectRefusedError(0x86)) or "")
    assert "FLEET_MQTT_CLIENT_ID" in (mqtt_hint(MqttConnectRefusedError(0x85)) or "")
    taken_over = MqttConnectionLostError("broker disconnected us", reason_code=0x8E)
    assert "FLEET_MQTT_CLIENT_ID" in (mqtt_hint(taken_over) or "")
    assert "FLEET_MQTT_HOST" in (mqtt_hint(ConnectionRefusedError(111, "refused")) or "")
    assert "role" in (mqtt_hint(MqttSubscribeRefusedError({"fleet/+/cmd": 0x87})) or "")
    assert mqtt_hint(MqttConnectionLostError("broker closed the connection")) is None
    assert mqtt_hint(MqttProtocolError("malformed remaining length")) is None
