"""The ``fleet`` command: components from their entry points, a broken one is one line.

And the layout the entry points allow: ``fleet/`` imports no component, no service
imports the developer tools.
"""

from __future__ import annotations

import ast
import tomllib
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import pytest

import fleet.cli as cli

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("api", "ingest", "broker", "tracker_sim", "firmware_stub", "analytics")


def _declared() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared: dict[str, str] = project["entry-points"][cli.ENTRY_POINT_GROUP]
    return declared


def test_every_declared_component_is_installed_and_loads() -> None:
    installed = {ep.name: ep.value for ep in entry_points(group=cli.ENTRY_POINT_GROUP)}
    assert installed == _declared(), "installed metadata is stale: pip install --no-deps -e ."
    for ep in entry_points(group=cli.ENTRY_POINT_GROUP):
        assert callable(ep.load()), ep


def test_a_component_that_does_not_load_stops_the_command_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = EntryPoint("analytics", "analytics.no_such_module:register", cli.ENTRY_POINT_GROUP)
    monkeypatch.setattr(cli, "entry_points", lambda group: [broken])
    with pytest.raises(cli.ComponentError) as exc:
        cli.build_app()
    assert (exc.value.name, exc.value.target) == ("analytics", broken.value)

    def app() -> None:
        raise exc.value

    monkeypatch.setattr(cli, "_app", app)
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        "fleet: the analytics commands (analytics.no_such_module:register) cannot be loaded: "
        "No module named 'analytics.no_such_module'\n"
    )


def test_no_commands_installed_is_an_error_not_an_empty_cli(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cli, "entry_points", lambda group: [])
    with pytest.raises(cli.ComponentError, match="no commands are installed"):
        cli.build_app()


def _imported_packages(package: str) -> set[tuple[str, str]]:
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            found.update((str(path.relative_to(ROOT)), n.split(".")[0]) for n in names)
    return found


def test_the_shared_core_imports_no_component() -> None:
    bad = {(f, p) for f, p in _imported_packages("fleet") if p in (*SERVICES, "devtools")}
    assert not bad


@pytest.mark.parametrize("service", SERVICES)
def test_no_service_imports_the_developer_tools(service: str) -> None:
    assert not {(f, p) for f, p in _imported_packages(service) if p == "devtools"}
