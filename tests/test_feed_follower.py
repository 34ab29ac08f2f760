"""Following a store's feed through faults (collab.core.feed.FeedFollower): a fault
that is no store error sends rooms on from the feed's end (the audit catches them
up), and a follower that must miss nothing (webhooks) on from where it was."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import pytest

from collab.core.feed import FeedFollower

log = logging.getLogger("test")


def follower(keep: bool) -> tuple[FeedFollower[int], list[object]]:
    """A follower of a feed of numbers whose first reading fails with a KeyError
    (a record the store cannot read); the positions it was followed from."""
    asked: list[object] = []

    async def end() -> int:
        return 100  # the feed's end

    async def follow(after: object) -> AsyncIterator[tuple[object, list[int]]]:
        asked.append(after)
        if len(asked) == 1:
            raise KeyError("a record the store cannot read")
        yield after, []
        yield int(after) + 1, [int(after) + 1]  # type: ignore[call-overload]

    feed = FeedFollower(
        "the test feed", end=end, follow=follow, poll_s=0.001, log=log, keep_position_on_fault=keep
    )
    return feed, asked


@pytest.mark.allow_error_logs
@pytest.mark.parametrize(("keep", "resumed_from"), [(True, 7), (False, 100)])
async def test_after_an_unexpected_fault_a_follower_goes_on_from_where_it_says(
    keep: bool, resumed_from: int
):
    feed, asked = follower(keep)
    feed.position = 7
    async with contextlib.aclosing(feed.batches()) as batches:
        async for _, items in batches:
            if items:
                break
    assert asked == [7, resumed_from]
    assert items == [resumed_from + 1]
