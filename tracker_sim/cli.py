"""``fleet sim``: publish a simulated fleet."""

from __future__ import annotations

import datetime as dt
import logging
import signal
import threading
import time
from pathlib import Path
from types import FrameType

import typer

from broker.runner import BrokerLayout
from fleet import logs
from fleet.routes import RoutesError, load_routes
from fleet.settings import CommonSettings, load
from tracker_sim.device_credentials import CredentialsFileError, provision_devices, read_credentials
from tracker_sim.links import Credentials, LinkError
from tracker_sim.runner import SimOptions, run_processes, split_vehicles
from tracker_sim.timeparse import parse_duration, parse_start

log = logging.getLogger(__name__)

MAX_AGE_S = 7 * 86_400  # ingest's default FLEET_MAX_AGE_S


def _fail(message: str) -> None:
    typer.echo(f"fleet sim: {message}", err=True)
    raise typer.Exit(2)


def _vehicle_ids(prefix: str, per_route: dict[str, int]) -> list[str]:
    return [f"{prefix}{code}-{k:03d}" for code, n in per_route.items() for k in range(1, n + 1)]


def _gateway_credentials(
    username: str, password: str | None, s: CommonSettings, data_dir: Path
) -> Credentials:
    if password:
        return Credentials(username, password)
    if s.mqtt_password and s.mqtt_username in (None, username):
        return Credentials(username, s.mqtt_password)
    lay = BrokerLayout(data_dir)
    if lay.service_env.exists():
        creds = lay.service_credentials()
        if username in creds:
            return Credentials(username, creds[username])
    _fail(
        f"no password for {username}: give --password, FLEET_MQTT_PASSWORD, or the "
        f"--data-dir of the local broker ({lay.service_env} not found)"
    )
    raise AssertionError  # unreachable


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    @app.command("sim")
    def sim_cmd(
        vehicles: int = typer.Option(
            None,
            "--vehicles",
            "-n",
            help="Vans in total, spread evenly over the routes (default: 5 per route).",
        ),
        per_route: int = typer.Option(None, help="Vans per route (instead of --vehicles)."),
        routes_only: str = typer.Option(
            None, "--routes", help="Comma-separated route codes to drive (default all)."
        ),
        routes_file: Path = typer.Option(
            None, help="Routes GeoJSON (default: the bundled Makassar routes)."
        ),
        checkpoint_spacing: float = typer.Option(
            400.0, help="Metres between checkpoints (ground truth)."
        ),
        interval: float = typer.Option(
            5.0, help="Seconds between fixes of one van (simulated time)."
        ),
        speedup: float = typer.Option(
            1.0, help="Simulated seconds per wall second (0: as fast as possible)."
        ),
        seed: int = typer.Option(1, help="Random seed: same seed, same fleet."),
        start: str = typer.Option(
            None,
            help="Simulated start: now, HH:MM (WITA), ISO 8601 or epoch ms "
            "(default: now, or early enough that a --speedup run ends now).",
        ),
        duration: str = typer.Option(
            None, help="Simulated time to run, e.g. 3600, 30m, 2h (default: until stopped)."
        ),
        warmup: str = typer.Option(
            "30m",
            help="Simulated time the fleet drives, unpublished, before --start (so bunches "
            "have formed); 0 to start from evenly spaced vans.",
        ),
        truth: Path = typer.Option(
            None, help="Write checkpoint passages (ground truth) to this CSV file."
        ),
        mode: str = typer.Option(
            "device",
            help="device: one connection per van with its own credentials; "
            "gateway: few svc-gateway connections (load).",
        ),
        host: str = typer.Option(None, help="MQTT host (default: FLEET_MQTT_HOST)."),
        port: int = typer.Option(None, help="MQTT port (default: FLEET_MQTT_PORT)."),
        tls_ca: Path = typer.Option(
            None,
            help="Device mode: connect each van over TLS, verifying the broker against this CA "
            "certificate (fleet demo passes <data-dir>/broker/tls/ca.crt).",
        ),
        data_dir: Path = typer.Option(
            None,
            help="State dir of the local broker: device credentials are created there "
            "(default: FLEET_DATA_DIR).",
        ),
        credentials: Path = typer.Option(
            None,
            help="CSV vehicle_id,password of the devices "
            "(default: <data-dir>/sim/device-credentials.csv).",
        ),
        username: str = typer.Option("svc-gateway", help="Gateway mode: MQTT user."),
        password: str = typer.Option(
            None, help="Gateway mode: password (default: FLEET_MQTT_PASSWORD or <data-dir>)."
        ),
        connections: int = typer.Option(2, help="Gateway mode: connections per process."),
        receipts: bool = typer.Option(
            True,
            "--receipts/--no-receipts",
            help="Gateway mode: keep every fix until ingest's storage receipt (fleet/<id>/ack) "
            "covers it, resend it otherwise; --no-receipts: a PUBACK is enough (a server "
            "without receipts).",
        ),
        resend_after: float = typer.Option(
            15.0, help="Gateway mode with receipts: seconds without a receipt before a resend."
        ),
        procs: int = typer.Option(1, help="Processes (each drives a disjoint set of routes)."),
        noise: float = typer.Option(5.0, help="GPS noise, 2-D RMS metres."),
        dropout: bool = typer.Option(
            True,
            "--dropout/--no-dropout",
            help="Coverage losses (backlog batches) and devices switched off.",
        ),
        id_prefix: str = typer.Option("pp-", help="Vehicle ids are <prefix><route>-<nnn>."),
    ) -> None:
        """Drive a simulated pete-pete fleet along the routes and publish its fixes."""
        s = load(CommonSettings)
        logs.configure(s.log_level, s.log_format)
        if mode not in ("device", "gateway"):
            _fail(f"--mode must be device or gateway, not {mode!r}")
        try:
            routes = load_routes(routes_file, checkpoint_spacing)
        except RoutesError as exc:
            _fail(str(exc))
        if routes_only:
            codes = [c.strip() for c in routes_only.split(",") if c.strip()]
            unknown = [c for c in codes if c not in routes]
            if unknown:
                _fail(f"unknown route code(s) {', '.join(unknown)}; known: {', '.join(routes)}")
            routes = {c: routes[c] for c in codes}
        if vehicles is not None and per_route is not None:
            _fail("give --vehicles or --per-route, not both")
        if per_route is not None:
            per = dict.fromkeys(routes, per_route)
        else:
            per = split_vehicles(routes, vehicles if vehicles is not None else 5 * len(routes))
        if sum(per.values()) <= 0:
            _fail("no vans to simulate")
        if interval < 1.0 or speedup < 0:
            _fail("--interval must be ≥ 1 s and --speedup ≥ 0")
        if resend_after <= 0:
            _fail("--resend-after must be > 0 seconds")
        try:
            duration_s = parse_duration(duration) if duration else None
            warmup_s = parse_duration(warmup)
            now = dt.datetime.now(dt.UTC)
            if start is not None:
                start_at = parse_start(start, now)
            elif speedup > 1 or speedup == 0:
                span = duration_s if duration_s is not None else 6 * 3600.0
                ahead = span / speedup if speedup > 0 else 0.0
                start_at = now - dt.timedelta(seconds=span - ahead)
            else:
                start_at = now
        except ValueError as exc:
            _fail(str(exc))
        if start_at > now + dt.timedelta(seconds=1):
            _fail(
                f"--start {start_at.isoformat()} is in the future; "
                "fixes are never stamped ahead of the clock"
            )
        if (now - start_at).total_seconds() > MAX_AGE_S:
            log.warning("start is more than 7 days ago: ingest rejects such fixes as ts_too_old")

        data = data_dir or s.data_dir
        device_passwords: dict[str, str] | None = None
        gateway: Credentials | None = None
        ids = _vehicle_ids(id_prefix, per)
        try:
            if mode == "device":
                creds_file = credentials or (data / "sim" / "device-credentials.csv")
                broker_accounts = BrokerLayout(data).dynsec
                if broker_accounts.exists():  # a local broker: create what is missing
                    device_passwords = provision_devices(data, ids, creds_file)
                elif credentials is None:
                    _fail(
                        f"device mode needs credentials: no local broker accounts file at "
                        f"{broker_accounts} (give the --data-dir of `fleet broker`) and no "
                        "--credentials file"
                    )
                else:
                    known = read_credentials(creds_file)
                    missing = [v for v in ids if v not in known]
                    if missing:
                        _fail(
                            f"{creds_file}: no password for {len(missing)} van(s), "
                            f"e.g. {missing[0]}"
                        )
                    device_passwords = known
            else:
                gateway = _gateway_credentials(username, password, s, data)
        except CredentialsFileError as exc:
            _fail(str(exc))

        opts = SimOptions(
            host=host or s.mqtt_host,
            port=port or s.mqtt_port,
            tls_ca=tls_ca,
            mode="device" if mode == "device" else "gateway",
            vehicles_per_route=per,
            start_ms=int(start_at.timestamp() * 1000),
            report_interval_s=interval,
            speedup=speedup,
            seed=seed,
            duration_s=duration_s,
            warmup_s=warmup_s,
            truth_path=truth,
            noise_m=noise,
            dropout=dropout,
            routes_path=routes_file,
            checkpoint_spacing_m=checkpoint_spacing,
            connections=connections,
            gateway=gateway,
            device_passwords=device_passwords,
            id_prefix=id_prefix,
            receipts=receipts and mode == "gateway",
            resend_after_s=resend_after,
        )
        stop = threading.Event()

        def _stop(signum: int, frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        log.info(
            "simulating",
            extra={
                "vehicles": sum(per.values()),
                "routes": ",".join(per),
                "mode": mode,
                "start": start_at.astimezone(dt.UTC).isoformat(timespec="seconds"),
                "speedup": speedup,
                "broker": f"{opts.host}:{opts.port}",
            },
        )
        t0 = time.monotonic()
        try:
            stats = run_processes(opts, procs, stop)
        except (LinkError, ValueError, RuntimeError) as exc:
            _fail(str(exc))
        typer.echo(
            f"sim done: vehicles={stats.vehicles} sim_s={stats.sim_seconds:.0f} "
            f"wall_s={time.monotonic() - t0:.1f} messages={stats.messages} fixes={stats.fixes} "
            f"acked={stats.fixes_acked} passages={stats.passages}"
        )
        if opts.receipts:
            typer.echo(
                f"sim receipts: generated={stats.fixes_generated} "
                f"confirmed={stats.fixes_confirmed} resent={stats.fixes_resent} "
                f"unconfirmed={stats.fixes_unconfirmed}"
            )
