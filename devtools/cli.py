"""The developer commands: ``fleet demo`` and ``fleet bench ingest|sim|live|analytics|faults``
``fleet bench planner-charts`` and ``fleet bench warroom``."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Annotated, NoReturn

import typer

from fleet import logs
from fleet.settings import CommonSettings, load
from fleet.storage.connect import resolve_dsn

DSN_HELP = "PostgreSQL DSN (default: FLEET_DSN, else the embedded server in FLEET_DATA_DIR)."


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through the benchmark's cleanup: nothing left running


def _dsn(dsn: str | None) -> str:
    common = load(CommonSettings)
    return resolve_dsn(dsn or common.dsn, common.data_dir)


def _fail(command: str, message: str) -> NoReturn:
    typer.echo(f"{command}: {message}", err=True)
    raise typer.Exit(2)


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    bench = groups["bench"]

    @app.command("demo")
    def demo_cmd(
        data_dir: Annotated[
            Path | None,
            typer.Option(help="Where the database, broker and logs live (default FLEET_DATA_DIR)."),
        ] = None,
        port: Annotated[int, typer.Option(help="HTTP port of the API and the live map.")] = 8000,
        mqtt_port: Annotated[
            int, typer.Option(help="Plaintext MQTT port for the services (127.0.0.1 only).")
        ] = 1883,
        mqtt_tls_port: Annotated[
            int, typer.Option(help="MQTT over TLS for the devices (on --bind).")
        ] = 8883,
        bind: Annotated[
            str, typer.Option(help="Address the API and the broker listen on.")
        ] = "127.0.0.1",
        vehicles: Annotated[
            int, typer.Option(min=1, help="Simulated vans (all routes together).")
        ] = 300,
        speedup: Annotated[
            float,
            typer.Option(
                min=1.0,
                help="1 = real time. Above 1 the sim replays the last hours faster until it "
                "reaches the present, then ends (fixes are never stamped in the future).",
            ),
        ] = 1.0,
        history: Annotated[
            str,
            typer.Option(
                help="At real time: the sim first drives this much of the past as fast as it "
                "can (e.g. 1h, 30m; 0 for none), so the planner and the replay have data.",
            ),
        ] = "1h",
        no_sim: Annotated[
            bool, typer.Option("--no-sim", help="Do not start the simulator.")
        ] = False,
        sim_arg: Annotated[
            list[str] | None,
            typer.Option("--sim-arg", help="Extra argument passed to `fleet sim` (repeatable)."),
        ] = None,
    ) -> None:
        """Run PostgreSQL, Mosquitto, ingest, the API and a simulated fleet; print the map URL."""
        from devtools.demo import DemoOptions, run_demo  # noqa: PLC0415
        from tracker_sim.timeparse import parse_duration  # noqa: PLC0415

        try:
            history_s = parse_duration(history)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--history") from None

        s = load(CommonSettings)
        logs.configure(s.log_level, s.log_format)
        opts = DemoOptions(
            data_dir=data_dir or s.data_dir,
            port=port,
            mqtt_port=mqtt_port,
            mqtt_tls_port=mqtt_tls_port,
            bind=bind,
            vehicles=vehicles,
            speedup=speedup,
            history_s=history_s,
            sim=not no_sim,
            dsn=s.dsn,
            sim_args=sim_arg or (),
        )
        raise typer.Exit(run_demo(opts))

    @bench.command("ingest")
    def bench_ingest(
        rate: float = typer.Option(10_000, help="Target fixes/s in total."),
        duration: float = typer.Option(60, help="Seconds of load."),
        devices: int = typer.Option(1000, help="Simulated devices."),
        procs: int = typer.Option(2, help="Load-generator processes."),
        per_message: int = typer.Option(1, help="Fixes per MQTT message (1 = no batching)."),
        backlog: float = typer.Option(
            0, help="Then: seconds of load to pile up with the worker down."
        ),
        batch_max_fixes: int = typer.Option(1000),
        batch_max_ms: int = typer.Option(50),
        dsn: str = typer.Option(None, help="Use this database instead of an embedded one."),
        mqtt_port: int = typer.Option(
            None,
            help="Use a running broker on 127.0.0.1 (passwords of svc-ingest and svc-gateway "
            "from FLEET_MQTT_PASSWORD and FLEET_GATEWAY_PASSWORD).",
        ),
        gateway_password: str = typer.Option(None, envvar="FLEET_GATEWAY_PASSWORD", hidden=True),
        receipts: bool = typer.Option(
            True,
            "--receipts/--no-receipts",
            help="Ingest sends storage receipts and the generators keep every fix until one "
            "covers it (--no-receipts: neither; a success PUBACK counts).",
        ),
        workers: int = typer.Option(
            1, min=1, max=8, help="Ingest processes sharing the subscription ($share/ingest)."
        ),
    ) -> None:
        """Measure sustained ingest rate, publish→commit latency, loss and duplicates."""
        from devtools.bench_ingest import BenchOptions, run_ingest_bench  # noqa: PLC0415

        logs.configure("WARNING")
        opts = BenchOptions(
            rate=rate,
            duration_s=duration,
            devices=devices,
            procs=procs,
            per_message=per_message,
            backlog_s=backlog,
            batch_max_fixes=batch_max_fixes,
            batch_max_ms=batch_max_ms,
            dsn=dsn,
            mqtt_port=mqtt_port,
            mqtt_password=gateway_password,
            receipts=receipts,
            workers=workers,
        )
        f = run_ingest_bench(opts, typer.echo)
        typer.echo(
            f"rate={f['rate']:.0f} p50_ms={f['p50_ms']:.0f} p99_ms={f['p99_ms']:.0f} "
            f"lost={f['lost']:.0f} dup={f['dup']:.0f}"
        )

    @bench.command("sim")
    def bench_sim(
        vehicles: int = typer.Option(10_000, help="Vans, spread over all routes."),
        procs: int = typer.Option(2, help="Simulator processes."),
        connections: int = typer.Option(2, help="Gateway connections per process."),
        seconds: float = typer.Option(20.0, help="Wall-clock seconds to publish."),
        interval: float = typer.Option(5.0, help="Seconds between fixes of one van."),
    ) -> None:
        """Gateway-mode publishing rate (fixes/s acknowledged by a local Mosquitto)."""
        from devtools.bench_sim import SimBenchOptions, run_sim_bench  # noqa: PLC0415
        from tracker_sim.links import LinkError  # noqa: PLC0415

        logs.configure("WARNING")
        opts = SimBenchOptions(vehicles, procs, connections, seconds, interval)
        try:
            st = run_sim_bench(opts, typer.echo)
        except (LinkError, RuntimeError) as exc:
            _fail("fleet sim", str(exc))
        wall = max(st.wall_seconds, 1e-9)
        typer.echo(
            f"published messages={st.messages} fixes={st.fixes} acked={st.fixes_acked} "
            f"wall_s={wall:.1f} sim_s={st.sim_seconds:.0f}"
        )
        typer.echo(f"rate={st.fixes_acked / wall:.0f} vehicles={st.vehicles} procs={procs}")

    @bench.command("live")
    def bench_live(
        clients: int = typer.Option(200, help="Websocket clients."),
        rate: int = typer.Option(5000, help="Fixes per second published."),
        vans: int = typer.Option(2000, help="Distinct vans the fixes are spread over."),
        duration: float = typer.Option(20.0, help="Measured seconds (after warm-up)."),
        warmup: float = typer.Option(5.0, help="Seconds before measuring."),
        dsn: str = typer.Option(None, help="Use this database instead of an embedded one."),
        mqtt_port: int = typer.Option(
            None, help="Use a running broker on 127.0.0.1:PORT (credentials from --data-dir)."
        ),
        data_dir: Path = typer.Option(None, help="Where the bench's broker/DB keep state."),
        measure_every: int = typer.Option(
            10, min=1, help="Every Nth client decodes and times every van (1 = all)."
        ),
        bbox_km: float = typer.Option(
            0.0,
            min=0.0,
            help="Each client filters its own square neighbourhood this many km wide "
            "(0: no filter, every van).",
        ),
    ) -> None:
        """Live push under load: N websocket clients while fixes flow at RATE/s."""
        from devtools.bench_live import BenchOptions, run_bench  # noqa: PLC0415

        s = load(CommonSettings)
        logs.configure("WARNING", s.log_format)
        opts = BenchOptions(
            clients=clients,
            rate=rate,
            vans=vans,
            duration_s=duration,
            warmup_s=warmup,
            dsn=dsn,
            mqtt_port=mqtt_port,
            data_dir=data_dir,
            measure_every=measure_every,
            bbox_km=bbox_km,
        )
        for line in run_bench(opts):
            typer.echo(line)

    @bench.command("analytics")
    def bench_analytics(
        route: str = typer.Option("B", "--route", help="Route to drive."),
        vans: int = typer.Option(100, "--vans", min=1),
        hours: float = typer.Option(16.0, "--hours", min=0.1),
        keep: bool = typer.Option(False, "--keep", help="Keep the scratch database."),
        dsn: str | None = typer.Option(None, "--dsn", help=DSN_HELP),
    ) -> None:
        """Passage detection throughput and the headway report of a generated route-day."""
        from analytics.context import analytics_context  # noqa: PLC0415
        from devtools.bench_analytics import run_bench  # noqa: PLC0415

        ctx = analytics_context()
        if route not in ctx.routes:
            _fail("fleet", f"unknown route {route!r}; routes: {', '.join(ctx.routes)}")
        total = int(vans * hours * 3600)
        with typer.progressbar(length=total, label="copying fixes", file=sys.stderr) as bar:
            result = run_bench(
                _dsn(dsn),
                ctx.routes[route],
                vans,
                hours,
                keep,
                progress=bar.update,
                say=lambda m: typer.echo(m, err=True),
            )
        typer.echo(
            f"fixes={result.fixes} passages={result.passages} "
            f"copy_s={result.copy_s:.1f} detect_cpu_s={result.detect_s:.2f} "
            f"detect_wall_s={result.detect_wall_s:.2f} "
            f"end_to_end_fixes_per_s={result.end_to_end_fixes_per_s:.0f} "
            f"report_rows={result.report_rows}"
        )
        typer.echo(f"fixes_per_s={result.fixes_per_s:.0f} report_ms={result.report_ms:.0f}")

    @bench.command("history")
    def bench_history(
        preload: str = typer.Option(
            "1000000,20000000", help="Rows already in positions, one run per size (comma list)."
        ),
        vans: int = typer.Option(500, min=1, help="Vans of the past and the present fleet."),
        interval: float = typer.Option(5.0, min=0.1, help="Seconds between a van's fixes."),
        cycles: int = typer.Option(12, min=1, help="Measured analytics-loop cycles per size."),
        ingest_rate: float = typer.Option(10_000, help="fleet bench ingest: fixes/s."),
        ingest_duration: float = typer.Option(30, help="fleet bench ingest: seconds of load."),
        ingest_devices: int = typer.Option(5000, help="fleet bench ingest: devices."),
        unvacuumed: float = typer.Option(
            0.1,
            min=0.0,
            max=1.0,
            help="Share of the newest rows written after the last VACUUM (autovacuum's "
            "insert threshold is 0.2 of the table: 0.1 on average).",
        ),
        dsn: str | None = typer.Option(
            None, help="Create the scratch databases on this server (default: embedded)."
        ),
        workdir: Path | None = typer.Option(
            None, help="Where the embedded servers live (default: a temp dir, removed)."
        ),
    ) -> None:
        """Analytics-loop cycle time and ingest rate with N rows of history, per size."""
        from devtools.bench_history import HistoryOptions, run_history_bench, summary  # noqa: PLC0415

        try:
            sizes = tuple(int(p.replace("_", "")) for p in preload.split(","))
        except ValueError:
            raise typer.BadParameter("a comma list of row counts", param_hint="--preload") from None
        signal.signal(signal.SIGTERM, _interrupt)
        logs.configure("WARNING")
        opts = HistoryOptions(
            preloads=sizes,
            vans=vans,
            interval_s=interval,
            cycles=cycles,
            ingest_rate=ingest_rate,
            ingest_duration_s=ingest_duration,
            ingest_devices=ingest_devices,
            unvacuumed_share=unvacuumed,
            dsn=dsn,
            workdir=workdir,
        )
        shown = [0]

        def progress(done: int, total: int) -> None:
            if done - shown[0] >= 1_000_000 or done == total:
                shown[0] = done
                typer.echo(f"  {done:,} / {total:,} rows", err=True)

        results = run_history_bench(opts, lambda m: typer.echo(m, err=True), progress)
        typer.echo(summary(results))

    @bench.command("planner-charts")
    def bench_planner_charts(
        route: str = typer.Option("B", "--route", help="Route to drive."),
        vans: int = typer.Option(100, "--vans", min=1),
        hours: float = typer.Option(16.0, "--hours", min=0.1),
        runs: int = typer.Option(5, "--runs", min=1, help="Measured renders per library."),
        library: list[str] | None = typer.Option(
            None, "--library", help="uplot, echarts or observable-plot (repeatable; default all)."
        ),
    ) -> None:
        """Render time of a route-day Marey diagram per chart library, in headless Chromium."""
        from analytics.context import analytics_context  # noqa: PLC0415
        from api.web_assets import WebAssetsError  # noqa: PLC0415
        from devtools.bench_planner import CANDIDATES, run_bench  # noqa: PLC0415

        ctx = analytics_context()
        if route not in ctx.routes:
            _fail("fleet", f"unknown route {route!r}; routes: {', '.join(ctx.routes)}")
        names = tuple(library or (c.name for c in CANDIDATES))
        unknown = sorted(set(names) - {c.name for c in CANDIDATES})
        if unknown:
            _fail("fleet bench planner-charts", f"unknown library {', '.join(unknown)}")
        try:
            timings = run_bench(
                ctx.routes[route], vans, hours, runs, names, lambda m: typer.echo(m, err=True)
            )
        except (WebAssetsError, RuntimeError) as exc:
            _fail("fleet bench planner-charts", str(exc))
        for t in timings:
            typer.echo(t.line())

    @bench.command("warroom")
    def bench_warroom(
        vans: int = typer.Option(5000, min=1, help="Live vans on the page."),
        fps: float = typer.Option(4.0, min=0.5, max=20, help="Live frames per second."),
        frames: int = typer.Option(80, min=5, help="Measured frames (after warm-up)."),
        warmup: int = typer.Option(12, min=0, help="Frames before measuring."),
        moving: float = typer.Option(
            1.0, min=0.001, max=1.0, help="Share of the vans that move in each frame."
        ),
    ) -> None:
        """Main-thread ms per live frame of the war-room page in headless Chromium."""
        from devtools.bench_warroom import WarroomOptions, run_bench  # noqa: PLC0415

        signal.signal(signal.SIGTERM, _interrupt)
        logs.configure("WARNING")
        opts = WarroomOptions(vans=vans, fps=fps, frames=frames, warmup=warmup, moving=moving)
        for line in run_bench(opts):
            typer.echo(line)

    @bench.command("faults")
    def bench_faults(
        duration: float = typer.Option(120, help="Seconds of load (the fault times scale)."),
        devices: int = typer.Option(500, help="Receipt-aware devices."),
        rate: float = typer.Option(2000, help="Fixes/s generated in total."),
        resend_after: float = typer.Option(10, help="Seconds before an unreceipted fix is resent."),
        resend_max: float = typer.Option(30, help="Longest wait between resends (backoff cap)."),
        drain_timeout: float = typer.Option(300, help="Seconds to wait for the queues to drain."),
        keep: bool = typer.Option(False, "--keep", help="Keep the temporary state (logs)."),
    ) -> None:
        """Kill -9 Mosquitto, PostgreSQL and ingest under load; count lost and doubled fixes.

        Last line: generated=N confirmed=N stored=N lost=N dup_rows=N drain_s=S; the exit
        status is 1 when anything was lost or doubled or the queues did not drain.
        """
        from broker.runner import BrokerError  # noqa: PLC0415
        from devtools.bench_faults import FaultOptions, SetupError, run_faults_bench  # noqa: PLC0415
        from devtools.loadgen import LoadError  # noqa: PLC0415
        from fleet.storage.embedded import EmbeddedPostgresError  # noqa: PLC0415

        signal.signal(signal.SIGTERM, _interrupt)
        logs.configure("ERROR")  # the progress lines say what happened
        opts = FaultOptions(
            duration_s=duration,
            devices=devices,
            rate=rate,
            resend_after_s=resend_after,
            resend_max_s=resend_max,
            drain_timeout_s=drain_timeout,
            keep_dir=keep,
        )
        try:
            report = run_faults_bench(opts, typer.echo)
        except (BrokerError, EmbeddedPostgresError, LoadError, SetupError) as exc:
            _fail("fleet bench faults", str(exc))
        typer.echo(report.last_line())
        if not report.ok:
            raise typer.Exit(1)
