"""An API that holds: tokens only in headers, page sessions, the failed-auth
limit, validated queries, the body limit, the per-token websocket cap, /metrics, logs.

Unit tests first (no servers), then against a real app, broker and database.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from websockets.exceptions import ConnectionClosed

from api import auth as auth_module
from api.auth_limiter import FailedAuthLimiter, address_key
from api.log_redaction import RedactSecrets, redact
from api.sessions import SESSION_COOKIE, issue, mac_matches, parse
from api.tokens import Role, digest
from broker.runner import MosquittoBroker
from fleet.settings import ApiSettings
from fleet.storage.embedded import free_port
from tests.fixtures.api import make_token, recv_json, running_api, ws_connect
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.timeout(90)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _cookie(value: str) -> dict[str, str]:
    return {"Cookie": f"{SESSION_COOKIE}={value}"}


def _close_of(ws: Any) -> tuple[int, str]:
    """The close code and reason of a socket the server closes before any frame."""
    with pytest.raises(ConnectionClosed) as err:
        ws.recv(timeout=5)
    assert err.value.rcvd is not None, "closed without a close frame"
    return err.value.rcvd.code, err.value.rcvd.reason


# -- units ----------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_limiter_counts_failures_per_address_in_a_sliding_window() -> None:
    clock = FakeClock()
    limiter = FailedAuthLimiter(3, 60, clock=clock)
    for _ in range(2):
        limiter.record_failure("10.0.0.1")
        clock.now += 10
    assert limiter.retry_after("10.0.0.1") is None
    assert limiter.record_failure("10.0.0.1") is True  # the third: blocked from now
    assert limiter.retry_after("10.0.0.1") == 40  # the first failure leaves the window then
    assert limiter.retry_after("10.0.0.2") is None  # others are not affected
    clock.now += 40
    assert limiter.retry_after("10.0.0.1") is None
    clock.now += 100
    assert limiter.retry_after("10.0.0.1") is None and len(limiter) == 0  # forgotten


def test_limiter_holds_concurrent_lookups_to_the_limit() -> None:
    limiter = FailedAuthLimiter(3, 60, clock=FakeClock())
    assert limiter.admit("10.0.0.1") is None
    assert limiter.admit("10.0.0.1") is None
    assert limiter.done("10.0.0.1", failed=True) is False
    assert limiter.admit("10.0.0.1") is None  # 1 failed + 2 in flight = 3
    refusal = limiter.admit("10.0.0.1")
    assert refusal is not None and refusal.in_flight and refusal.retry_after_s == 1
    assert limiter.admit("10.0.0.9") is None  # another address is not held up
    limiter.done("10.0.0.1", failed=False)  # a valid token takes nothing away
    assert limiter.admit("10.0.0.1") is None
    limiter.done("10.0.0.1", failed=True)
    assert limiter.done("10.0.0.1", failed=True) is True  # the third failure: blocked
    refusal = limiter.admit("10.0.0.1")
    assert refusal is not None and not refusal.in_flight and refusal.retry_after_s == 60


def test_limiter_is_bounded_and_counts_ipv6_per_64() -> None:
    limiter = FailedAuthLimiter(1, 60, max_addresses=100, clock=FakeClock())
    for i in range(1000):
        limiter.record_failure(f"10.1.{i // 256}.{i % 256}")
    assert len(limiter) == 100  # the least recently failing are forgotten first
    assert limiter.retry_after("10.1.3.231") == 60  # the newest is still blocked
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::9")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    limiter.record_failure("2001:db8:1:2:aaaa::1")
    assert limiter.retry_after("2001:db8:1:2:ffff::2") == 60


def test_settings_defaults_hold_the_line() -> None:
    s = ApiSettings()
    assert (s.api_auth_max_failures, s.api_auth_window_s) == (10, 60.0)  # 10 per minute
    assert s.api_max_body_bytes == 16 * 1024
    assert s.ws_max_per_token == 20
    assert s.api_metrics_port is None  # /metrics behind a token on the main listener
    assert s.api_forwarded_allow_ips is None  # X-Forwarded-For is not believed


def test_session_cookie_value_is_signed_and_carries_no_secret() -> None:
    token = "flt_" + "s" * 43
    value = issue(7, digest(token), 3600, now=1_800_000_000)
    assert token not in value and digest(token).hex() not in value
    session = parse(value)
    assert session is not None and session.token_id == 7 and session.expires == 1_800_003_600
    assert mac_matches(session, digest(token))
    assert not mac_matches(session, digest(token + "x"))
    forged = value.replace(".1800003600.", ".1900003600.")
    assert not mac_matches(parse(forged), digest(token))  # type: ignore[arg-type]
    for bad in ("", "v1.7", "v2.7.1.x", "v1.-7.1.x", "v1.7.1.", "v1." + "9" * 30 + ".1.x"):
        assert parse(bad) is None, bad


def test_redaction_of_server_log_lines() -> None:
    line = '127.0.0.1:5 - "WebSocket /ws/live?route=B&token=flt_abcdefghijk&x=1" [accepted]'
    assert redact(line) == '127.0.0.1:5 - "WebSocket /ws/live?route=B&token=***&x=1" [accepted]'
    assert "s3cret" not in redact("Authorization: Bearer s3cret")
    assert "v1.1.2.mac" not in redact("cookie: fleet_session=v1.1.2.mac")
    assert "flt_" + "z" * 20 not in redact("saw flt_" + "z" * 20 + " somewhere")
    record = logging.LogRecord(
        "uvicorn.error", logging.INFO, "", 0, '"WebSocket %s"', ("/ws/live?token=demo-1",), None
    )
    assert RedactSecrets().filter(record)
    assert record.getMessage() == '"WebSocket /ws/live?token=***"'


# -- edge inputs ----------------------------------------------------------------------------


def _edge_inputs() -> list[tuple[str, int, str]]:
    now = datetime.now(UTC)
    far = (now + timedelta(days=3)).strftime("%Y-%m-%d")
    long_ago = (now - timedelta(days=800)).strftime("%Y-%m-%d")
    return [
        # the four of the issue
        ("/api/v1/vehicles/v1/track?to=0001-01-01", 400, "time outside the data horizon"),
        ("/api/v1/reports/headways?from=0001-01-01", 400, "time outside the data horizon"),
        ("/api/v1/reports/headways?checkpoint=" + "1" + "0" * 20, 400, "invalid checkpoint"),
        ("/api/v1/reports/service?route=A%00B", 400, "invalid request"),
        # their relatives
        ("/api/v1/vehicles/v1/track?from=0001-01-01", 400, "time outside the data horizon"),
        ("/api/v1/vehicles/v1/track?to=9999-12-31T23:59:59-14:00", 400, "time outside"),
        (f"/api/v1/vehicles/v1/track?to={far}", 400, "time outside the data horizon"),
        ("/api/v1/vehicles/v1/track?from=yesterday", 422, "invalid request"),
        ("/api/v1/vehicles/A%00B/track", 400, "invalid request"),
        ("/api/v1/vehicles/" + "x" * 80 + "/track", 400, "invalid vehicle id"),
        ("/api/v1/vehicles/a%20b/track", 400, "invalid vehicle id"),
        ("/api/v1/reports/headways?to=0001-01-01", 400, "time outside the data horizon"),
        ("/api/v1/reports/congestion?from=0001-01-01", 400, "time outside the data horizon"),
        ("/api/v1/reports/service?to=10000-01-01", 400, "bad report parameters"),
        (f"/api/v1/reports/headways?from={long_ago}", 400, "time range too long"),
        ("/api/v1/reports/headways?checkpoint=B-" + "9" * 30, 400, "invalid checkpoint"),
        ("/api/v1/reports/headways?checkpoint=%C2%B2", 400, "invalid checkpoint"),  # '²'
        ("/api/v1/reports/congestion?checkpoint=12345", 400, "invalid checkpoint"),
        ("/api/v1/reports/service?route=" + "A" * 17, 400, "invalid route code"),
        ("/api/v1/reports/service?route=A%20B", 400, "invalid route code"),
        ("/api/v1/reports/congestion/live?route=A%0AB", 400, "invalid request"),
        ("/api/v1/reports/headways?direction=" + "1" + "0" * 20, 422, "invalid request"),
        ("/api/v1/alerts?limit=" + "1" + "0" * 20, 422, "invalid request"),
        ("/api/v1/alerts?limit=-1", 422, "invalid request"),
        ("/api/v1/vehicles?x=%FF", 400, "invalid request"),
        ("/api/v1/vehicles?x=%E2%80%A8", 400, "invalid request"),  # LINE SEPARATOR
        ("/api/v1/vehicles?x=" + "a" * 5000, 400, "invalid request"),
    ]


def test_each_edge_input_gets_a_4xx_with_a_message(db_dsn: str, broker: MosquittoBroker) -> None:
    token = make_token(db_dsn, Role.ADMIN, "edge")  # may reach every route
    with psycopg.connect(db_dsn) as conn:
        conn.execute("INSERT INTO vehicles (vehicle_id) VALUES ('v1')")
    wrong: list[str] = []
    with running_api(db_dsn, broker) as api, httpx.Client(headers=_auth(token)) as http:
        for path, status, error in _edge_inputs():
            r = http.get(api.base + path)
            body = r.json() if r.headers.get("content-type") == "application/json" else {}
            if r.status_code != status or error not in str(body.get("error")):
                wrong.append(f"{path[:80]}: {r.status_code} {r.text[:200]}")
            elif not body.get("detail"):
                wrong.append(f"{path[:80]}: no detail in {r.text[:200]}")
        # the same edge inputs did not hurt the server
        assert http.get(api.base + "/api/v1/vehicles/v1/track").status_code == 200
    assert not wrong, "\n".join(wrong)


# -- tokens only in the header; page sessions ----------------------------------------------


def test_tokens_are_refused_in_urls(db_dsn: str, broker: MosquittoBroker) -> None:
    token = make_token(db_dsn)
    with running_api(db_dsn, broker) as api:
        for query in (f"token={token}", f"access_token={token}"):
            r = httpx.get(f"{api.base}/api/v1/vehicles?{query}", headers=_auth(token))
            assert r.status_code == 400 and r.json()["error"] == "token in URL"
            assert "Authorization: Bearer" in r.json()["detail"]
        assert httpx.get(f"{api.base}/api/v1/vehicles", headers=_auth(token)).status_code == 200
        code, reason = _close_of(ws_connect(api, None, path=f"/ws/live?token={token}"))
        assert code == 4401 and reason.startswith("token in URL")
        ws = ws_connect(api, token)  # the header works on the websocket too
        assert recv_json(ws)["type"] == "snapshot"
        ws.close()


def test_page_session_cookie(db_dsn: str, broker: MosquittoBroker) -> None:
    viewer = make_token(db_dsn)
    admin = make_token(db_dsn, Role.ADMIN, "ops")
    with running_api(db_dsn, broker) as api, httpx.Client(base_url=api.base) as page:
        assert page.post("/api/v1/session").status_code == 401  # a token is needed
        r = page.post("/api/v1/session", headers=_auth(viewer))
        assert r.status_code == 200 and r.json()["role"] == "viewer"
        set_cookie = r.headers["set-cookie"]
        for attribute in ("HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"):
            assert attribute in set_cookie
        assert viewer not in set_cookie and r.headers["cache-control"] == "no-store"
        value = page.cookies[SESSION_COOKIE]
        same = {"Origin": api.base}

        # the cookie alone reads REST ...
        assert page.get("/api/v1/vehicles").status_code == 200
        assert page.get("/api/v1/config").json()["role"] == "viewer"
        # ... and opens the live socket from the page's own origin only
        cookie = {"Cookie": f"{SESSION_COOKIE}={value}"}
        ws = ws_connect(api, None, headers={**cookie, "Origin": api.base})
        assert recv_json(ws)["type"] == "snapshot"
        ws.close()
        evil = {**cookie, "Origin": "http://127.0.0.1:1"}  # same site, other origin
        assert _close_of(ws_connect(api, None, headers=evil)) == (
            4403,
            "session cookie from another origin",
        )

        # a session has its token's role, but changes things from the page's origin only
        command = {"cmd": "set_interval", "interval_s": 5}
        url = "/api/v1/vehicles/v1/commands"
        r = page.post(url, json=command, headers=same)
        assert r.status_code == 403 and "needs permission 'command'" in r.json()["detail"]
        admin_page = httpx.Client(base_url=api.base)
        admin_page.post("/api/v1/session", headers=_auth(admin)).raise_for_status()
        for origin in ({}, {"Origin": "http://127.0.0.1:1"}):  # none, or another port
            r = admin_page.post(url, json=command, headers=origin)
            assert r.status_code == 403 and r.json()["error"] == "cross-origin request"
        r = admin_page.post(url, json=command, headers=same)
        assert r.status_code == 202, r.text
        admin_page.close()

        # a forged cookie is refused (and cleared); the real one still works
        forged = value.rsplit(".", 1)[0] + ".AAAA"
        r = httpx.get(f"{api.base}/api/v1/vehicles", headers=_cookie(forged))
        assert r.status_code == 401 and r.json()["error"] == "invalid session"
        assert "Max-Age=0" in r.headers["set-cookie"]
        expired = issue(1, b"x" * 32, -10)
        r = httpx.get(f"{api.base}/api/v1/vehicles", headers=_cookie(expired))
        assert r.status_code == 401 and r.json()["error"] == "session expired"

        # revoking the token ends its sessions
        with psycopg.connect(db_dsn) as conn:
            conn.execute("UPDATE api_tokens SET revoked_at = now() WHERE name = 'test'")
        assert page.get("/api/v1/vehicles").status_code == 401
        code, _ = _close_of(ws_connect(api, None, headers={**cookie, "Origin": api.base}))
        assert code == 4401

        r = page.delete("/api/v1/session")
        assert r.status_code == 204 and "Max-Age=0" in r.headers["set-cookie"]


def test_session_is_renewed_past_half_its_life(db_dsn: str, broker: MosquittoBroker) -> None:
    make_token(db_dsn)
    with psycopg.connect(db_dsn) as conn:
        token_id, stored = conn.execute("SELECT id, token_sha256 FROM api_tokens").fetchone()
    with running_api(db_dsn, broker, api_session_ttl_s=3600) as api:
        young = issue(token_id, bytes(stored), 3000)
        r = httpx.get(f"{api.base}/api/v1/config", headers=_cookie(young))
        assert r.status_code == 200 and "set-cookie" not in r.headers
        old = issue(token_id, bytes(stored), 600)
        r = httpx.get(f"{api.base}/api/v1/routes", headers=_cookie(old))
        assert r.status_code == 200 and "Max-Age=3600" in r.headers["set-cookie"]


# -- failed authentication -----------------------------------------------------------------


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every token lookup the API makes (it runs in a thread of this process)."""
    seen: list[str] = []
    verify, verify_id = auth_module.verify, auth_module.verify_id

    async def counting_verify(pool: Any, secret: str) -> Any:
        seen.append("token")
        return await verify(pool, secret)

    async def counting_verify_id(pool: Any, token_id: int) -> Any:
        seen.append("session")
        return await verify_id(pool, token_id)

    monkeypatch.setattr(auth_module, "verify", counting_verify)
    monkeypatch.setattr(auth_module, "verify_id", counting_verify_id)
    yield seen


