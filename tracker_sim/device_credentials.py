"""Per-device MQTT credentials for the simulated vans.

The broker's password file stores only hashes, so the simulator keeps the clear
passwords of the devices it created in a CSV file (``vehicle_id,password``, mode 0600),
by default ``<data-dir>/sim/device-credentials.csv``.
"""

from __future__ import annotations

import csv
import logging
import secrets
from collections.abc import Sequence
from pathlib import Path

from broker.runner import BrokerLayout, reload_running_broker

__all__ = ["CredentialsFileError", "provision_devices", "read_credentials", "write_credentials"]

log = logging.getLogger(__name__)


class CredentialsFileError(ValueError):
    """The credentials file is missing, malformed or lacks a device."""


def read_credentials(path: Path) -> dict[str, str]:
    try:
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
    except OSError as exc:
        raise CredentialsFileError(f"{path}: cannot read credentials: {exc.strerror}") from None
    creds: dict[str, str] = {}
    for n, row in enumerate(rows, 1):
        if n == 1 and row == ["vehicle_id", "password"]:
            continue
        if len(row) != 2 or not row[0] or not row[1]:
            raise CredentialsFileError(f"{path}:{n}: expected 'vehicle_id,password', got {row!r}")
        creds[row[0]] = row[1]
    return creds


def write_credentials(path: Path, creds: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["vehicle_id", "password"])
        writer.writerows(sorted(creds.items()))
    tmp.chmod(0o600)
    tmp.replace(path)


def provision_devices(
    data_dir: Path, vehicle_ids: Sequence[str], creds_file: Path
) -> dict[str, str]:
    """Make sure every van has broker credentials we know the password of.

    Devices missing from ``creds_file`` get a new password in the broker's password file
    (created, or rotated when the broker knows the id but we lost its password); a
    running ``fleet broker`` on ``data_dir`` is told to reload.
    """
    known = read_credentials(creds_file) if creds_file.exists() else {}
    passwords = BrokerLayout(data_dir).passwords()
    users = set(passwords.users())
    missing = [v for v in vehicle_ids if v not in known or v not in users]
    for vid in missing:
        secret = secrets.token_urlsafe(18)
        if vid in users:
            passwords.set(vid, secret)
        else:
            passwords.add_device(vid, secret)
        known[vid] = secret
    if missing:
        write_credentials(creds_file, known)
        reloaded = reload_running_broker(data_dir)
        log.info(
            "device credentials created",
            extra={"devices": len(missing), "file": str(creds_file), "broker_reloaded": reloaded},
        )
    return {v: known[v] for v in vehicle_ids}
