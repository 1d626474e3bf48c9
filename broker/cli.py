"""``fleet broker`` and ``fleet device add|list|remove``."""

from __future__ import annotations

import contextlib
import secrets
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import typer

from broker.dynsec import ADMIN_USER, Accounts, ControlChannel, CredentialError, DynsecFile
from broker.runner import BrokerError, BrokerLayout, MosquittoBroker, TlsListener
from broker.tls import ensure_local_tls
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
        tls_cert: Path = typer.Option(
            None, help="Server certificate for the devices' TLS listener (FLEET_BROKER_TLS_CERT)."
        ),
        tls_key: Path = typer.Option(None, help="Its private key (FLEET_BROKER_TLS_KEY)."),
        tls_port: int = typer.Option(None, help="TLS listener port (default 8883)."),
        tls_local_ca: bool = typer.Option(
            False,
            "--tls-local-ca",
            help="Make a local CA and server certificate in the data dir (give devices "
            "<data-dir>/broker/tls/ca.crt).",
        ),
    ) -> None:
        """Run Mosquitto with the project's config until interrupted.

        Services connect on the plaintext listener (loopback by default); devices on the
        TLS listener when a certificate is given (or made with --tls-local-ca).
        """
        s = load(BrokerSettings)
        logs.configure(s.log_level, s.log_format)
        root = data_dir or s.data_dir
        cert, key = tls_cert or s.broker_tls_cert, tls_key or s.broker_tls_key
        if tls_local_ca:
            made = ensure_local_tls(BrokerLayout(root).root / "tls")
            cert, key = made.certfile, made.keyfile
        if (cert is None) != (key is None):
            _fail("TLS needs both a certificate and its key (--tls-cert and --tls-key)")
        tls = None
        if cert is not None and key is not None:
            for path in (cert, key):
                if not path.is_file():
                    _fail(f"TLS file {path} does not exist")
            tls = TlsListener(tls_port or s.broker_tls_port, cert, key, s.broker_tls_bind)
        broker = MosquittoBroker(
            root, port=port or s.broker_port, bind=bind or s.broker_bind, tls=tls
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
            f"mosquitto listening on {broker.bind}:{broker.port}"
            + (f" and TLS {tls.bind}:{tls.port}" if tls else "")
            + f"; config {broker.layout.config}"
        )
        code = broker.wait()
        sys.exit(0 if stopping else code)

    @contextlib.contextmanager
    def _accounts(data_dir: Path | None) -> Iterator[Accounts]:
        """The broker on FLEET_MQTT_HOST when FLEET_MQTT_ADMIN_PASSWORD is set (production),
        else the local one of the data dir (running or not)."""
        s = load(CommonSettings)
        try:
            if s.mqtt_admin_password:
                control = ControlChannel(s.mqtt_host, s.mqtt_port, s.mqtt_admin_password)
                try:
                    yield Accounts(None, control)
                finally:
                    control.close()
            else:
                with BrokerLayout(data_dir or s.data_dir).accounts() as accounts:
                    yield accounts
        except CredentialError as exc:
            _fail(str(exc))

    @device.command("init")
    def device_init(
        accounts_file: Path = typer.Option(
            ..., help="The broker's dynamic-security file (compose: in the broker's data volume)."
        ),
        ingest_password: str = typer.Option(..., envvar="FLEET_INGEST_MQTT_PASSWORD"),
        api_password: str = typer.Option(..., envvar="FLEET_API_MQTT_PASSWORD"),
        admin_password: str = typer.Option(..., envvar="FLEET_MQTT_ADMIN_PASSWORD"),
        gateway_password: str = typer.Option(None, envvar="FLEET_GATEWAY_MQTT_PASSWORD"),
    ) -> None:
        """Write the service accounts and roles (broker/roles.json) into a broker's accounts
        file before its first start; devices already in it are kept. Idempotent."""
        passwords = {
            "svc-ingest": ingest_password,
            "svc-api": api_password,
            ADMIN_USER: admin_password,
            "svc-gateway": gateway_password or secrets.token_urlsafe(18),
        }
        try:
            DynsecFile(accounts_file).ensure_services(passwords)
        except (CredentialError, OSError) as exc:
            _fail(f"cannot write {accounts_file}: {exc}")
        typer.echo(f"service accounts and roles written to {accounts_file}")

    @device.command("add")
    def device_add(
        vehicle_id: str,
        password: str = typer.Option(None, help="Use this password instead of generating one."),
        data_dir: Path = typer.Option(None, help="State directory (default FLEET_DATA_DIR)."),
    ) -> None:
        """Create MQTT credentials for a device; prints the password once.

        The account works at once on a running broker (its dynamic-security plugin takes
        it over the control topic); on a stopped local one from its next start.
        """
        with _accounts(data_dir) as accounts:
            try:
                secret = accounts.add(vehicle_id, password)
            except CredentialError as exc:
                _fail(str(exc))
        typer.echo(f"device {vehicle_id} created; MQTT username and client id {vehicle_id}")
        typer.echo(f"password (shown once): {secret}")

    @device.command("list")
    def device_list(data_dir: Path = typer.Option(None)) -> None:
        """List device usernames (service users svc-* are not devices)."""
        with _accounts(data_dir) as accounts:
            devices = accounts.devices()
        for vid in devices:
            typer.echo(vid)

    @device.command("remove")
    def device_remove(vehicle_id: str, data_dir: Path = typer.Option(None)) -> None:
        """Delete a device's account; a running broker disconnects it at once."""
        with _accounts(data_dir) as accounts:
            removed = accounts.remove(vehicle_id)
        if not removed:
            _fail(f"no device {vehicle_id!r}")
        typer.echo(f"device {vehicle_id} removed")
