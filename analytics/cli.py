"""``fleet report ...`` and ``fleet gtfs export``."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import psycopg
import typer

from analytics.context import analytics_context
from analytics.gtfs_static import export_gtfs, fetch_observed
from analytics.reports import (
    ReportError,
    ReportParams,
    parse_time,
    render,
    report_chunks,
    run_report,
)
from fleet.settings import CommonSettings, load
from fleet.storage.connect import resolve_dsn

__all__ = ["register"]

DSN_HELP = "PostgreSQL DSN (default: FLEET_DSN, else the embedded server in FLEET_DATA_DIR)."


def _dsn(dsn: str | None) -> str:
    common = load(CommonSettings)
    return resolve_dsn(dsn or common.dsn, common.data_dir)


def _fail(message: str) -> None:
    typer.echo(f"fleet: {message}", err=True)
    raise typer.Exit(2)


def _report(
    kind: Literal["headways", "congestion", "area", "service"],
    dsn: str | None,
    route: str | None,
    checkpoint: str | None,
    direction: int | None,
    start: str | None,
    end: str | None,
    fmt: str,
    output: Path | None,
    by_hour: bool = False,
) -> None:
    ctx = analytics_context()
    if fmt not in ("csv", "json"):
        _fail(f"--format must be csv or json (got {fmt!r})")
    if route is not None and route not in ctx.routes:
        _fail(f"unknown route {route!r}; routes: {', '.join(ctx.routes)}")
    try:
        end_t = parse_time(end, datetime.now(UTC))
        params = ReportParams(
            start=parse_time(start, end_t - timedelta(days=1)),
            end=end_t,
            route=route,
            checkpoint=ReportParams.checkpoint_seq(checkpoint),
            direction=direction,
            by_hour=by_hour,
            timezone=ctx.settings.timezone,
            targets=ctx.targets,
        )
    except ReportError as exc:
        _fail(str(exc))
        return
    target = _dsn(dsn)
    chunks = report_chunks(kind, params)
    try:
        with psycopg.connect(target) as conn:
            if chunks > 1:
                with typer.progressbar(
                    length=chunks, label=f"{kind}: reading {chunks} days", file=sys.stderr
                ) as bar:
                    rows = run_report(
                        conn,
                        kind,
                        params,
                        ctx.settings.offpeak,
                        ctx.settings.freeflow_lookback_days,
                        on_chunk=lambda: bar.update(1),
                    )
            else:
                rows = run_report(
                    conn, kind, params, ctx.settings.offpeak, ctx.settings.freeflow_lookback_days
                )
    except psycopg.OperationalError as exc:
        _fail(f"cannot reach the database: {str(exc).strip().splitlines()[0]}")
        return
    except psycopg.errors.UndefinedTable:
        _fail("the analytics tables are missing: run `fleet db migrate` first")
        return
    text = render(rows, "csv" if fmt == "csv" else "json")
    if output is None:
        typer.echo(text, nl=not text.endswith("\n"))
    else:
        output.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
        typer.echo(f"wrote {len(rows)} rows to {output}", err=True)


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    report = groups["report"]

    route_opt = typer.Option(None, "--route", help="Route code, e.g. B.")
    cp_opt = typer.Option(None, "--checkpoint", help="Checkpoint seq or id (12 or B-012).")
    dir_opt = typer.Option(None, "--direction", min=0, max=1, help="0 outbound, 1 return.")
    from_opt = typer.Option(None, "--from", help="ISO 8601 start (default: 24 h before --to).")
    to_opt = typer.Option(None, "--to", help="ISO 8601 end (default: now).")
    fmt_opt = typer.Option("csv", "--format", help="csv or json.")
    out_opt = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout.")
    dsn_opt = typer.Option(None, "--dsn", help=DSN_HELP)

    @report.command("headways")
    def report_headways(
        route: str | None = route_opt,
        checkpoint: str | None = cp_opt,
        direction: int | None = dir_opt,
        start: str | None = from_opt,
        end: str | None = to_opt,
        by_hour: bool = typer.Option(False, "--by-hour", help="One row per local hour."),
        fmt: str = fmt_opt,
        output: Path | None = out_opt,
        dsn: str | None = dsn_opt,
    ) -> None:
        """Headways per route, direction and checkpoint: mean, Cv_h, AWT, EWT, shares, LOS."""
        _report("headways", dsn, route, checkpoint, direction, start, end, fmt, output, by_hour)

    @report.command("congestion")
    def report_congestion(
        route: str | None = route_opt,
        checkpoint: str | None = cp_opt,
        direction: int | None = dir_opt,
        start: str | None = from_opt,
        end: str | None = to_opt,
        area: bool = typer.Option(False, "--area", help="Per H3 cell instead of per segment."),
        fmt: str = fmt_opt,
        output: Path | None = out_opt,
        dsn: str | None = dsn_opt,
    ) -> None:
        """Segment travel times and speeds per 5 minutes with free flow and congestion level."""
        kind: Literal["area", "congestion"] = "area" if area else "congestion"
        _report(kind, dsn, route, checkpoint, direction, start, end, fmt, output)

    @report.command("service")
    def report_service(
        route: str | None = route_opt,
        checkpoint: str | None = cp_opt,
        direction: int | None = dir_opt,
        start: str | None = from_opt,
        end: str | None = to_opt,
        fmt: str = fmt_opt,
        output: Path | None = out_opt,
        dsn: str | None = dsn_opt,
    ) -> None:
        """Vans in service, vehicle-km and passages per route per hour."""
        _report("service", dsn, route, checkpoint, direction, start, end, fmt, output)

    gtfs = typer.Typer(help="GTFS feeds for passenger apps.", no_args_is_help=True)
    app.add_typer(gtfs, name="gtfs")

    @gtfs.command("export")
    def gtfs_export(
        out_dir: Path = typer.Argument(..., help="Directory for the GTFS .txt files."),
        days: int = typer.Option(7, "--days", min=1, help="Observed headways of the last N days."),
        dsn: str | None = dsn_opt,
    ) -> None:
        """GTFS static feed: routes, checkpoints as stops, shapes, frequency-based trips."""
        ctx = analytics_context()
        with psycopg.connect(_dsn(dsn)) as conn:
            observed = fetch_observed(conn, datetime.now(UTC), days, ctx.settings.timezone)
        paths = export_gtfs(out_dir, ctx.routes, observed, ctx.settings.timezone)
        typer.echo(f"wrote {len(paths)} files to {out_dir}")
