"""Following updates for a reader that is not an editor (the Server-Sent Events
routes): one document's (:func:`follow`: what the log holds after a seq, then
what the room stores from then on, each once, in seq order, with a bounded
buffer), or every document's (:func:`follow_feed`: the store's feed, which every
instance's commits go through, from a place in it)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, NamedTuple

from collab.core.manager import RoomManager
from collab.store import DeletionRecord, FeedPosition, FeedRecord, Store, UpdateRecord


class DocumentReplaced(Exception):
    """The document was deleted (and maybe created again) while it was followed:
    its seqs start over, under another epoch."""


class StreamOverflow(Exception):
    """An event stream's reader fell further behind than its buffer allows."""


async def follow(
    rooms: RoomManager,
    doc: str,
    after_seq: int | None,
    *,
    buffer_bytes: int,
    idle_s: float,
    on_overflow: Callable[[], None] | None = None,
    stop: asyncio.Event | None = None,
    page: int = 500,
) -> AsyncIterator[list[UpdateRecord]]:
    """The document's updates after ``after_seq`` (None: from now on), in seq order,
    each once: first from the log, then as they are stored, with no gap and no
    repeat at the switch. Yields batches, and an empty one after ``idle_s`` of quiet.
    Raises StreamOverflow (after calling ``on_overflow``) when more than
    ``buffer_bytes`` arrived while the consumer was busy. Consume it under
    ``contextlib.aclosing()``: closing it stops watching the document, and so
    does setting ``stop`` (the reader went away) while it waits."""
    held: deque[UpdateRecord] = deque()
    held_bytes = 0
    overflowed = False
    arrived = asyncio.Event()
    stop = stop or asyncio.Event()

    def watcher(record: UpdateRecord | None) -> None:
        nonlocal held_bytes, overflowed
        if record is None:  # the room was dropped: see why
            arrived.set()
            return
        if overflowed:
            return
        held.append(record)
        held_bytes += len(record.data)
        if held_bytes > buffer_bytes:
            overflowed = True
            held.clear()
            if on_overflow is not None:
                on_overflow()
        arrived.set()

    room = await rooms.watch(doc, watcher)
    last = room.head_seq if after_seq is None else after_seq
    stopped = asyncio.ensure_future(stop.wait())
    try:
        while True:
            # What the room sent before (or while) this watched it is in the log;
            # what it sends from now on is held. Read the first, then the second.
            # A reader sent away (a stop, its token expired) gets no more of either:
            # a long replay, or a busy document, may not reach the wait below.
            while not stop.is_set() and last < room.head_seq:
                records = await rooms.store.read_updates(
                    doc, after_seq=last, until_seq=room.head_seq, limit=page
                )
                if not records:
                    break
                last = records[-1].seq
                yield records
            if stop.is_set():
                return
            if overflowed:
                raise StreamOverflow(f"{doc!r}: the event stream's reader is too slow")
            if held:
                batch = [record for record in held if record.seq > last]
                held.clear()
                held_bytes = 0
                if batch and batch[0].seq > last + 1:  # read before this was watched
                    batch[:0] = await rooms.store.read_updates(
                        doc, after_seq=last, until_seq=batch[0].seq - 1
                    )
                if batch:
                    last = batch[-1].seq
                    yield batch
                continue
            if rooms.get(doc) is not room:  # reloaded (after a fault): watch the new one
                rooms.unwatch(room, watcher)
                epoch = room.epoch
                await rooms.deleted_yet(doc)
                info = await rooms.store.get_document(doc)  # loading would create it
                if info is None or info.epoch != epoch:
                    raise DocumentReplaced(f"{doc!r} was deleted")
                room = await rooms.watch(doc, watcher)
                if room.epoch != epoch:
                    raise DocumentReplaced(f"{doc!r} was deleted")
                continue
            arrived.clear()
            woken = asyncio.ensure_future(arrived.wait())
            try:
                await asyncio.wait({woken, stopped}, timeout=idle_s, return_when="FIRST_COMPLETED")
            finally:
                woken.cancel()
            if stop.is_set():
                return
            if not arrived.is_set():
                yield []
    finally:
        stopped.cancel()
        rooms.unwatch(room, watcher)


# -- every document: the store's feed --------------------------------------------------------------


class FeedIdError(ValueError):
    """A Last-Event-ID of the change feed that this server cannot follow from."""


class FeedPlace(NamedTuple):
    """A place in the change feed: the store's position, how many of the records
    after it were already sent (a batch may be cut by a reconnect), and the key
    (:func:`record_key`) of the last of those."""

    position: FeedPosition
    skip: int = 0
    seen: list[Any] | None = None


