"""Storage receipts: what of a device's fixes is committed to the database.

A broker PUBACK only says the broker has the message; it can still lose it (a crash
before its next autosave, "no matching subscribers" while ingest's session is missing).
So after every commit ingest tells each device, on ``fleet/{vehicle_id}/ack`` (QoS 1,
at most one receipt per device per interval), which of its fixes are now stored::

    {"seq": [[1041, 1056], [1060, 1060]], "rejected": [[1057, 1059]]}

* ``seq``: inclusive ranges of the fixes' ``seq`` that are stored, newly or already (a
  resent duplicate is receipted again, so a device whose receipt was lost stops resending).
* ``ts``: the ``ts`` of stored fixes that carried no ``seq``.
* ``rejected``: ranges of ``seq`` that were refused for good (dead-lettered: out of range,
  too old...); resending them cannot help, so a device drops them too.

Seq ranges rather than a watermark: the platform cannot know about a fix it never saw, so
"everything up to N" would claim fixes lost on the way; ranges state exactly what is
stored and stay short (a device numbering its fixes 1, 2, 3... gets one range per
receipt, however long its backlog). The receipt is idempotent: applying one twice, or an
old one late, never deletes a fix that is not stored.

Server side: :class:`ReceiptBook` (ingest). Device side: :func:`decode_receipt` and
:meth:`Receipt.settles`; :class:`Unconfirmed` keeps the messages of many devices until
their receipts arrive and says which to resend (the simulator's gateway mode, the load
generators).
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final

import msgspec

from fleet.contract import MAX_SEQ, receipt_topic

__all__ = [
    "Receipt",
    "ReceiptBook",
    "ReceiptError",
    "Unconfirmed",
    "decode_receipt",
    "encode_receipt",
    "to_ranges",
]

MAX_RECEIPT_RANGES: Final = 4096  # a receipt larger than this is split over several


class ReceiptError(ValueError):
    """A receipt payload that does not follow the contract."""


class Receipt(msgspec.Struct, omit_defaults=True):
    seq: list[tuple[int, int]] = msgspec.field(default_factory=list)
    ts: list[int] = msgspec.field(default_factory=list)
    rejected: list[tuple[int, int]] = msgspec.field(default_factory=list)

    def settles(self, seq: int) -> bool:
        """True when the fix numbered ``seq`` is stored or refused for good."""
        return _in_ranges(self.seq, seq) or _in_ranges(self.rejected, seq)


def _in_ranges(ranges: list[tuple[int, int]], value: int) -> bool:
    return any(lo <= value <= hi for lo, hi in ranges)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Receipt)


def encode_receipt(receipt: Receipt) -> bytes:
    return _encoder.encode(receipt)


def decode_receipt(payload: bytes) -> Receipt:
    """Parse a receipt; :class:`ReceiptError` when it is not one."""
    try:
        receipt = _decoder.decode(payload)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise ReceiptError(f"not a storage receipt: {exc}") from None
    for lo, hi in (*receipt.seq, *receipt.rejected):
        if not 0 <= lo <= hi < MAX_SEQ:
            raise ReceiptError(f"bad seq range [{lo}, {hi}]")
    return receipt


def to_ranges(values: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted, merged inclusive ranges: ``[5, 1, 2, 3]`` → ``[(1, 3), (5, 5)]``."""
    ranges: list[tuple[int, int]] = []
    for v in sorted(set(values)):
        if ranges and v == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], v)
        else:
            ranges.append((v, v))
    return ranges


@dataclass(slots=True)
class _Pending:
    stored: set[int] = field(default_factory=set)
    stored_ts: set[int] = field(default_factory=set)
    rejected: set[int] = field(default_factory=set)


class ReceiptBook:
    """Ingest's side: collect what each committed batch settled, hand out receipts.

    Not thread-safe: one owner (the ingest loop) calls :meth:`stored`, :meth:`rejected`
    and :meth:`drain`.
    """

    def __init__(self) -> None:
        self._pending: dict[str, _Pending] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def stored(self, vehicle_id: str, seq: int | None, ts: int) -> None:
        p = self._pending.get(vehicle_id)
        if p is None:
            p = self._pending[vehicle_id] = _Pending()
        if seq is None:
            p.stored_ts.add(ts)
        else:
            p.stored.add(seq)

    def rejected(self, vehicle_id: str, seq: int) -> None:
        p = self._pending.get(vehicle_id)
        if p is None:
            p = self._pending[vehicle_id] = _Pending()
        p.rejected.add(seq)

    def drain(self) -> Iterator[tuple[str, bytes]]:
        """Every pending receipt as ``(topic, payload)``; the book is empty afterwards."""
        pending, self._pending = self._pending, {}
        for vehicle_id, p in pending.items():
            topic = receipt_topic(vehicle_id)
            stored = to_ranges(p.stored)
            rejected = to_ranges(p.rejected)
            ts = sorted(p.stored_ts)
            while stored or rejected or ts:
                yield (
                    topic,
                    encode_receipt(
                        Receipt(
                            seq=stored[:MAX_RECEIPT_RANGES],
                            ts=ts[:MAX_RECEIPT_RANGES],
                            rejected=rejected[:MAX_RECEIPT_RANGES],
                        )
                    ),
                )
                stored = stored[MAX_RECEIPT_RANGES:]
                rejected = rejected[MAX_RECEIPT_RANGES:]
                ts = ts[MAX_RECEIPT_RANGES:]


