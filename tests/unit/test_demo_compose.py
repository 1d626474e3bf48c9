"""compose.yaml and the Dockerfile, checked against the code (no Docker engine runs here).

What can be checked without running compose: the structure (services, images, health
checks, profiles), that required variables fail fast with a message (by interpolating
the file the way compose does), that every ``FLEET_*`` variable a service gets is a
setting that service reads, that every command exists in the ``fleet`` CLI, and that the
broker config's paths match the mounts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from api.web_assets import LEAFLET_VERSION
from fleet.cli import app
from fleet.settings import ApiSettings, CommonSettings, IngestSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"

_VAR = re.compile(r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})")


class MissingVariableError(Exception):
    pass


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution: ${V}, ${V:-default}, ${V-default}, ${V:?err}, $$."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group("name"), m.group("op"), m.group("arg")
        value = env.get(name)
        if op in (":?", "?") and (value is None or (op == ":?" and value == "")):
            raise MissingVariableError(f"required variable {name} is missing a value: {arg}")
        if op in (":-", "-") and (value is None or (op == ":-" and value == "")):
            return arg
        return value or ""

    return _VAR.sub(sub, text)


REQUIRED_ENV = {
    "POSTGRES_PASSWORD": "pg-secret",
    "FLEET_MQTT_TLS_DIR": "/srv/fleet/tls",
    "FLEET_MQTT_ADMIN_PASSWORD": "admin-secret",
    "FLEET_INGEST_MQTT_PASSWORD": "ingest-secret",
    "FLEET_API_MQTT_PASSWORD": "api-secret",
}


def load_compose(env: dict[str, str]) -> Any:
    """Parse, then interpolate every string (as compose does: comments are not interpolated)."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, str):
            return interpolate(node, env)
        return node

    return walk(yaml.safe_load(COMPOSE.read_text()))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose(REQUIRED_ENV)  # type: ignore[no-any-return]


def test_every_required_variable_fails_fast_with_a_message() -> None:
    for missing in REQUIRED_ENV:
        env = {k: v for k, v in REQUIRED_ENV.items() if k != missing}
        with pytest.raises(MissingVariableError, match=missing) as err:
            load_compose(env)
        assert "set " + missing in str(err.value)  # the message says what to set


def test_services_images_and_profiles(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"db", "broker-init", "mosquitto", "migrate", "ingest", "api", "sim"}
    assert services["db"]["image"].startswith("timescale/timescaledb:")
    assert "pg17" in services["db"]["image"] or "pg18" in services["db"]["image"]
    assert services["mosquitto"]["image"] == "eclipse-mosquitto:2"
    for name in ("broker-init", "migrate", "ingest", "api", "sim"):
        assert services[name]["build"]["dockerfile"] == "Dockerfile"
        assert services[name]["image"].startswith("makassar-fleet:")
    assert services["sim"]["profiles"] == ["sim"]
    assert all("profiles" not in s for n, s in services.items() if n != "sim")


def test_long_running_services_have_health_checks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("db", "mosquitto", "ingest", "api"):
        check = services[name]["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert check["interval"] and check["retries"] >= 3, name
    api_env = services["api"]["environment"]
    assert f":{api_env['FLEET_API_PORT']}/readyz" in " ".join(
        services["api"]["healthcheck"]["test"]
    )
    ingest_env = services["ingest"]["environment"]
    assert f":{ingest_env['FLEET_METRICS_PORT']}/healthz" in " ".join(
        services["ingest"]["healthcheck"]["test"]
    )


def test_start_order_waits_for_health_and_migrations(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    for name in ("ingest", "api"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert deps["mosquitto"]["condition"] == "service_healthy"


def _setting_names(cls: type[CommonSettings]) -> set[str]:
    return {"FLEET_" + name.upper() for name in cls.model_fields}


@pytest.mark.parametrize(
    ("service", "settings", "mqtt_user"),
    [
        ("migrate", CommonSettings, None),
        ("ingest", IngestSettings, "svc-ingest"),
        ("api", ApiSettings, "svc-api"),
        ("sim", CommonSettings, "svc-gateway"),
    ],
)
def test_environment_matches_the_settings_the_code_reads(
    compose: dict[str, Any], service: str, settings: type[CommonSettings], mqtt_user: str | None
) -> None:
    env = compose["services"][service]["environment"]
    names = {k for k in env if k.startswith("FLEET_")}
    if service != "sim":  # the simulator has options of its own; it reads the common ones
        unknown = names - _setting_names(settings)
        assert not unknown, f"{service} gets variables its settings do not read: {unknown}"
    assert env["FLEET_DSN"].startswith("postgresql://fleet:pg-secret@db:5432/fleet")
    assert env["FLEET_MQTT_HOST"] == "mosquitto"
    assert env["FLEET_MQTT_PORT"] == "1883"
    if mqtt_user:
        assert env["FLEET_MQTT_USERNAME"] == mqtt_user


def test_commands_exist_in_the_fleet_cli(compose: dict[str, Any]) -> None:
    runner = CliRunner()
    for name, service in compose["services"].items():
        command = service.get("command")
        if command is None:
            continue
        assert command[0] == "fleet", name
        path: list[str] = []
        for word in command[1:]:
            if word.startswith("-"):
                break
            path.append(word)
        options = [a for a in command if a.startswith("--")]
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, f"{name}: `fleet {' '.join(path)}` is not a command"
        help_text = re.sub(r"\s+", " ", result.output)
        for option in options:
            assert option in help_text, f"{name}: `fleet {' '.join(path)}` has no {option}"


def test_mosquitto_mounts_match_the_broker_config(compose: dict[str, Any]) -> None:
    volumes = compose["services"]["mosquitto"]["volumes"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in volumes}
    conf = (ROOT / "broker" / "mosquitto.conf").read_text()
    settings = dict(
        line.split(" ", 1) for line in conf.splitlines() if line and not line.startswith("#")
    )
    assert mounts["/mosquitto/config/mosquitto.conf"] == "./broker/mosquitto.conf"
    data = settings["persistence_location"].rstrip("/")
    assert mounts[data] == "mosquitto-data"
    # the accounts file is in the data volume, written there by broker-init before the start
    accounts = settings["plugin_opt_config_file"]
    assert accounts.startswith(data + "/")
    init = compose["services"]["broker-init"]
    assert init["command"][-1] == accounts and "mosquitto-data:" + data in init["volumes"]
    assert compose["services"]["mosquitto"]["depends_on"]["broker-init"]["condition"] == (
        "service_completed_successfully"
    )
    # certificate and key where the TLS listener reads them
    certs = {Path(settings["certfile"]).parent, Path(settings["keyfile"]).parent}
    assert {str(c) for c in certs} <= set(mounts)
    for source in mounts.values():
        if source.startswith("./"):
            assert (ROOT / source).is_file(), source
    # only TLS is published: the plaintext listener stays on the compose network
    assert compose["services"]["mosquitto"]["ports"] == ["8883:8883"]


def test_dockerfile_ships_the_same_map_library_as_make_web_assets() -> None:
    text = DOCKERFILE.read_text()
    assert f"ARG LEAFLET_VERSION={LEAFLET_VERSION}" in text
    assert 'npm pack "leaflet@${LEAFLET_VERSION}"' in text
    assert "./api/static/vendor" in text
    for package in ("fleet", "broker", "ingest", "api", "tracker_sim", "firmware_stub"):
        assert f"COPY {package} ./{package}" in text
