"""Who is calling: one check for REST and the live websocket.

Credentials are a token in ``Authorization: Bearer <token>`` or a page session cookie
(:mod:`api.sessions`). A token in the URL (``?token=``) is refused: URLs end up in
access logs, proxy logs and browser history. Before any database lookup the caller's
address is checked against the failed-authentication limit (:mod:`api.auth_limiter`);
every lookup that fails counts against it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from psycopg_pool import AsyncConnectionPool

from api.auth_limiter import FailedAuthLimiter, address_key
from api.metrics import ApiMetrics
from api.sessions import SESSION_COOKIE, SessionValue, issue, mac_matches, parse
from api.tokens import TokenInfo, digest, verify, verify_id

__all__ = ["AuthError", "Authenticator", "Caller", "Credentials"]

log = logging.getLogger(__name__)

URL_TOKEN_PARAMS: Final = ("token", "access_token")
HOW_TO_SEND: Final = "send 'Authorization: Bearer <token>' (fleet token create)"


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a request presents; ``token_in_url`` is refused before anything else."""

    bearer: str | None
    session: str | None
    token_in_url: bool

    @classmethod
    def of(
        cls, headers: Mapping[str, str], query: Mapping[str, str], cookies: Mapping[str, str]
    ) -> Credentials:
        bearer = None
        scheme, _, value = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            bearer = value.strip()
        return cls(
            bearer=bearer,
            session=cookies.get(SESSION_COOKIE) or None,
            token_in_url=any(name in query for name in URL_TOKEN_PARAMS),
        )

    @property
    def present(self) -> bool:
        return self.bearer is not None or self.session is not None


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: the token, and how it was presented."""

    info: TokenInfo
    via_session: bool
    renewed_session: str | None = None  # a fresh cookie value when the old one aged
    token_digest: bytes | None = None  # for a bearer token: what a new session is keyed by


class AuthError(Exception):
    """Not authenticated; ``status`` 400/401/429 with a message for the caller."""

    def __init__(
        self,
        status: int,
        error: str,
        detail: str,
        *,
        retry_after_s: int | None = None,
        clear_session: bool = False,
        counted: bool = False,
    ) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.detail = detail
        self.retry_after_s = retry_after_s
        self.clear_session = clear_session
        self.counted = counted  # a failed authentication for the limiter


class Authenticator:
    """Checks credentials; owns the failed-authentication limiter of this process."""

    def __init__(self, limiter: FailedAuthLimiter, metrics: ApiMetrics, session_ttl_s: int) -> None:
        self.limiter = limiter
        self.metrics = metrics
        self.session_ttl_s = session_ttl_s

    async def authenticate(
        self, pool: AsyncConnectionPool, creds: Credentials, client_host: str | None
    ) -> Caller:
        if creds.token_in_url:
            raise AuthError(
                400,
                "token in URL",
                "tokens are not accepted in the URL (logs and browser history keep URLs); "
                + HOW_TO_SEND,
            )
        if not creds.present:
            raise AuthError(401, "token required", HOW_TO_SEND)
        refusal = self.limiter.admit(client_host)  # before any lookup
        if refusal is not None:
            self.metrics.auth_rate_limited.inc()
            why = "authentications in flight" if refusal.in_flight else "failed authentications"
            raise AuthError(
                429,
                "too many failed authentications",
                f"too many {why} from {address_key(client_host)}; "
                f"retry in {refusal.retry_after_s} s",
                retry_after_s=refusal.retry_after_s,
            )
        failed = False
        try:
            if creds.bearer is not None:
                return await self._bearer(pool, creds.bearer)
            assert creds.session is not None
            return await self._session(pool, creds.session)
        except AuthError as exc:
            failed = exc.counted
            raise
        finally:
            if failed:
                self.metrics.auth_failures.inc()
            if self.limiter.done(client_host, failed):
                log.warning(
                    "repeated failed authentication: address blocked",
                    extra={
                        "address": address_key(client_host),
                        "failures": self.limiter.max_failures,
                        "window_s": self.limiter.window_s,
                    },
                )

    async def _bearer(self, pool: AsyncConnectionPool, secret: str) -> Caller:
        info = await verify(pool, secret)
        if info is None:
            raise AuthError(401, "invalid token", "unknown or revoked token", counted=True)
        return Caller(info, via_session=False, token_digest=digest(secret))

    async def _session(self, pool: AsyncConnectionPool, value: str) -> Caller:
        session = parse(value)
        if session is None:
            raise AuthError(
                401, "invalid session", "malformed session cookie", clear_session=True,
                counted=True,
            )  # fmt: skip
        if session.expires <= time.time():  # no lookup: costs nothing, so it is not counted
            raise AuthError(
                401,
                "session expired",
                "open the page's link with its token again",
                clear_session=True,
            )
        found = await verify_id(pool, session.token_id)
        if found is None or not mac_matches(session, found[1]):
            raise AuthError(
                401, "invalid session", "unknown or revoked token, or a forged cookie",
                clear_session=True, counted=True,
            )  # fmt: skip
        token, token_digest = found  # the session has its token's role, looked up each time
        return Caller(token, via_session=True, renewed_session=self._renewal(session, token_digest))

    def _renewal(self, session: SessionValue, token_digest: bytes) -> str | None:
        if session.expires - time.time() > self.session_ttl_s / 2:
            return None
        return issue(session.token_id, token_digest, self.session_ttl_s)

    def new_session(self, caller: Caller) -> str:
        """A session cookie value for a caller that presented its token as a bearer."""
        assert caller.token_digest is not None
        return issue(caller.info.id, caller.token_digest, self.session_ttl_s)
