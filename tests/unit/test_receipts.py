"""Storage receipts: the payload, ingest's book and the device-side Unconfirmed tracker."""

from __future__ import annotations

import pytest

from fleet.receipts import (
    MAX_RECEIPT_RANGES,
    Receipt,
    ReceiptBook,
    ReceiptError,
    Unconfirmed,
    decode_receipt,
    encode_receipt,
    to_ranges,
)


def test_ranges_are_sorted_merged_and_exact() -> None:
    assert to_ranges([5, 1, 2, 3, 3]) == [(1, 3), (5, 5)]
    assert to_ranges([]) == []
    # a gap is never papered over: 4 was not stored, so it is in no range
    assert not any(lo <= 4 <= hi for lo, hi in to_ranges([1, 2, 3, 5, 6]))


def test_book_gives_one_receipt_per_device_and_empties() -> None:
    book = ReceiptBook()
    for seq in range(10, 20):
        book.stored("A", seq, 1000 + seq)
    book.stored("A", None, 777)
    book.rejected("A", 20)
    book.stored("B", 1, 5)
    out = dict(book.drain())
    assert set(out) == {"fleet/A/ack", "fleet/B/ack"}
    a = decode_receipt(out["fleet/A/ack"])
    assert a.seq == [(10, 19)] and a.ts == [777] and a.rejected == [(20, 20)]
    assert a.settles(15) and a.settles(20) and not a.settles(21)
    assert len(book) == 0 and list(book.drain()) == []


def test_a_huge_scattered_receipt_is_split() -> None:
    book = ReceiptBook()
    for seq in range(0, 4 * MAX_RECEIPT_RANGES, 2):  # every other seq: one range each
        book.stored("A", seq, seq)
    receipts = [decode_receipt(p) for _, p in book.drain()]
    assert len(receipts) == 2
    assert sum(len(r.seq) for r in receipts) == 2 * MAX_RECEIPT_RANGES


@pytest.mark.parametrize(
    "payload",
    [b"", b"not json", b'{"seq": [[5, 1]]}', b'{"seq": [[-1, 2]]}', b'{"seq": "x"}',
     b'{"seq": [[0, 9223372036854775808]]}', b"[" * 5000],
)  # fmt: skip
def test_garbage_receipts_are_refused(payload: bytes) -> None:
    with pytest.raises(ReceiptError):
        decode_receipt(payload)


def test_unconfirmed_settles_resends_with_backoff_and_after_reconnect() -> None:
    u = Unconfirmed(resend_after_s=10, resend_max_s=40)
    u.sent("A", 1, 10, "fleet/A/telemetry", b"batch1-10", now=0)
    u.sent("A", 11, 1, "fleet/A/telemetry", b"fix11", now=0)
    u.sent("B", 1, 1, "fleet/B/telemetry", b"b1", now=0)
    assert u.open_fixes == 12
    assert u.due(now=5) == []
    # a partial receipt settles part of a batch; the batch stays open
    assert u.apply("A", Receipt(seq=[(1, 4)], rejected=[(5, 5)])) == 5
    assert u.apply("A", Receipt(seq=[(1, 4)])) == 0  # idempotent
    assert u.apply("A", Receipt(seq=[(11, 11)])) == 1
    assert u.apply("C", Receipt(seq=[(1, 100)])) == 0  # unknown device: nothing
    assert u.open_fixes == 6
    assert sorted(u.due(now=10)) == [("fleet/A/telemetry", b"batch1-10"),
                                     ("fleet/B/telemetry", b"b1")]  # fmt: skip
    assert u.due(now=25) == []  # next wait is 20 s
    assert len(u.due(now=30)) == 2
    assert len(u.due(now=70)) == 2  # capped at 40 s
    u.all_due(now=71)
    assert len(u.due(now=71)) == 2
    assert u.apply("A", Receipt(seq=[(6, 10)])) == 5
    assert u.apply("B", Receipt(rejected=[(1, 1)])) == 1
    assert len(u) == 0 and u.open_fixes == 0 and u.settled_fixes == 12
    assert u.due(now=1000) == []


def test_a_raised_resend_timeout_holds_back_messages_already_sent() -> None:
    u = Unconfirmed(resend_after_s=10, resend_max_s=120)
    u.sent("A", 1, 1, "fleet/A/telemetry", b"a1", now=0)
    u.sent("B", 1, 1, "fleet/B/telemetry", b"b1", now=8)
    u.resend_after_s = 30  # receipts lag: ingest runs behind
    assert u.due(now=11) == [] and u.due(now=29) == []
    assert u.due(now=30) == [("fleet/A/telemetry", b"a1")]  # 30 s after it was sent
    assert u.due(now=38) == [("fleet/B/telemetry", b"b1")]
    u.resend_after_s = 10  # caught up: the next waits double from what they were
    assert u.due(now=89) == [] and u.due(now=90) == [("fleet/A/telemetry", b"a1")]


def test_receipt_round_trip() -> None:
    r = Receipt(seq=[(1, 3)], ts=[9], rejected=[(4, 4)])
    assert decode_receipt(encode_receipt(r)) == r
    assert encode_receipt(Receipt(seq=[(1, 3)])) == b'{"seq":[[1,3]]}'
