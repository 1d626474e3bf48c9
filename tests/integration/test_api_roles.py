"""Roles that match the users: viewer, operator, planner, admin, on every route.

Each role's token (and a page session of it) is tried on a route of each permission;
what a role does not grant is a 403 naming the permission, before the route does
anything. The websocket takes every role (all may watch).
"""

from __future__ import annotations

import httpx

from api.app import create_app
from api.tokens import ROLE_PERMISSIONS, Permission, Role
from broker.runner import MosquittoBroker
from fleet.settings import ApiSettings
from tests.fixtures.api import make_token, recv_json, running_api, ws_connect

# One route per permission; the request a holder of it may make.
PROBES: dict[Permission, tuple[str, str, dict[str, object] | None]] = {
    Permission.WATCH: ("GET", "/api/v1/vehicles", None),
    Permission.COMMAND: (
        "POST",
        "/api/v1/vehicles/van-r/commands",
        {"cmd": "set_interval", "interval_s": 5},
    ),
    Permission.PLAN: ("GET", "/api/v1/reports/service", None),
}
ALLOWED_STATUS = {"GET": 200, "POST": 202}


def test_every_role_is_a_subset_of_admin_and_all_may_watch() -> None:
    for role in Role:
        assert Permission.WATCH in ROLE_PERMISSIONS[role]
        assert ROLE_PERMISSIONS[role] <= ROLE_PERMISSIONS[Role.ADMIN]
    assert Permission.PLAN not in ROLE_PERMISSIONS[Role.VIEWER]
    assert Permission.WORK_ALERTS not in ROLE_PERMISSIONS[Role.VIEWER]
    assert Permission.PLAN not in ROLE_PERMISSIONS[Role.OPERATOR]
    assert Permission.COMMAND not in ROLE_PERMISSIONS[Role.PLANNER]


def test_each_role_reaches_what_it_grants_and_nothing_else(
    db_dsn: str, broker: MosquittoBroker
) -> None:
    tokens = {role: make_token(db_dsn, role, f"role-{role.value}") for role in Role}
    wrong: list[str] = []
    with running_api(db_dsn, broker) as api:
        for role, token in tokens.items():
            bearer = {"Authorization": f"Bearer {token}"}
            page = httpx.Client(base_url=api.base)
            page.post("/api/v1/session", headers=bearer).raise_for_status()
            page.headers["Origin"] = api.base  # the page's own origin
            for how, client in (("token", httpx.Client(base_url=api.base, headers=bearer)),
                                ("session", page)):  # fmt: skip
                for permission, (method, path, body) in PROBES.items():
                    r = client.request(method, path, json=body)
                    granted = permission in ROLE_PERMISSIONS[role]
                    want = ALLOWED_STATUS[method] if granted else 403
                    if r.status_code != want:
                        wrong.append(f"{role} by {how}: {method} {path} -> {r.status_code}")
                    elif not granted and f"'{permission.value}'" not in r.json()["detail"]:
                        wrong.append(f"{role} by {how}: 403 does not name the permission")
                client.close()
            me = httpx.get(f"{api.base}/api/v1/config", headers=bearer).json()
            assert me["role"] == role.value
            assert set(me["permissions"]) == {p.value for p in ROLE_PERMISSIONS[role]}
            ws = ws_connect(api, token)
            assert recv_json(ws)["type"] == "snapshot"
            ws.close()
    assert not wrong, "\n".join(wrong)


def test_every_route_names_the_permission_it_needs() -> None:
    """No route is left open by mistake: each API route depends on a permission check
    (the probes and session routes excepted, which authenticate themselves or nobody)."""
    app = create_app(ApiSettings(dsn="postgresql://unused"))
    open_paths = {"/healthz", "/readyz", "/api/v1/session"}
    unguarded = []
    for route in app.routes:
        path = getattr(route, "path", "")
        dependant = getattr(route, "dependant", None)
        if dependant is None or path in open_paths:
            continue
        names = {d.call.__name__ for d in _all_dependencies(dependant) if d.call is not None}
        if not any(name.startswith("require_") for name in names):
            unguarded.append(path)
    assert not unguarded, f"routes without a permission check: {unguarded}"


def _all_dependencies(dependant: object) -> list[object]:
    found = []
    for dep in getattr(dependant, "dependencies", []):
        found.append(dep)
        found.extend(_all_dependencies(dep))
    return found
