"""Reconnect delays: exponential backoff with jitter.

After the ``n``-th failed attempt in a row the delay is drawn uniformly from
``[cap_n / 2, cap_n]`` with ``cap_n = min(maximum, initial * 2**n)`` ("equal jitter"):
it grows quickly so a dead broker is not hammered, never exceeds ``maximum``, and the
random half spreads a fleet of trackers that lost the same cell tower so that they do
not all reconnect in the same second.
"""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    def __init__(
        self, initial_s: float = 1.0, maximum_s: float = 60.0, rng: random.Random | None = None
    ) -> None:
        if not 0 < initial_s <= maximum_s:
            raise ValueError(f"need 0 < initial ({initial_s}) <= maximum ({maximum_s})")
        self.initial_s = initial_s
        self.maximum_s = maximum_s
        self._rng = rng or random.Random()
        self.failures = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; counts one more failure."""
        cap = min(self.maximum_s, self.initial_s * 2.0 ** min(self.failures, 32))
        self.failures += 1
        return self._rng.uniform(cap / 2, cap)

    def reset(self) -> None:
        """A connection succeeded: the next failure starts from ``initial_s`` again."""
        self.failures = 0
