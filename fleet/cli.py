"""The ``fleet`` command: one entry point, one sub-command per component.

Each component contributes its commands through ``register(app, groups)`` in its own
``cli`` module, listed in ``COMPONENTS``; ``groups`` holds the shared command groups
(``device``, ``db``, ``bench``, ``report``, ``token``) so that, e.g., the broker adds
``fleet device add`` and the firmware stub adds ``fleet device run``.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Final

import typer

from fleet.settings import SettingsError

__all__ = ["app", "main"]

COMPONENTS: Final = (
    "broker.cli",
    "fleet.storage.cli",
    "ingest.cli",
    "tracker_sim.cli",
    "firmware_stub.cli",
    "api.cli",
    "analytics.cli",
    "devtools.cli",
)

app = typer.Typer(
    name="fleet",
    help="Makassar pete-pete telemetry: broker, ingest, API, simulator and reports.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

GROUPS: Final = {
    "device": typer.Typer(help="Device credentials and the reference device agent."),
    "db": typer.Typer(help="Database schema and the embedded PostgreSQL."),
    "bench": typer.Typer(help="Benchmarks that print their figures."),
    "report": typer.Typer(help="Planner reports (headways, congestion, service)."),
    "token": typer.Typer(help="API tokens for operators and planners."),
}


def _register_components() -> None:
    for module_name in COMPONENTS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # component not built yet, or its package not shipped (devtools is not in
            # the service image)
            if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
                continue
            raise
        module.register(app, GROUPS)
    for name, group in GROUPS.items():
        if group.registered_commands or group.registered_groups:
            app.add_typer(group, name=name, no_args_is_help=True)


_register_components()


def main() -> None:
    """Entry point: human-readable errors for the failures an operator can fix."""
    try:
        app()
    except SettingsError as exc:
        logging.getLogger("fleet").error("%s", exc)
        sys.stderr.write(f"fleet: {exc}\n")
        sys.exit(2)


if __name__ == "__main__":
    main()
