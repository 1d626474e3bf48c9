"""API tokens: random secrets shown once, stored as SHA-256 digests in ``api_tokens``.

Roles match the city's users (docs/api.md, "Roles"): ``viewer`` watches the war room;
``operator`` also works alerts and sends device commands; ``planner`` also reads the
planner workspace and reports; ``admin`` may do everything. A route names the
:class:`Permission` it needs, never a role. The CLI (``fleet token create|list|revoke``)
uses the synchronous functions; the API verifies with :func:`verify` on its async pool.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import psycopg
from psycopg_pool import AsyncConnectionPool

__all__ = [
    "ROLE_PERMISSIONS",
    "Permission",
    "Role",
    "TokenError",
    "TokenInfo",
    "TokenRow",
    "create_token",
    "digest",
    "list_tokens",
    "revoke_token",
    "seed_token",
    "verify",
    "verify_id",
]

TOKEN_PREFIX: Final = "flt_"  # noqa: S105 (a prefix, not a secret)
LAST_USED_RESOLUTION: Final = timedelta(minutes=1)


class Role(enum.StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    PLANNER = "planner"
    ADMIN = "admin"


class Permission(enum.StrEnum):
    """What a route needs; roles grant sets of these (:data:`ROLE_PERMISSIONS`)."""

    WATCH = "watch"  # the war room: live map, replay, vehicles, tracks, incidents, feeds
    WORK_ALERTS = "work alerts"  # acknowledge and resolve incidents
    COMMAND = "command"  # send commands to devices
    PLAN = "plan"  # the planner workspace and reports
    ADMINISTER = "administer"  # devices and tokens


ROLE_PERMISSIONS: Final[dict[Role, frozenset[Permission]]] = {
    Role.VIEWER: frozenset({Permission.WATCH}),
    Role.OPERATOR: frozenset({Permission.WATCH, Permission.WORK_ALERTS, Permission.COMMAND}),
    Role.PLANNER: frozenset({Permission.WATCH, Permission.PLAN}),
    Role.ADMIN: frozenset(Permission),
}


class TokenError(ValueError):
    """A token operation the operator asked for cannot be done; the text says why."""


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """Who is calling: the verified token's id, name and role."""

    id: int
    name: str
    role: Role

    def allows(self, needed: Permission) -> bool:
        return needed in ROLE_PERMISSIONS[self.role]

    @property
    def permissions(self) -> list[str]:
        return sorted(p.value for p in ROLE_PERMISSIONS[self.role])


@dataclass(frozen=True, slots=True)
class TokenRow:
    id: int
    name: str
    role: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def create_token(conn: psycopg.Connection, name: str, role: Role) -> tuple[int, str]:
    """Insert a new token; return its id and the secret (the only time it is visible)."""
    if not name.strip():
        raise TokenError("a token needs a name (who or what uses it)")
    secret = new_secret()
    row = conn.execute(
        "INSERT INTO api_tokens (name, role, token_sha256) VALUES (%s, %s, %s) RETURNING id",
        (name, role.value, digest(secret)),
    ).fetchone()
    assert row is not None
    conn.commit()
    return int(row[0]), secret


def list_tokens(conn: psycopg.Connection) -> list[TokenRow]:
    rows = conn.execute(
        "SELECT id, name, role, created_at, last_used_at, revoked_at FROM api_tokens ORDER BY id"
    ).fetchall()
    return [TokenRow(*r) for r in rows]


def revoke_token(conn: psycopg.Connection, id_or_name: str) -> int:
    """Revoke by id or by name (all active tokens of that name); return how many."""
    if id_or_name.isdigit():
        cur = conn.execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL",
            (int(id_or_name),),
        )
    else:
        cur = conn.execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE name = %s AND revoked_at IS NULL",
            (id_or_name,),
        )
    conn.commit()
    if cur.rowcount == 0:
        raise TokenError(f"no active token with id or name {id_or_name!r} (see `fleet token list`)")
    return cur.rowcount


async def seed_token(pool: AsyncConnectionPool, secret: str, name: str, role: Role) -> None:
    """Make ``secret`` a valid token (demo mode); re-activates it if it was revoked."""
    async with pool.connection() as conn:
        await conn.execute(
            """INSERT INTO api_tokens (name, role, token_sha256) VALUES (%s, %s, %s)
               ON CONFLICT (token_sha256)
               DO UPDATE SET revoked_at = NULL, role = EXCLUDED.role""",
            (name, role.value, digest(secret)),
        )


async def verify(pool: AsyncConnectionPool, secret: str) -> TokenInfo | None:
    """The token's identity when it exists and is not revoked; records its last use."""
    found = await _active_token(pool, "token_sha256", digest(secret))
    return None if found is None else found[0]


async def verify_id(pool: AsyncConnectionPool, token_id: int) -> tuple[TokenInfo, bytes] | None:
    """An active token's identity and stored digest by id (session cookies); records use."""
    return await _active_token(pool, "id", token_id)


_ACTIVE_COLUMNS: Final = (
    "SELECT id, name, role, token_sha256,"
    " last_used_at IS NULL OR last_used_at < now() - %s FROM api_tokens"
)
_ACTIVE_BY_DIGEST: Final = _ACTIVE_COLUMNS + " WHERE token_sha256 = %s AND revoked_at IS NULL"
_ACTIVE_BY_ID: Final = _ACTIVE_COLUMNS + " WHERE id = %s AND revoked_at IS NULL"


async def _active_token(
    pool: AsyncConnectionPool, column: str, value: object
) -> tuple[TokenInfo, bytes] | None:
    query = _ACTIVE_BY_ID if column == "id" else _ACTIVE_BY_DIGEST
    async with pool.connection() as conn:
        cur = await conn.execute(query, (LAST_USED_RESOLUTION, value))
        row = await cur.fetchone()
        if row is None:
            return None
        if row[4]:  # record use at most once a minute: no write per request
            await conn.execute(
                "UPDATE api_tokens SET last_used_at = now() WHERE id = %s", (row[0],)
            )
    return TokenInfo(int(row[0]), str(row[1]), Role(row[2])), bytes(row[3])