def test_failed_authentication_is_rate_limited_before_the_database(
    db_dsn: str, broker: MosquittoBroker, lookups: list[str]
) -> None:
    token = make_token(db_dsn)
    with running_api(db_dsn, broker) as api, httpx.Client() as http:  # 10 per minute
        url = f"{api.base}/api/v1/vehicles"
        codes = [
            http.get(url, headers=_auth(f"flt_wrong-{i}")).status_code for i in range(300)
        ]  # the issue's 300 wrong tokens
        assert codes[:10] == [401] * 10 and set(codes[10:]) == {429}
        assert len(lookups) == 10  # only those ten cost a database lookup
        r = http.get(url, headers=_auth(token))  # blocked before the lookup: even a valid one
        assert r.status_code == 429 and r.json()["error"] == "too many failed authentications"
        assert 1 <= int(r.headers["Retry-After"]) <= 60 and "retry in" in r.json()["detail"]
        assert http.get(url, headers=_cookie("v1.1.9999999999.x")).status_code == 429
        code, reason = _close_of(ws_connect(api, token))
        assert code == 4429 and "too many failed authentications" in reason
        assert len(lookups) == 10
        metrics = api.app.state.metrics.render().decode()
        assert "fleet_api_auth_failures_total 10.0" in metrics
        assert "fleet_api_auth_rate_limited_total 293.0" in metrics  # 290 + 3 just above


