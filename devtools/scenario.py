"""One fault scenario for the tests: devices publish, faults run at offsets, queues drain.

:meth:`Scenario.run` starts receipt-aware devices (:class:`devtools.loadgen.LoadGenerator`)
on a broker, runs each fault (a callable) on its own thread at its offset, stops
generating after ``duration_s``, waits until every generated fix is settled by a
receipt, and audits the database (:mod:`devtools.audit`).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from devtools.audit import Audit, audit_run
from devtools.devices import generated_fixes, receipt_aware_devices

__all__ = ["Outcome", "Scenario"]

Fault = tuple[float, Callable[[], None]]


@dataclass(frozen=True)
class Outcome:
    audit: Audit
    confirmed: int
    drained: bool
    drain_s: float
    resent: int
    refused: int  # error PUBACKs the devices ignored (kept the fix, resent it later)
    fault_errors: list[BaseException]

    @property
    def proven(self) -> bool:
        """Every generated fix stored exactly once and receipted; every fault ran."""
        a = self.audit
        return (
            not self.fault_errors
            and self.drained
            and a.generated > 0
            and a.clean
            and a.stored == a.generated == self.confirmed
        )

    def summary(self) -> str:
        a = self.audit
        return (
            f"generated={a.generated} confirmed={self.confirmed} stored={a.stored} "
            f"lost={a.lost} dup_rows={a.dup_rows} stray={a.stray} drained={self.drained} "
            f"drain_s={self.drain_s:.1f} resent={self.resent} refused={self.refused}"
            + (f" fault_errors={self.fault_errors!r}" if self.fault_errors else "")
        )


class Scenario:
    """Receipt-aware devices on one broker and database; :meth:`run` a list of faults."""

    def __init__(
        self,
        *,
        port: int,
        gateway_password: str,
        dsn: str,
        rate: float = 1000.0,
        devices: int = 50,
        resend_after_s: float = 3.0,
        resend_max_s: float = 6.0,
    ) -> None:
        self.dsn = dsn
        prefix = f"T{uuid.uuid4().hex[:6]}-"
        self.devices = receipt_aware_devices(
            port=port,
            gateway_password=gateway_password,
            devices=devices,
            rate=rate,
            vehicle_prefix=prefix,
            resend_after_s=resend_after_s,
            resend_max_s=resend_max_s,
        )

    def run(
        self, faults: Sequence[Fault], duration_s: float = 15.0, drain_timeout_s: float = 60.0
    ) -> Outcome:
        """Generate for ``duration_s`` with ``faults`` at their offsets; drain; audit."""
        fleet = self.devices
        errors: list[BaseException] = []

        def guarded(fn: Callable[[], None]) -> Callable[[], None]:
            def run() -> None:
                try:
                    fn()
                except BaseException as exc:  # reported by the caller, not lost on a thread
                    errors.append(exc)

            return run

        timers = [threading.Timer(at, guarded(fn)) for at, fn in faults]
        fleet.start()
        try:
            for t in timers:
                t.start()
            time.sleep(duration_s)
            fleet.stop_generating()
            for t in timers:
                t.join()
            t0 = time.monotonic()
            drained = fleet.wait_confirmed(drain_timeout_s)
            drain_s = time.monotonic() - t0
        finally:
            for t in timers:
                t.cancel()
            fleet.close()
        return Outcome(
            audit=audit_run(self.dsn, generated_fixes(fleet)),
            confirmed=fleet.confirmed,
            drained=drained,
            drain_s=drain_s,
            resent=fleet.resent,
            refused=fleet.puback_refused,
            fault_errors=errors,
        )