@dataclass(slots=True)
class _Message:
    vehicle_id: str
    first_seq: int
    topic: str
    payload: bytes
    open_seqs: set[int]
    deadline: float
    wait_s: float


class Unconfirmed:
    """Messages sent for many devices, each kept until receipts settle all of its fixes.

    Each message carries fixes with consecutive ``seq`` numbers ``first_seq ..
    first_seq + count - 1``. A message not settled ``resend_after_s`` after it was sent
    is due again (:meth:`due`), then after twice that, up to ``resend_max_s``; after a
    reconnect every open message is due at once (:meth:`all_due`). Raising
    ``resend_after_s`` (the owner does when receipts lag) applies to messages already
    sent, too. Not thread-safe.
    """

    def __init__(self, resend_after_s: float = 10.0, resend_max_s: float = 120.0) -> None:
        self.resend_after_s = resend_after_s
        self.resend_max_s = resend_max_s
        self._by_vehicle: dict[str, dict[int, _Message]] = {}
        self._starts: dict[str, list[int]] = {}  # sorted first_seq per vehicle
        self._timers: list[tuple[float, str, int]] = []
        self.open_fixes = 0
        self.settled_fixes = 0

    def __len__(self) -> int:
        return sum(len(m) for m in self._by_vehicle.values())

    def sent(
        self, vehicle_id: str, first_seq: int, count: int, topic: str, payload: bytes, now: float
    ) -> None:
        """Record a message the first time it is sent."""
        messages = self._by_vehicle.setdefault(vehicle_id, {})
        if first_seq in messages:
            return
        deadline = now + self.resend_after_s
        messages[first_seq] = _Message(
            vehicle_id,
            first_seq,
            topic,
            payload,
            set(range(first_seq, first_seq + count)),
            deadline,
            self.resend_after_s,
        )
        starts = self._starts.setdefault(vehicle_id, [])
        if not starts or first_seq > starts[-1]:
            starts.append(first_seq)
        else:
            starts.insert(bisect_left(starts, first_seq), first_seq)
        heapq.heappush(self._timers, (deadline, vehicle_id, first_seq))
        self.open_fixes += count

    def apply(self, vehicle_id: str, receipt: Receipt) -> int:
        """Settle what ``receipt`` covers; return how many fixes were newly settled."""
        messages = self._by_vehicle.get(vehicle_id)
        if not messages:
            return 0
        starts = self._starts[vehicle_id]
        settled = 0
        for lo, hi in (*receipt.seq, *receipt.rejected):
            # messages that may overlap [lo, hi]: first_seq <= hi, from the one before lo
            i = max(bisect_right(starts, lo) - 1, 0)
            j = bisect_right(starts, hi)
            for first in starts[i:j]:
                m = messages.get(first)
                if m is None:
                    continue
                before = len(m.open_seqs)
                m.open_seqs.difference_update(range(max(lo, first), hi + 1))
                settled += before - len(m.open_seqs)
        if settled:
            for first in [f for f, m in messages.items() if not m.open_seqs]:
                del messages[first]
                starts.pop(bisect_left(starts, first))
            if not messages:
                del self._by_vehicle[vehicle_id]
                del self._starts[vehicle_id]
        self.open_fixes -= settled
        self.settled_fixes += settled
        return settled

    def due(self, now: float, limit: int = 1000) -> list[tuple[str, bytes]]:
        """Messages whose resend timer ran out (each rescheduled with a longer wait)."""
        out: list[tuple[str, bytes]] = []
        timers = self._timers
        while timers and timers[0][0] <= now and len(out) < limit:
            deadline, vehicle_id, first = heapq.heappop(timers)
            m = self._by_vehicle.get(vehicle_id, {}).get(first)
            if m is None or m.deadline != deadline:
                continue  # settled, or rescheduled since
            sent_at = deadline - m.wait_s
            if m.wait_s < self.resend_after_s and now < sent_at + self.resend_after_s:
                # The timeout was raised since this was sent (receipts lag: ingest runs
                # behind): what is still queued for it is not resent before that.
                m.wait_s = self.resend_after_s
                m.deadline = sent_at + m.wait_s
                heapq.heappush(timers, (m.deadline, vehicle_id, first))
                continue
            out.append((m.topic, m.payload))
            m.wait_s = min(m.wait_s * 2, self.resend_max_s)
            m.deadline = now + m.wait_s
            heapq.heappush(timers, (m.deadline, vehicle_id, first))
        return out

    def all_due(self, now: float) -> None:
        """After a reconnect: every open message is due now (resent oldest first)."""
        self._timers = []
        for vehicle_id, messages in self._by_vehicle.items():
            for first, m in messages.items():
                m.deadline = now
                m.wait_s = self.resend_after_s
                self._timers.append((now, vehicle_id, first))
        heapq.heapify(self._timers)