def test_the_block_ends_with_its_window(
    db_dsn: str, broker: MosquittoBroker, lookups: list[str]
) -> None:
    token = make_token(db_dsn)
    settings = {"api_auth_max_failures": 3, "api_auth_window_s": 2}
    with running_api(db_dsn, broker, **settings) as api, httpx.Client() as http:
        url = f"{api.base}/api/v1/vehicles"
        for _ in range(3):  # forged session cookies count as failures too
            r = http.get(url, headers=_cookie("v1.1.9999999999.forged"))
            assert r.status_code == 401 and r.json()["error"] == "invalid session"
        r = http.get(url, headers=_auth(token))
        assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 2
        started = time.monotonic()
        wait_for(  # asking meanwhile costs nothing
            lambda: http.get(url, headers=_auth(token)).status_code == 200,
            10,
            "the block to end",
            interval=0.2,
        )
        assert time.monotonic() - started > 0.5
        assert lookups.count("token") == 1  # only the request that got through


def test_a_concurrent_burst_of_guesses_costs_at_most_the_limit(
    db_dsn: str, broker: MosquittoBroker, lookups: list[str]
) -> None:
    async def burst(base: str) -> list[int]:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=20) as http:
            replies = await asyncio.gather(
                *(http.get("/api/v1/vehicles", headers=_auth(f"flt_guess-{i}")) for i in range(300))
            )
        return [r.status_code for r in replies]

    with running_api(db_dsn, broker) as api:
        codes = asyncio.run(burst(api.base))
    assert len(lookups) <= 10, len(lookups)
    assert codes.count(401) == len(lookups) and codes.count(429) == 300 - len(lookups)


