"""Mosquitto password file management (the ``$7$`` PBKDF2-SHA512 format of Mosquitto 2.0).

Hashes are made here rather than by shelling out to ``mosquitto_passwd`` so that
credentials can be managed on a host without the broker installed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Final

from fleet.contract import VEHICLE_ID_RE

__all__ = [
    "SERVICE_USERS",
    "CredentialError",
    "PasswordFile",
    "hash_password",
    "verify_password",
]

ITERATIONS: Final = 101  # mosquitto_passwd's default
SERVICE_PREFIX: Final = "svc-"
SERVICE_USERS: Final = ("svc-ingest", "svc-api", "svc-gateway")


class CredentialError(ValueError):
    """A username or password file problem, phrased for the operator."""


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, ITERATIONS)
    return f"$7${ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        _, kind, iterations, salt_b64, digest_b64 = encoded.split("$")
    except ValueError:
        return False
    if kind != "7":
        return False
    digest = hashlib.pbkdf2_hmac(
        "sha512", password.encode(), base64.b64decode(salt_b64), int(iterations)
    )
    return hmac.compare_digest(digest, base64.b64decode(digest_b64))


class PasswordFile:
    """Read-modify-write of a Mosquitto password file (``user:hash`` lines)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, str]:
        if not self.path.exists():
            return {}
        users: dict[str, str] = {}
        for n, line in enumerate(self.path.read_text().splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            user, sep, hashed = line.partition(":")
            if not sep:
                raise CredentialError(f"{self.path}:{n}: expected 'user:hash', got {line!r}")
            users[user] = hashed
        return users

    def _write(self, users: dict[str, str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(f"{u}:{h}\n" for u, h in sorted(users.items())))
        tmp.chmod(0o600)
        tmp.replace(self.path)

    def users(self) -> list[str]:
        return sorted(self._read())

    def set(self, username: str, password: str | None = None) -> str:
        """Create or replace a user; return the password (generated when not given)."""
        if ":" in username or not username:
            raise CredentialError(f"invalid username {username!r}")
        password = password or secrets.token_urlsafe(18)
        users = self._read()
        users[username] = hash_password(password)
        self._write(users)
        return password

    def add_device(self, vehicle_id: str, password: str | None = None) -> str:
        if not VEHICLE_ID_RE.match(vehicle_id):
            raise CredentialError(
                f"vehicle id {vehicle_id!r} must be 1-64 of A-Z a-z 0-9 _ . - "
                "and start with a letter or digit"
            )
        if vehicle_id.startswith(SERVICE_PREFIX):
            raise CredentialError(f"ids starting with {SERVICE_PREFIX!r} are reserved for services")
        if vehicle_id in self._read():
            raise CredentialError(
                f"device {vehicle_id!r} already exists; remove it first to rotate its password"
            )
        return self.set(vehicle_id, password)

    def remove(self, username: str) -> bool:
        users = self._read()
        if users.pop(username, None) is None:
            return False
        self._write(users)
        return True

    def check(self, username: str, password: str) -> bool:
        hashed = self._read().get(username)
        return hashed is not None and verify_password(password, hashed)
