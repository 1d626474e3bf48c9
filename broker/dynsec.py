"""Device and service accounts in Mosquitto's dynamic-security plugin.

Why this plugin rather than a password file and an ACL file (docs/operations.md, "Who may
do what"): the ACL file is checked only when a message is delivered, so Mosquitto grants
any SUBSCRIBE — a device subscribing to ``$share/ingest/fleet/+/telemetry`` joined the
ingest group and silently swallowed a share of the fleet's telemetry. Dynamic security
checks subscriptions when they are made (SUBACK 0x87), binds a device's account to its
client id (no device can take over another's session, or the ingest worker's), and
changes accounts while the broker runs, through its ``$CONTROL`` topic: no file rewrite,
no SIGHUP, no bind-mount inode trouble.

Roles come from ``broker/roles.json``. Every device gets a client (username = vehicle id,
client id = vehicle id) and a role ``device:<vehicle id>`` with its own literal topics
(Mosquitto 2.0's dynamic security has no ``%u`` substitution).

Two ways to change accounts, one interface (:class:`Accounts`):

* the broker is stopped: read-modify-write of the plugin's JSON file (which the broker
  reads at start-up);
* the broker runs: commands to ``$CONTROL/dynamic-security/v1`` as ``svc-admin`` (the
  plugin then saves the file itself).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

from fleet.contract import VEHICLE_ID_RE

__all__ = [
    "ADMIN_USER",
    "SERVICE_PREFIX",
    "SERVICE_USERS",
    "Accounts",
    "ControlChannel",
    "CredentialError",
    "DynsecFile",
    "check_device_id",
    "device_role",
    "load_roles",
]

ITERATIONS: Final = 101  # what mosquitto_ctrl uses
SERVICE_PREFIX: Final = "svc-"
ADMIN_USER: Final = "svc-admin"
SERVICE_USERS: Final = ("svc-ingest", "svc-api", "svc-gateway", ADMIN_USER)
ROLES_FILE: Final = Path(__file__).resolve().parent / "roles.json"
CONTROL_TOPIC: Final = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC: Final = CONTROL_TOPIC + "/response"
CONTROL_BATCH: Final = 200  # commands per control message


class CredentialError(ValueError):
    """An account problem, phrased for the operator."""


def load_roles(path: Path = ROLES_FILE) -> dict[str, list[dict[str, str]]]:
    data = json.loads(path.read_text())
    return {name: acls for name, acls in data.items() if not name.startswith("_")}


def check_device_id(vehicle_id: str) -> None:
    if not VEHICLE_ID_RE.match(vehicle_id):
        raise CredentialError(
            f"vehicle id {vehicle_id!r} must be 1-64 of A-Z a-z 0-9 _ . - "
            "and start with a letter or digit"
        )
    if vehicle_id.startswith(SERVICE_PREFIX):
        raise CredentialError(f"ids starting with {SERVICE_PREFIX!r} are reserved for services")


def device_role(vehicle_id: str) -> str:
    return f"device:{vehicle_id}"


def _acls(template: list[dict[str, str]], vehicle_id: str = "") -> list[dict[str, Any]]:
    return [
        {
            "acltype": a["acltype"],
            "topic": a["topic"].replace("{vehicle_id}", vehicle_id),
            "priority": 0,
            "allow": True,
        }
        for a in template
    ]


def _hashed(password: str) -> dict[str, Any]:
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, ITERATIONS)
    return {
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": ITERATIONS,
    }


def verify(client: dict[str, Any], password: str) -> bool:
    salt = base64.b64decode(client.get("salt", ""))
    digest = hashlib.pbkdf2_hmac(
        "sha512", password.encode(), salt, int(client.get("iterations", ITERATIONS))
    )
    return secrets.compare_digest(base64.b64encode(digest).decode(), client.get("password", ""))


class DynsecFile:
    """The plugin's JSON file, edited while the broker is stopped."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"clients": [], "groups": [], "roles": [], "defaultACLAccess": {}}
        try:
            data: dict[str, Any] = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise CredentialError(f"{self.path}: not a dynamic-security file: {exc}") from None
        return data

    def write(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.chmod(0o600)
        tmp.replace(self.path)

    def ensure_services(self, passwords: dict[str, str]) -> None:
        """Service clients and every role from roles.json; deny by default."""
        roles = load_roles()
        data = self.read()
        data["defaultACLAccess"] = {
            "publishClientSend": False,
            "publishClientReceive": False,
            "subscribe": False,
            "unsubscribe": True,
        }
        kept = [r for r in data.get("roles", []) if r["rolename"] not in roles]
        data["roles"] = kept + [
            {"rolename": name, "acls": _acls(acls)}
            for name, acls in roles.items()
            if name != "device"
        ]
        clients = {c["username"]: c for c in data.get("clients", [])}
        for user, password in passwords.items():
            client = clients.get(user)
            if client is None or not verify(client, password):
                clients[user] = {
                    "username": user,
                    "roles": [{"rolename": user}],
                    **_hashed(password),
                }
        data["clients"] = list(clients.values())
        self.write(data)

    def devices(self) -> list[str]:
        return sorted(
            c["username"]
            for c in self.read().get("clients", [])
            if not c["username"].startswith(SERVICE_PREFIX)
        )

    def put_devices(self, creds: dict[str, str]) -> None:
        template = load_roles()["device"]
        data = self.read()
        clients = {c["username"]: c for c in data.get("clients", [])}
        roles = {r["rolename"]: r for r in data.get("roles", [])}
        for vid, password in creds.items():
            role = device_role(vid)
            roles[role] = {"rolename": role, "acls": _acls(template, vid)}
            clients[vid] = {
                "username": vid,
                "clientid": vid,
                "roles": [{"rolename": role}],
                **_hashed(password),
            }
        data["clients"], data["roles"] = list(clients.values()), list(roles.values())
        self.write(data)

    def remove_device(self, vehicle_id: str) -> bool:
        data = self.read()
        before = len(data.get("clients", []))
        data["clients"] = [c for c in data.get("clients", []) if c["username"] != vehicle_id]
        role = device_role(vehicle_id)
        data["roles"] = [r for r in data.get("roles", []) if r["rolename"] != role]
        self.write(data)
        return len(data["clients"]) < before

    def check(self, username: str, password: str) -> bool:
        for c in self.read().get("clients", []):
            if c["username"] == username:
                return verify(c, password)
        return False


class ControlChannel:
    """Commands to a running broker's dynamic-security plugin, as ``svc-admin``."""

    def __init__(self, host: str, port: int, password: str, timeout: float = 10.0) -> None:
        import paho.mqtt.client as mqtt  # noqa: PLC0415
        from paho.mqtt.enums import CallbackAPIVersion  # noqa: PLC0415

        self.timeout = timeout
        self._responses: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{ADMIN_USER}-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self._client.username_pw_set(ADMIN_USER, password)
        self._client.on_message = self._on_message
        subscribed = threading.Event()
        self._client.on_connect = lambda c, u, f, rc, p: (
            None if rc.is_failure else c.subscribe(RESPONSE_TOPIC, qos=1)
        )
        self._client.on_subscribe = lambda c, u, mid, rcs, p: (
            subscribed.set() if not rcs[0].is_failure else None
        )
        try:
            self._client.connect(host, port, keepalive=30)
        except OSError as exc:
            raise CredentialError(f"cannot reach the broker at {host}:{port}: {exc}") from None
        self._client.loop_start()
        if not subscribed.wait(timeout):
            self.close()
            raise CredentialError(
                f"the broker at {host}:{port} did not accept {ADMIN_USER} "
                "(wrong admin password in the data dir's service-credentials.env?)"
            )

    def _on_message(self, client: object, userdata: object, msg: Any) -> None:
        with self._cond:
            self._responses.append(json.loads(msg.payload))
            self._cond.notify_all()

    def run(
        self, commands: list[dict[str, Any]], ignore: Iterable[str] = ()
    ) -> list[dict[str, Any]]:
        """Send commands in batches; raise on an error other than those in ``ignore``."""
        allowed = set(ignore)
        results: list[dict[str, Any]] = []
        for i in range(0, len(commands), CONTROL_BATCH):
            chunk = commands[i : i + CONTROL_BATCH]
            with self._cond:
                self._responses.clear()
            self._client.publish(CONTROL_TOPIC, json.dumps({"commands": chunk}), qos=1)
            deadline = time.monotonic() + self.timeout
            with self._cond:
                while not self._responses:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise CredentialError("the broker's dynamic-security plugin did not answer")
                    self._cond.wait(left)
                answer = self._responses.pop(0)
            for response in answer.get("responses", []):
                error = response.get("error")
                if error and error not in allowed:
                    raise CredentialError(f"broker refused {response.get('command')}: {error}")
                results.append(response)
        return results

    def usernames(self) -> list[str]:
        [listed] = self.run([{"command": "listClients", "count": -1}])
        return [str(u) for u in listed.get("data", {}).get("clients", [])]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


class Accounts:
    """Device accounts: through the running broker when there is one, else in the file."""

    def __init__(self, file: DynsecFile | None, control: ControlChannel | None) -> None:
        """``file`` alone: the broker is stopped; ``control``: it runs (``file`` may then be
        None when the broker is elsewhere, e.g. another container)."""
        assert file is not None or control is not None
        self.file = file
        self.control = control

    def devices(self) -> list[str]:
        if self.file is not None:
            return self.file.devices()  # the plugin saves every change: the file is current
        assert self.control is not None
        return sorted(u for u in self.control.usernames() if not u.startswith(SERVICE_PREFIX))

    def add(self, vehicle_id: str, password: str | None = None) -> str:
        """Create a device; its password (generated when not given) is returned."""
        check_device_id(vehicle_id)
        if vehicle_id in self.devices():
            raise CredentialError(
                f"device {vehicle_id!r} already exists; remove it first to rotate its password"
            )
        password = password or secrets.token_urlsafe(18)
        self.put({vehicle_id: password})
        return password

    def put(self, creds: dict[str, str]) -> None:
        """Create or replace devices with these passwords."""
        for vid in creds:
            check_device_id(vid)
        if self.control is None:
            assert self.file is not None
            self.file.put_devices(creds)
            return
        template = load_roles()["device"]
        commands: list[dict[str, Any]] = []
        for vid, password in creds.items():
            role = device_role(vid)
            commands += [
                {"command": "deleteClient", "username": vid},
                {"command": "deleteRole", "rolename": role},
                {"command": "createRole", "rolename": role, "acls": _acls(template, vid)},
                {
                    "command": "createClient",
                    "username": vid,
                    "clientid": vid,
                    "password": password,
                    "roles": [{"rolename": role}],
                },
            ]
        self.control.run(commands, ignore=("Client not found", "Role not found"))

    def remove(self, vehicle_id: str) -> bool:
        if vehicle_id not in self.devices():
            return False
        if self.control is None:
            assert self.file is not None
            return self.file.remove_device(vehicle_id)
        self.control.run(
            [
                {"command": "deleteClient", "username": vehicle_id},
                {"command": "deleteRole", "rolename": device_role(vehicle_id)},
            ],
            ignore=("Role not found",),
        )
        return True
