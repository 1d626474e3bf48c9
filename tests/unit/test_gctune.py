"""tune_gc: startup frozen out of the collector, young generation collected less often,
and reference cycles still collected."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from fleet.gctune import GC_YOUNG_THRESHOLD, tune_gc


@pytest.fixture
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_tune_gc_freezes_startup_and_raises_the_young_threshold(restore_gc: None) -> None:
    older = gc.get_threshold()[1:]
    tune_gc()
    assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *older)
    assert gc.get_freeze_count() > 0


def test_cycles_made_after_tuning_are_still_collected(restore_gc: None) -> None:
    tune_gc()
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    gc.collect()
    assert gone() is None
