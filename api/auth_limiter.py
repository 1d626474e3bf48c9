"""Failed authentication per client address: after too many, 429 until the window passes.

In memory, per API process, bounded: at most ``max_addresses`` addresses are tracked
(the least recently failing is forgotten first) and each keeps at most ``max_failures``
timestamps. IPv6 clients are counted per /64 (one subscriber's network), IPv4 clients
per address. The check costs no database lookup, so a blocked address cannot make the
API do any work for a token guess.

Lookups still in flight count against the limit too: a burst of concurrent guesses is
held to ``max_failures`` lookups just like a sequential one (a refusal for that reason
says "retry in 1 s": it ends as soon as the lookups finish).
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = ["FailedAuthLimiter", "Refusal", "address_key"]

DEFAULT_MAX_ADDRESSES: Final = 10_000
IPV6_GROUP_PREFIX: Final = 64


def address_key(host: str | None) -> str:
    """The unit a limit applies to: an IPv4 address, an IPv6 /64, or the raw host text."""
    if not host:
        return "unknown"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host[:100]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_GROUP_PREFIX), strict=False))
    return str(ip)


@dataclass(frozen=True, slots=True)
class Refusal:
    retry_after_s: int
    in_flight: bool  # refused for lookups still running, not for failures


class FailedAuthLimiter:
    """At most ``max_failures`` failed authentications per address in any ``window_s``."""

    def __init__(
        self,
        max_failures: int,
        window_s: float,
        *,
        max_addresses: int = DEFAULT_MAX_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_addresses = max_addresses
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._in_flight: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._failures)

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def retry_after(self, host: str | None) -> int | None:
        """Seconds until ``host`` may try again (at least 1), or None when it may now."""
        now = self._clock()
        times = self._recent(address_key(host), now)
        if times is None or len(times) < self.max_failures:
            return None
        return max(1, math.ceil(times[0] + self.window_s - now))

    def admit(self, host: str | None) -> Refusal | None:
        """Before a lookup: None (go ahead; it counts as in flight until :meth:`done`)."""
        retry = self.retry_after(host)
        if retry is not None:
            return Refusal(retry, in_flight=False)
        key = address_key(host)
        times = self._failures.get(key)
        running = self._in_flight.get(key, 0)
        if running + (len(times) if times else 0) >= self.max_failures:
            return Refusal(1, in_flight=True)
        self._in_flight[key] = running + 1
        return None

    def done(self, host: str | None, failed: bool) -> bool:
        """After an admitted lookup; True when its failure reached the limit."""
        key = address_key(host)
        running = self._in_flight.get(key, 0) - 1
        if running > 0:
            self._in_flight[key] = running
        else:
            self._in_flight.pop(key, None)
        return self.record_failure(host) if failed else False

    def record_failure(self, host: str | None) -> bool:
        """Count one failure; True when this one reached the limit (worth one log line)."""
        key = address_key(host)
        now = self._clock()
        times = self._recent(key, now)
        if times is None:
            times = self._failures[key] = deque(maxlen=self.max_failures)
        times.append(now)
        self._failures.move_to_end(key)
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)
        return len(times) == self.max_failures
