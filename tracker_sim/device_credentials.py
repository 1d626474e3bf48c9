"""Per-device MQTT credentials for the simulated vans.

The broker stores only password hashes, so the simulator keeps the clear passwords of
the devices it created in a CSV file (``vehicle_id,password``, mode 0600), by default
``<data-dir>/sim/device-credentials.csv``.
"""

from __future__ import annotations

import csv
import logging
import secrets
from collections.abc import Sequence
from pathlib import Path

from broker.runner import BrokerLayout

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

    Devices missing from ``creds_file`` (or from the broker) get a new password: through
    a running ``fleet broker`` on ``data_dir`` at once, otherwise in its accounts file.
    """
    known = read_credentials(creds_file) if creds_file.exists() else {}
    with BrokerLayout(data_dir).accounts() as accounts:
        users = set(accounts.devices())
        missing = [v for v in vehicle_ids if v not in known or v not in users]
        fresh = {vid: secrets.token_urlsafe(18) for vid in missing}
        if fresh:
            accounts.put(fresh)
    if fresh:
        known.update(fresh)
        write_credentials(creds_file, known)
        log.info(
            "device credentials created", extra={"devices": len(fresh), "file": str(creds_file)}
        )
    return {v: known[v] for v in vehicle_ids}
