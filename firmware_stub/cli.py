"""``fleet device run``: the reference device agent."""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType

import typer

from fleet import logs
from fleet.contract import VEHICLE_ID_RE
from fleet.settings import DeviceSettings, load

SAMPLE_LOG = Path(__file__).resolve().parent / "data" / "sample.nmea"


def _fail(message: str) -> None:
    typer.echo(f"fleet: {message}", err=True)
    raise typer.Exit(2)


class _StopRequestedError(Exception):
    """SIGTERM/SIGINT: leave a blocking read of the NMEA source."""


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise _StopRequestedError


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    device = groups["device"]

    @device.command("run")
    def device_run(
        *,
        nmea: str = typer.Option(
            ...,
            help="NMEA source: a log file (replayed), a serial port (/dev/ttyUSB0), "
            f"a FIFO, or - for stdin. A sample log: {SAMPLE_LOG}",
        ),
        vehicle_id: str = typer.Option(
            None, help="Vehicle id = MQTT username (default FLEET_DEVICE_ID/FLEET_MQTT_USERNAME)."
        ),
        password: str = typer.Option(
            None, help="MQTT password (prefer FLEET_MQTT_PASSWORD: arguments are visible in ps)."
        ),
        host: str = typer.Option(None, help="Broker host (default FLEET_MQTT_HOST)."),
        port: int = typer.Option(None, help="Broker port (default FLEET_MQTT_PORT)."),
        ca_file: Path = typer.Option(
            None,
            help="Connect over TLS and verify the broker against this CA certificate "
            "(default FLEET_DEVICE_TLS_CA).",
        ),
        tls: bool = typer.Option(
            None,
            "--tls/--no-tls",
            help="TLS with the system's CA certificates (default FLEET_DEVICE_TLS; implied by "
            "--ca-file). Plaintext only to a broker on this machine or an internal network.",
            show_default=False,
        ),
        interval: float = typer.Option(None, help="Reporting interval in s (default 5)."),
        max_hdop: float = typer.Option(None, help="Drop fixes with a higher HDOP (default 5)."),
        route: str = typer.Option(None, help="Route code (trayek) sent with every fix."),
        queue: Path = typer.Option(
            None, help="Queue file (default <data_dir>/device/<vehicle id>/queue.sqlite3)."
        ),
        speed: float = typer.Option(
            1.0, help="Replay speed of a log file: 1 real time, 10 ten times, 0 at once."
        ),
        loop: bool = typer.Option(False, help="Replay a log file forever."),
        replay_now: bool = typer.Option(
            False, help="Shift a replayed log's GPS time so that it starts now."
        ),
        baud: int = typer.Option(9600, help="Serial port speed."),
        plain_tty: bool = typer.Option(
            False, help="Read a tty as a plain file (set it up with stty; no pyserial needed)."
        ),
        batch_max_fixes: int = typer.Option(1000, help="Fixes per uploaded batch (1..1000)."),
        upload_limit_bps: int = typer.Option(
            0, help="Cap the upload at this many payload bytes/s (0: no cap)."
        ),
        backoff_max: float = typer.Option(None, help="Longest reconnect delay in s (default 60)."),
        receipts: bool = typer.Option(
            None,
            "--receipts/--no-receipts",
            help="Keep each fix until a storage receipt on fleet/<id>/ack says it is stored "
            "(default FLEET_DEVICE_RECEIPTS, on); --no-receipts: delete on the broker's "
            "PUBACK, for a server that sends no receipts.",
            show_default=False,
        ),
        receipt_timeout: float = typer.Option(
            None, help="Resend when no receipt came this many s after the PUBACK (default 15)."
        ),
        drain: bool = typer.Option(
            True, help="When the source ends, wait until the queue is uploaded."
        ),
        drain_timeout: float = typer.Option(None, help="Give up draining after this many s."),
        data_dir: Path = typer.Option(None, help="State directory (default FLEET_DATA_DIR)."),
    ) -> None:
        """Run the reference tracker: NMEA → filtered fixes → disk queue → MQTT."""
        from firmware_stub.agent import AgentConfig, DeviceAgent  # noqa: PLC0415
        from firmware_stub.fix_queue import QueueError  # noqa: PLC0415
        from firmware_stub.sources import ReplayPacer, SourceError, open_source  # noqa: PLC0415
        from firmware_stub.uploader import UplinkConfig  # noqa: PLC0415

        s = load(DeviceSettings)
        logs.configure(s.log_level, s.log_format)
        vid = vehicle_id or s.device_id or s.mqtt_username
        if not vid:
            _fail("no vehicle id: pass --vehicle-id or set FLEET_DEVICE_ID")
        assert vid is not None
        if not VEHICLE_ID_RE.match(vid):
            _fail(f"vehicle id {vid!r} must match {VEHICLE_ID_RE.pattern}")
        max_backoff = backoff_max or s.device_backoff_max_s
        try:
            uplink = UplinkConfig(
                vehicle_id=vid,
                password=password or s.mqtt_password,
                host=host or s.mqtt_host,
                port=port or s.mqtt_port,
                tls=bool(ca_file or s.device_tls_ca) or (s.device_tls if tls is None else tls),
                tls_ca=ca_file or s.device_tls_ca,
                keepalive_s=s.device_keepalive_s,
                batch_max_fixes=batch_max_fixes,
                backoff_initial_s=min(s.device_backoff_initial_s, max_backoff),
                backoff_max_s=max_backoff,
                upload_limit_bps=upload_limit_bps,
                receipts=s.device_receipts if receipts is None else receipts,
                receipt_timeout_s=receipt_timeout or s.device_receipt_timeout_s,
            )
            config = AgentConfig(
                uplink=uplink,
                queue_path=queue
                or s.device_queue
                or (data_dir or s.data_dir) / "device" / vid / "queue.sqlite3",
                interval_s=interval or s.device_interval_s,
                max_hdop=max_hdop or s.device_max_hdop,
                route=route or s.device_route,
                queue_max_fixes=s.device_queue_max_fixes,
                restamp_to_now=replay_now,
                drain_at_end=drain,
                drain_timeout_s=drain_timeout,
            )
            source = open_source(nmea, baud=baud, plain_tty=plain_tty, loop=loop)
            agent = DeviceAgent(config)
        except (ValueError, SourceError, QueueError) as exc:
            _fail(str(exc))
        if source.replay:
            agent.pacer = ReplayPacer(speed, sleep=agent.sleep)
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGINT, _interrupt)
        typer.echo(
            f"device {vid}: reading {source.name}, broker {uplink.host}:{uplink.port}, "
            f"queue {config.queue_path}, "
            + ("storage receipts" if uplink.receipts else "no receipts (PUBACK deletes)"),
            err=True,
        )
        try:
            summary = agent.run(source)
        except _StopRequestedError:
            agent.stop()
            summary = None
        except QueueError as exc:
            _fail(f"{exc} (queued fixes are kept; free space or fix the path and restart)")
        finally:
            source.close()
        if summary is None:
            typer.echo(f"device {vid}: stopped; queued fixes are kept for the next run", err=True)
            return
        typer.echo(
            f"device {vid}: {summary.sentences} sentences, {summary.fixes_queued} fixes queued, "
            f"{summary.queue_depth} left in the queue; rejected lines {summary.rejected_lines}, "
            f"discarded epochs {summary.discarded_epochs}"
        )
        if not summary.drained and drain:
            raise typer.Exit(1)
