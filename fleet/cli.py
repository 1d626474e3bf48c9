"""The ``fleet`` command: one entry point, one sub-command per component.

Each component contributes its commands through ``register(app, groups)``, declared as
an entry point of the group ``fleet.commands`` in pyproject.toml (``broker =
"broker.cli:register"``, ...); ``groups`` holds the shared command groups (``device``,
``db``, ``bench``, ``report``, ``token``) so that, e.g., the broker adds ``fleet device
add`` and the firmware stub adds ``fleet device run``. ``fleet`` itself imports no
component: it loads what is installed, and a component that does not load stops the
command with one line naming it (nothing is skipped). Components register in the order
of their names.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Final

import typer

from fleet.settings import SettingsError

__all__ = ["ENTRY_POINT_GROUP", "ComponentError", "build_app", "main"]  # and ``app``

ENTRY_POINT_GROUP: Final = "fleet.commands"

Register = Callable[[typer.Typer, dict[str, typer.Typer]], None]


class ComponentError(RuntimeError):
    """A declared component's commands could not be loaded (``name``, ``target``)."""

    def __init__(self, message: str, name: str = "", target: str = "") -> None:
        super().__init__(message)
        self.name = name
        self.target = target


def _load(ep: EntryPoint) -> Register:
    try:
        register: Register = ep.load()
    except (ImportError, AttributeError) as exc:
        raise ComponentError(
            f"the {ep.name} commands ({ep.value}) cannot be loaded: {exc}", ep.name, ep.value
        ) from exc
    return register


def build_app() -> typer.Typer:
    """The ``fleet`` app with the commands of every installed component."""
    components = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)
    if not components:
        raise ComponentError(
            f"no commands are installed (entry points {ENTRY_POINT_GROUP!r}): "
            "install the project, e.g. `pip install -e .`"
        )
    app = typer.Typer(
        name="fleet",
        help="Makassar pete-pete telemetry: broker, ingest, API, simulator and reports.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    groups = {
        "device": typer.Typer(help="Device credentials and the reference device agent."),
        "db": typer.Typer(help="Database schema and the embedded PostgreSQL."),
        "bench": typer.Typer(help="Benchmarks that print their figures."),
        "report": typer.Typer(help="Planner reports (headways, congestion, service)."),
        "token": typer.Typer(help="API tokens for operators and planners."),
    }
    for ep in components:
        _load(ep)(app, groups)
    for name, group in groups.items():
        if group.registered_commands or group.registered_groups:
            app.add_typer(group, name=name, no_args_is_help=True)
    return app


@functools.cache
def _app() -> typer.Typer:
    return build_app()


def __getattr__(name: str) -> typer.Typer:
    # ``fleet.cli.app`` is built on first use, so that ``main`` can report a component
    # that does not load as one line instead of a traceback at import
    if name == "app":
        return _app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Entry point: human-readable errors for the failures an operator can fix."""
    try:
        app = _app()
    except ComponentError as exc:
        sys.stderr.write(f"fleet: {exc}\n")
        sys.exit(2)
    try:
        app()
    except SettingsError as exc:
        logging.getLogger("fleet").error("%s", exc)
        sys.stderr.write(f"fleet: {exc}\n")
        sys.exit(2)


if __name__ == "__main__":
    main()
