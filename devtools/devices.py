"""The receipt-aware devices of the fault runs: :class:`devtools.loadgen.LoadGenerator`.

One generator plays every van through the gateway service user (``svc-gateway``): one
publisher connection, one ``fleet/+/ack`` subscription, every generated fix kept in a
:class:`fleet.receipts.Unconfirmed` book until a storage receipt settles it, resent after
a timeout and after every reconnect; a PUBACK (``0x10`` included) only frees in-flight
room. Fix identity is deterministic (``seq`` per van, ``ts`` from the generator's
:class:`~devtools.loadgen.FixSchedule`), so :func:`generated_fixes` lists every fix it
generated for :func:`devtools.audit.audit_run`.
"""

from __future__ import annotations

from collections.abc import Iterator

from devtools.loadgen import LoadGenerator

__all__ = ["generated_fixes", "receipt_aware_devices"]


def receipt_aware_devices(
    *,
    port: int,
    gateway_password: str,
    devices: int,
    rate: float,
    vehicle_prefix: str,
    resend_after_s: float,
    resend_max_s: float,
    host: str = "127.0.0.1",
) -> LoadGenerator:
    gen = LoadGenerator(
        host,
        port,
        "svc-gateway",
        gateway_password,
        devices,
        rate,
        vehicle_prefix=vehicle_prefix,
        resend_after_s=resend_after_s,
        client_id=f"faults-{vehicle_prefix.rstrip('-')}",
    )
    # the generator caps its resend backoff at 120 s; a fault run wants it shorter
    gen.book.resend_max_s = max(resend_after_s, resend_max_s)
    return gen


def generated_fixes(gen: LoadGenerator) -> Iterator[tuple[str, int]]:
    """Every fix ``gen`` generated, as ``(vehicle_id, ts in epoch ms)``."""
    counts = gen.generated_counts()
    ts = gen.schedule.ts
    for index, vehicle_id in enumerate(gen.device_ids):
        for seq in range(counts[vehicle_id]):
            yield vehicle_id, ts(index, seq)
