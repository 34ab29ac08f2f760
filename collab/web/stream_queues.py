"""A Tornado IOStream's two write queues, holding memory only while they hold
something.

Each IOStream keeps a deque of the buffers it has to write and a deque of the
futures its writes return; a deque, even empty, keeps a block of 64 slots: 1.5 KiB
for every connection, most of them idle. ``release_idle_queues`` swaps both for a
``ReleasingDeque``, which drops its deque whenever it is emptied.
tests/test_stream_queues.py pins which operations Tornado uses on them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from tornado.iostream import IOStream

T = TypeVar("T")


class ReleasingDeque(Generic[T]):
    """What Tornado uses of a deque (append, popleft, [i], len, truth, iteration,
    clear); the deque under it exists only while it holds items."""

    __slots__ = ("_items",)

    def __init__(self, items: deque[T] | None = None) -> None:
        self._items: deque[T] | None = items or None  # None exactly when empty

    def append(self, item: T) -> None:
        if self._items is None:
            self._items = deque()
        self._items.append(item)

    def popleft(self) -> T:
        if self._items is None:
            raise IndexError("pop from an empty deque")
        item = self._items.popleft()
        if not self._items:
            self._items = None
        return item

    def clear(self) -> None:
        self._items = None

    def __getitem__(self, index: int) -> T:
        if self._items is None:
            raise IndexError("deque index out of range")
        return self._items[index]

    def __len__(self) -> int:
        return 0 if self._items is None else len(self._items)

    def __bool__(self) -> bool:
        return self._items is not None

    def __iter__(self) -> Iterator[T]:
        return iter(()) if self._items is None else iter(self._items)


def release_idle_queues(stream: IOStream) -> None:
    """Give ``stream`` write queues that free their storage when empty (what they
    hold now is kept, in order). A stream that closed (its handshake's answer
    could not be written) has no write buffer left: nothing to release."""
    if stream.closed():
        return
    stream._write_futures = ReleasingDeque(stream._write_futures)  # type: ignore[assignment]
    buffer: Any = stream._write_buffer
    buffer._buffers = ReleasingDeque(buffer._buffers)
