"""``fleet api`` and ``fleet token create|list|revoke``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import psycopg.errors
import typer

from api.tokens import Role, TokenError, create_token, list_tokens, revoke_token
from broker.runner import BrokerLayout
from fleet import logs
from fleet.settings import ApiSettings, CommonSettings, load
from fleet.storage.connect import resolve_dsn
from fleet.storage.migrate import migrate


def _fail(message: str) -> None:
    typer.echo(f"fleet: {message}", err=True)
    raise typer.Exit(2)


def _dsn(dsn: str | None, data_dir: Path | None) -> str:
    s = load(CommonSettings)
    return resolve_dsn(dsn or s.dsn, data_dir or s.data_dir)


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


@contextmanager
def _tokens_db(dsn: str | None, data_dir: Path | None) -> Iterator[psycopg.Connection]:
    """A connection for token commands, with one-line errors for the usual mistakes."""
    target = _dsn(dsn, data_dir)
    try:
        conn = psycopg.connect(target, connect_timeout=10)
    except psycopg.OperationalError as exc:
        _fail(f"cannot connect to the database ({_first_line(exc)}); check FLEET_DSN")
        raise  # unreachable: _fail exits
    with conn:
        try:
            yield conn
        except psycopg.errors.UndefinedTable:
            _fail("the api_tokens table does not exist yet: run `fleet db migrate` first")


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    token = groups["token"]

    @app.command("api")
    def api_cmd(
        port: int = typer.Option(None, help="HTTP port (default FLEET_API_PORT or 8000)."),
        bind: str = typer.Option(None, help="HTTP address (default FLEET_API_BIND)."),
        dsn: str = typer.Option(None, help="PostgreSQL DSN (default FLEET_DSN or embedded)."),
        data_dir: Path = typer.Option(None, help="State directory (default FLEET_DATA_DIR)."),
        migrate_first: bool = typer.Option(True, "--migrate/--no-migrate"),
    ) -> None:
        """Serve the REST API, the live websocket and the war-room page."""
        from api.server import build_server  # noqa: PLC0415 (keeps `fleet --help` fast)

        s = load(ApiSettings)
        logs.configure(s.log_level, s.log_format)
        overrides: dict[str, object] = {"dsn": resolve_dsn(dsn or s.dsn, data_dir or s.data_dir)}
        if port is not None:
            overrides["api_port"] = port
        if bind is not None:
            overrides["api_bind"] = bind
        if s.mqtt_password is None:  # a local broker started by `fleet broker`
            creds_file = BrokerLayout(data_dir or s.data_dir).service_env
            if creds_file.exists():
                overrides["mqtt_password"] = (
                    BrokerLayout(data_dir or s.data_dir)
                    .service_credentials()
                    .get(s.mqtt_username or "")
                )
        settings = s.model_copy(update=overrides)
        if migrate_first:
            try:
                migrate(str(settings.dsn))
            except psycopg.OperationalError as exc:
                _fail(
                    f"cannot reach the database to migrate it ({_first_line(exc)}); check FLEET_DSN"
                )
        typer.echo(f"fleet api on http://{settings.api_bind}:{settings.api_port}/")
        build_server(settings).run()

    @token.command("create")
    def token_create(
        name: str = typer.Option(..., help="Who or what uses the token."),
        role: Role = typer.Option(
            Role.VIEWER,
            help="viewer (war room); operator (+ alerts, commands); planner (+ reports); admin.",
        ),
        dsn: str = typer.Option(None, help="PostgreSQL DSN (default FLEET_DSN or embedded)."),
        data_dir: Path = typer.Option(None),
    ) -> None:
        """Create an API token; the secret is printed once and stored only as a hash."""
        with _tokens_db(dsn, data_dir) as conn:
            try:
                token_id, secret = create_token(conn, name, role)
            except TokenError as exc:
                _fail(str(exc))
                return
        typer.echo(f"token {token_id} ({role.value}) for {name}; shown once:")
        typer.echo(secret)

    @token.command("list")
    def token_list(dsn: str = typer.Option(None), data_dir: Path = typer.Option(None)) -> None:
        """List tokens (never their secrets)."""
        with _tokens_db(dsn, data_dir) as conn:
            rows = list_tokens(conn)
        typer.echo(f"{'id':>4}  {'role':<6}  {'state':<7}  {'last used':<20}  name")
        for r in rows:
            state = "revoked" if r.revoked_at else "active"
            used = r.last_used_at.strftime("%Y-%m-%d %H:%M:%S") if r.last_used_at else "never"
            typer.echo(f"{r.id:>4}  {r.role:<6}  {state:<7}  {used:<20}  {r.name}")

    @token.command("revoke")
    def token_revoke(
        id_or_name: str = typer.Argument(..., help="Token id, or name (revokes all of that name)."),
        dsn: str = typer.Option(None),
        data_dir: Path = typer.Option(None),
    ) -> None:
        """Revoke a token: requests and new websockets with it are refused from now on."""
        with _tokens_db(dsn, data_dir) as conn:
            try:
                n = revoke_token(conn, id_or_name)
            except TokenError as exc:
                _fail(str(exc))
                return
        typer.echo(f"revoked {n} token(s)")
