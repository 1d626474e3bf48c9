"""``fleet broker`` and ``fleet device add|list|remove``."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType

import typer

from broker.credentials import CredentialError
from broker.runner import BrokerError, BrokerLayout, MosquittoBroker, reload_running_broker
from fleet import logs
from fleet.settings import BrokerSettings, CommonSettings, load


def _fail(message: str) -> None:
    typer.echo(f"fleet: {message}", err=True)
    raise typer.Exit(2)


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    device = groups["device"]

    @app.command("broker")
    def broker_cmd(
        port: int = typer.Option(None, help="Listener port (default FLEET_BROKER_PORT or 1883)."),
        bind: str = typer.Option(None, help="Listener address (default 127.0.0.1)."),
        data_dir: Path = typer.Option(None, help="State directory (default FLEET_DATA_DIR)."),
    ) -> None:
        """Run Mosquitto with the project's config until interrupted."""
        s = load(BrokerSettings)
        logs.configure(s.log_level, s.log_format)
        broker = MosquittoBroker(
            data_dir or s.data_dir, port=port or s.broker_port, bind=bind or s.broker_bind
        )
        stopping = started = False

        def _stop(signum: int, frame: FrameType | None) -> None:
            # Only signal Mosquitto here: the main thread is inside wait() (which holds
            # the child's wait lock) and returns when Mosquitto has saved and exited.
            # During start-up, only note it: start() must finish first.
            nonlocal stopping
            stopping = True
            if started:
                broker.terminate()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        try:
            broker.start()
        except BrokerError as exc:
            _fail(str(exc))
        started = True
        if stopping:  # a signal arrived while Mosquitto was starting
            broker.terminate()
        typer.echo(
            f"mosquitto listening on {broker.bind}:{broker.port}; config {broker.layout.config}"
        )
        code = broker.wait()
        sys.exit(0 if stopping else code)

    @device.command("add")
    def device_add(
        vehicle_id: str,
        password: str = typer.Option(None, help="Use this password instead of generating one."),
        data_dir: Path = typer.Option(None, help="State directory (default FLEET_DATA_DIR)."),
    ) -> None:
        """Create MQTT credentials for a device; prints the password once."""
        lay = BrokerLayout(data_dir or load(CommonSettings).data_dir)
        try:
            secret = lay.passwords().add_device(vehicle_id, password)
        except CredentialError as exc:
            _fail(str(exc))
        reload_running_broker(lay.root.parent)
        typer.echo(f"device {vehicle_id} created; MQTT username {vehicle_id}")
        typer.echo(f"password (shown once): {secret}")

    @device.command("list")
    def device_list(data_dir: Path = typer.Option(None)) -> None:
        """List device usernames (service users svc-* are not devices)."""
        lay = BrokerLayout(data_dir or load(CommonSettings).data_dir)
        for user in lay.passwords().users():
            if not user.startswith("svc-"):
                typer.echo(user)

    @device.command("remove")
    def device_remove(vehicle_id: str, data_dir: Path = typer.Option(None)) -> None:
        """Delete a device's credentials; it cannot connect after the broker reloads."""
        lay = BrokerLayout(data_dir or load(CommonSettings).data_dir)
        if not lay.passwords().remove(vehicle_id):
            _fail(f"no device {vehicle_id!r}")
        reload_running_broker(lay.root.parent)
        typer.echo(f"device {vehicle_id} removed")
