"""Following one of the store's feeds (committed records, published awareness)
for as long as the server runs, whatever the store does meanwhile.

:meth:`FeedFollower.batches` yields the feed's batches from its position; when
the store fails it follows again from the last position reached, after a pause
that grows (collab.backoff); when that position cannot be followed from any more
(FeedLost) it follows from the feed's end, and whoever follows learns that it may
have missed something (``on_recovered`` runs once batches come again).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, TypeVar

from collab.backoff import RETRY_MAX_S, Backoff
from collab.errors import FeedLost, StoreError
from collab.store import FeedPosition

T = TypeVar("T")


class FeedFollower(Generic[T]):
    def __init__(
        self,
        name: str,
        *,
        end: Callable[[], Awaitable[FeedPosition]],
        follow: Callable[[FeedPosition], AsyncIterator[tuple[FeedPosition, list[T]]]],
        poll_s: float,
        log: logging.Logger,
        on_recovered: Callable[[], None] | None = None,
        keep_position_on_fault: bool = False,
    ) -> None:
        self._name = name  # as log lines name it: "the feed"
        self._end = end  # the feed's current end
        self._follow = follow  # the feed from a position
        self._poll_s = poll_s
        self._log = log
        self._on_recovered = on_recovered
        # After a fault that is no store error: follow again from the same position
        # (what must miss nothing: webhooks), or from the feed's end (rooms, which
        # the audit catches up, past a record that would fail again and again).
        self._keep_position_on_fault = keep_position_on_fault
        self.position: FeedPosition | None = None  # where to follow from next
        self.failure: Exception | None = None  # while the feed cannot be followed

    async def batches(self) -> AsyncIterator[tuple[FeedPosition, list[T]]]:
        """``(position, items)`` batches for ever (consume under
        ``contextlib.aclosing()``); ``position`` follows on after the batch."""
        backoff = Backoff(self._poll_s, RETRY_MAX_S)
        while True:
            try:
                if self.position is None:
                    self.position = await self._end()
                async with contextlib.aclosing(self._follow(self.position)) as feed:
                    async for reached, items in feed:
                        self.position = reached
                        if self.failure is not None:
                            self._log.warning("%s recovered", self._name)
                            self.failure = None
                            if self._on_recovered is not None:
                                self._on_recovered()
                        backoff.reset()
                        yield reached, items
            except FeedLost as exc:
                self._log.warning(
                    "%s cannot continue from its position (%s): following from its end",
                    self._name,
                    exc,
                )
                self.failure = exc
                self.position = None
            except StoreError as exc:
                if self.failure is None:
                    self._log.error("following %s failed, retrying: %s", self._name, exc)
                self.failure = exc
            except Exception as exc:  # a fault in a store's feed must not end following
                self._log.exception("%s failed unexpectedly, following it again", self._name)
                self.failure = exc
                if not self._keep_position_on_fault:
                    self.position = None
            # Whatever failed (a lost position included) may fail again at once.
            await backoff.wait()