def record_key(record: FeedRecord) -> list[Any]:
    """What tells a record from the others after a position, as JSON."""
    if isinstance(record, DeletionRecord):
        return [record.doc, "deleted", record.epoch]
    return [record.doc, record.seq]


def feed_id(position: FeedPosition, skip: int = 0, seen: FeedRecord | None = None) -> str:
    """The id of a place in the change feed (:class:`FeedPlace`); ``seen`` is the
    last record sent of the ``skip`` after ``position``. Opaque to readers."""
    place: list[Any] = [position, skip]
    if seen is not None:
        place.append(record_key(seen))
    text = json.dumps(place, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


def _position_shaped(position: Any) -> bool:
    """Whether ``position`` can be a store's feed position: a row id (SQLite,
    memory) or a change stream's resume token (MongoDB: a map of strings)."""
    if isinstance(position, dict):
        return bool(position) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in position.items()
        )
    return _whole(position)


def parse_feed_id(raw: str) -> FeedPlace:
    try:
        padded = raw + "=" * (-len(raw) % 4)
        position, skip, *seen = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, TypeError, binascii.Error):
        raise FeedIdError(f"{raw[:80]!r} is not an id of this feed") from None
    if not _whole(skip) or not _position_shaped(position) or len(seen) > 1:
        raise FeedIdError(f"{raw[:80]!r} is not an id of this feed")
    if seen and not isinstance(seen[0], list):
        raise FeedIdError(f"{raw[:80]!r} is not an id of this feed")
    return FeedPlace(position, skip, seen[0] if seen else None)


async def follow_feed(
    store: Store,
    after: FeedPlace | None,
    *,
    readable: Callable[[str], bool],
    poll_s: float,
    idle_s: float,
    stop: asyncio.Event,
) -> AsyncIterator[list[tuple[str, FeedRecord]]]:
    """Every document's updates and deletions that ``readable`` lets through, in
    commit order (each document's updates in seq order, then its deletion), from a
    place in the store's feed (None: from now on), each with the feed id that
    resumes after it. Read from the store as the consumer asks (at most two pages
    of it held); an empty batch after ``idle_s`` of quiet. Ends when ``stop`` is
    set. Raises StoreError, and FeedLost when that place cannot be followed from
    any more. Consume it under ``contextlib.aclosing()``."""
    position, skip, seen = after if after is not None else FeedPlace(await store.feed_position())
    batches: asyncio.Queue[tuple[FeedPosition, list[FeedRecord]]] = asyncio.Queue(maxsize=1)

    async def pump() -> None:
        async with contextlib.aclosing(
            store.follow(position, poll_s=poll_s, deletions=True)
        ) as feed:
            async for batch in feed:
                await batches.put(batch)

    pumping = asyncio.ensure_future(pump())
    stopped = asyncio.ensure_future(stop.wait())
    start = position
    loop = asyncio.get_running_loop()
    last_yield = loop.time()
    try:
        while True:
            got = asyncio.ensure_future(batches.get())
            await asyncio.wait(
                {got, pumping, stopped}, timeout=idle_s, return_when="FIRST_COMPLETED"
            )
            if stop.is_set():
                got.cancel()
                return
            if not got.done():
                got.cancel()
                if pumping.done():
                    pumping.result()  # raises what ended the feed
                    return
                last_yield = loop.time()
                yield []
                continue
            reached, records = got.result()
            first = 0
            if records and seen is not None:
                # Resuming inside a batch: past the record last sent. A deletion may
                # have taken records of the window away since (SQLite drops a deleted
                # document's rows), so it is found by its key, not counted; when it
                # is gone itself, the batch is sent whole (some again: at least once).
                # Records only go away, so it is at most ``skip`` records in: the
                # nearest match to there (a name's seqs repeat across generations).
                first = next(
                    (
                        index + 1
                        for index in range(min(skip, len(records)) - 1, -1, -1)
                        if record_key(records[index]) == seen
                    ),
                    0,
                )
                seen = None
                skip = 0
            elif records:  # an id without a key (none are made now): counted
                first = min(skip, len(records))
                skip = max(0, skip - len(records))
            out = []
            for index, record in enumerate(records):
                if index < first:
                    continue
                if readable(record.doc):
                    last = index == len(records) - 1
                    out.append(
                        (feed_id(reached) if last else feed_id(start, index + 1, record), record)
                    )
            start = reached
            # Batches of documents the reader may not see are not news to it, but
            # they must not keep the keep-alive from being sent either.
            if out or loop.time() - last_yield >= idle_s:
                last_yield = loop.time()
                yield out
    finally:
        stopped.cancel()
        pumping.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pumping