# -- request bodies -------------------------------------------------------------------------


def _raw_request(port: int, head: str, timeout: float = 5) -> tuple[int, bytes]:
    """Send only a request head (no body) and read the response: proves the answer came
    without the server waiting for a body."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        status = int(data.split(b" ", 2)[1])
        header, _, body = data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in header.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(body) < length:
            body += sock.recv(65536)
        return status, body


def test_body_limit_and_the_token_check_come_before_the_body(
    db_dsn: str, broker: MosquittoBroker
) -> None:
    viewer = make_token(db_dsn)
    admin = make_token(db_dsn, Role.ADMIN, "ops")
    with running_api(db_dsn, broker) as api:
        port, path = api.settings.api_port, "/api/v1/vehicles/van-1/commands"

        def head(length: int, token: str | None = None) -> str:
            auth = f"Authorization: Bearer {token}\r\n" if token else ""
            return (
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}"
                f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
            )

        status, body = _raw_request(port, head(10_000_000, admin))  # 10 MB announced
        assert status == 413 and b"at most 16384 bytes" in body
        status, body = _raw_request(port, head(100))  # body never sent: no wait for it
        assert status == 401 and b"token required" in body
        status, body = _raw_request(port, head(100, "flt_wrong"))
        assert status == 401 and b"invalid token" in body
        status, body = _raw_request(port, head(100, viewer))
        assert status == 403 and b"forbidden" in body

        url = api.base + path
        chunks = (b'{"cmd": "set_interval", "pad": "' + b"x" * 4096 for _ in range(8))
        r = httpx.post(url, content=chunks, headers=_auth(admin))  # chunked: no length
        assert r.status_code == 413 and r.json()["error"] == "request body too large"
        r = httpx.post(url, content=b"{not json", headers=_auth(admin))
        assert r.status_code == 422 and r.json()["detail"][0]["where"].startswith("body")
        r = httpx.post(url, json={"cmd": "set_interval", "interval_s": 5}, headers=_auth(admin))
        assert r.status_code == 202, r.text
        schema = httpx.get(f"{api.base}/openapi.json").json()["paths"]
        assert "requestBody" in schema["/api/v1/vehicles/{vehicle_id}/commands"]["post"]


# -- the websocket cap ----------------------------------------------------------------------


def test_websocket_cap_per_token_holds(db_dsn: str, broker: MosquittoBroker) -> None:
    greedy = make_token(db_dsn, name="greedy")
    other = make_token(db_dsn, name="other")
    with running_api(db_dsn, broker, ws_max_per_token=3) as api:
        held = [ws_connect(api, greedy) for _ in range(3)]
        for ws in held:
            assert recv_json(ws)["type"] == "snapshot"
        for _ in range(2):  # the cap holds, however often it is asked
            code, reason = _close_of(ws_connect(api, greedy))
            assert code == 1013 and "per-token cap" in reason
        mine = ws_connect(api, other)  # another token is not affected
        assert recv_json(mine)["type"] == "snapshot"
        assert len(api.hub().clients) == 4
        held.pop().close()  # a slot comes back when a connection ends
        wait_for(lambda: len(api.hub().clients) == 3, 5, "the closed client to leave")
        again = ws_connect(api, greedy)
        assert recv_json(again)["type"] == "snapshot"
        r = httpx.get(f"{api.base}/metrics", headers=_auth(other))
        assert "fleet_api_ws_refused_per_token_total 2.0" in r.text
        for ws in [*held, mine, again]:
            ws.close()


# -- /metrics -------------------------------------------------------------------------------


def test_metrics_behind_a_token_or_on_their_own_listener(
    db_dsn: str, broker: MosquittoBroker
) -> None:
    token = make_token(db_dsn)
    with running_api(db_dsn, broker) as api:  # default: the main listener, with a token
        assert httpx.get(f"{api.base}/metrics").status_code == 401
        r = httpx.get(f"{api.base}/metrics", headers=_auth(token))
        assert r.status_code == 200 and "fleet_api_ws_clients" in r.text
        assert "fleet_api_mqtt_connected 1.0" in r.text
    with running_api(db_dsn, broker, api_metrics_port=free_port()) as api:
        r = httpx.get(f"http://127.0.0.1:{api.app.state.metrics_port}/metrics")
        assert r.status_code == 200 and "fleet_api_ws_clients" in r.text  # no token there
        r = httpx.get(f"{api.base}/metrics", headers=_auth(token))
        assert r.status_code == 404  # and not on the public listener


# -- logs -----------------------------------------------------------------------------------


def test_no_token_in_any_log_line(
    db_dsn: str, broker: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """REST, a page session and websockets, some refused: no token reaches a log line.

    uvicorn logs each websocket's path with its query string, so the ``?token=`` tries
    here are the hard case; the in-process server logs into pytest's capture.
    """
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="uvicorn.error")  # handshake headers too
    token = make_token(db_dsn)
    with running_api(db_dsn, broker) as api, httpx.Client(base_url=api.base) as http:
        assert http.get("/api/v1/vehicles", headers=_auth(token)).status_code == 200
        assert http.get(f"/api/v1/vehicles?token={token}").status_code == 400
        assert http.get(f"/?token={token}").status_code == 200  # the page (old demo link)
        assert http.post("/api/v1/session", headers=_auth(token)).status_code == 200
        assert http.get("/api/v1/alerts").status_code == 200
        _close_of(ws_connect(api, None, path=f"/ws/live?token={token}"))
        ws = ws_connect(api, token)
        recv_json(ws)
        ws.close()
        cookie = f"{SESSION_COOKIE}={http.cookies[SESSION_COOKIE]}"
        ws = ws_connect(api, None, headers={"Cookie": cookie, "Origin": api.base})
        recv_json(ws)
        ws.close()
        for i in range(12):  # until rate-limited: the warning names the address only
            http.get("/api/v1/vehicles", headers=_auth(f"{token}{i}"))
    clients = ("httpx", "httpcore", "websockets.client")  # this test's own side
    server = [r for r in caplog.records if not r.name.startswith(clients)]
    text = "\n".join(r.getMessage() for r in server)
    assert "WebSocket /ws/live?token=***" in text  # uvicorn's line, redacted
    assert "Bearer ***" in text  # the websocket handshake's headers at debug level
    assert "address blocked" in text
    secret_part = token.removeprefix("flt_")
    for record in server:
        assert secret_part not in record.getMessage(), record.getMessage()
        assert secret_part not in repr(record.__dict__)
