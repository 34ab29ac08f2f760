"""Pauses between retries: exponential, bounded, optionally with full jitter.

backoff = Backoff(first_s=0.05, max_s=5.0)
while True:
    try:
        return await attempt()
    except StoreError:
        await backoff.wait()      # 0.05 s, 0.1 s, 0.2 s ... then 5 s each time
"""

from __future__ import annotations

import asyncio
import random

RETRY_FIRST_S = 0.05  # the first pause after a failure, unless a caller knows better
RETRY_MAX_S = 5.0  # the longest pause between retries of a store read or feed


class Backoff:
    """The pause before each retry: ``first_s``, doubling after each up to ``max_s``;
    :meth:`reset` after a success. With ``jitter``, each pause is drawn uniformly
    from zero to that ("full jitter"), so that clients cut off together do not all
    come back together."""

    def __init__(
        self, first_s: float = RETRY_FIRST_S, max_s: float = RETRY_MAX_S, *, jitter: bool = False
    ) -> None:
        if first_s <= 0 or max_s <= 0:
            raise ValueError("backoff pauses must be positive")
        self.first_s = min(first_s, max_s)
        self.max_s = max_s
        self.jitter = jitter
        self._next_s = self.first_s

    @property
    def next_s(self) -> float:
        """The pause the next :meth:`pause` takes (before jitter)."""
        return self._next_s

    def pause(self) -> float:
        """The pause to take now (seconds); the next one is twice as long."""
        delay = self._next_s
        self._next_s = min(self._next_s * 2, self.max_s)
        return random.uniform(0, delay) if self.jitter else delay

    async def wait(self) -> None:
        await asyncio.sleep(self.pause())

    def reset(self) -> None:
        self._next_s = self.first_s
