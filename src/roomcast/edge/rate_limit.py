"""Token buckets by key, for join rates (edge/rtc.py)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from roomcast.ratelimit import TokenBucket


class RateLimiter:
    """``rate`` events per second per key, bursts of ``burst``; a rate of 0 allows everything.

    Memory is bounded: beyond ``max_keys`` the least recently used key is forgotten (its next
    event starts from a full bucket). Forgetting only idle keys means a flood of new keys
    cannot reset the budget of a key that is in use."""

    def __init__(
        self,
        rate: float,
        burst: int,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate = rate
        self._burst = float(max(burst, 1))
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def allow(self, key: str) -> bool:
        """Take one token from ``key``'s bucket; False when it is empty."""
        if self._rate <= 0:
            return True
        bucket = self._buckets.pop(key, None) or TokenBucket(self._rate, self._burst)
        self._buckets[key] = bucket  # now the most recently used
        if len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return bucket.allow(self._clock())

    def __len__(self) -> int:
        return len(self._buckets)
