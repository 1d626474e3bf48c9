"""``fleet report <name>`` (one command per report of the registry) and ``fleet gtfs export``."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import typer

from analytics.context import AnalyticsContext, analytics_context
from analytics.gtfs_static import export_gtfs, fetch_observed
from analytics.reports import (
    PUBLISHED,
    Report,
    ReportError,
    ReportParams,
    read_params,
    render,
    report_chunks,
    run_report,
)
from analytics.reports.params import DEFAULT_WINDOW, FILTERS, FORMAT, Parameter
from fleet.settings import CommonSettings, load
from fleet.storage.connect import resolve_dsn

__all__ = ["register"]

DSN_HELP = "PostgreSQL DSN (default: FLEET_DSN, else the embedded server in FLEET_DATA_DIR)."
CLI_FORMAT = "csv"  # planners open reports in a spreadsheet; the API answers JSON by default


def _dsn(dsn: str | None) -> str:
    common = load(CommonSettings)
    return resolve_dsn(dsn or common.dsn, common.data_dir)


def _fail(message: str) -> None:
    typer.echo(f"fleet: {message}", err=True)
    raise typer.Exit(2)


def _known_route(ctx: AnalyticsContext) -> Callable[[str, str], str]:
    def check(name: str, value: str) -> str:
        if value not in ctx.routes:
            raise ReportError(f"unknown route {value!r}; routes: {', '.join(ctx.routes)}")
        return value

    return check


def _read(conn: psycopg.Connection, report: Report, p: ReportParams) -> list[Any]:
    s = analytics_context().settings
    if p.end - p.start <= DEFAULT_WINDOW:
        return run_report(conn, report, p, s.offpeak, s.freeflow_lookback_days)
    chunks = report_chunks(report, p)
    with typer.progressbar(
        length=chunks, label=f"{report.name}: reading {chunks} days", file=sys.stderr
    ) as bar:
        return run_report(
            conn, report, p, s.offpeak, s.freeflow_lookback_days, on_chunk=lambda: bar.update(1)
        )


def _run(
    report: Report, values: dict[str, Any], fmt: str, output: Path | None, dsn: str | None
) -> None:
    ctx = analytics_context()
    if fmt not in FORMAT.choices:
        _fail(f"--format must be csv or json (got {fmt!r})")
    try:
        params = read_params(
            values,
            timezone=ctx.settings.timezone,
            targets=ctx.targets,
            checks={"route": _known_route(ctx)},
        )
    except ReportError as exc:
        _fail(str(exc))
        return
    target = _dsn(dsn)
    try:
        with psycopg.connect(target) as conn:
            rows = _read(conn, report, params)
    except psycopg.OperationalError as exc:
        _fail(f"cannot reach the database: {str(exc).strip().splitlines()[0]}")
        return
    except psycopg.errors.UndefinedTable:
        _fail("the analytics tables are missing: run `fleet db migrate` first")
        return
    text = render(rows, "csv" if fmt == "csv" else "json", report.columns)
    if output is None:
        typer.echo(text, nl=not text.endswith("\n"))
    else:
        output.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
        typer.echo(f"wrote {len(rows)} rows to {output}", err=True)


def _option(param: Parameter) -> inspect.Parameter:
    """A filter of the registry as a typer option (``--<name>``, same help and bounds)."""
    return inspect.Parameter(
        param.key,
        inspect.Parameter.KEYWORD_ONLY,
        default=typer.Option(
            None, f"--{param.name}", help=param.help, min=param.minimum, max=param.maximum
        ),
        annotation=param.type | None,
    )


def _report_command(report: Report) -> Callable[..., None]:
    """``fleet report <name>``: the registry's filters, the report's variant switch,
    ``--format``, ``--output`` and ``--dsn``."""

    def command(**values: Any) -> None:
        fmt, output, dsn = values.pop(FORMAT.key), values.pop("output"), values.pop("dsn")
        chosen = report.variant.report if report.variant and values.pop("variant") else report
        _run(chosen, values, fmt, output, dsn)

    keyword = inspect.Parameter.KEYWORD_ONLY
    options = [_option(param) for param in FILTERS]
    if report.variant is not None:
        switch = typer.Option(False, report.variant.flag, help=report.variant.help)
        options.append(inspect.Parameter("variant", keyword, default=switch, annotation=bool))
    options += [
        inspect.Parameter(
            FORMAT.key,
            keyword,
            default=typer.Option(CLI_FORMAT, f"--{FORMAT.name}", help=FORMAT.help),
            annotation=str,
        ),
        inspect.Parameter(
            "output",
            keyword,
            default=typer.Option(
                None, "--output", "-o", help="Write to this file instead of stdout."
            ),
            annotation=Path | None,
        ),
        inspect.Parameter(
            "dsn",
            keyword,
            default=typer.Option(None, "--dsn", help=DSN_HELP),
            annotation=str | None,
        ),
    ]
    command.__signature__ = inspect.Signature(options, return_annotation=None)  # type: ignore[attr-defined]
    return command


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    for report in PUBLISHED:
        groups["report"].command(report.name, help=report.summary)(_report_command(report))
    dsn_opt = typer.Option(None, "--dsn", help=DSN_HELP)

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
