"""The feed on MongoDB (FeedStore): a change stream on ``updates``: inserts, in
commit (oplog) order, without the following instance's own, of the documents it
holds (reopened from where it is when it comes to hold more). A deletion is an
entry of that collection too (collab.store.mongodb.log.deletion_entry). Its positions are
resume tokens. A token the oplog no longer reaches raises :class:`FeedLost`; the
caller then follows from the current end and reads each live document's log
after its last seq. Presence follows its collection the same way (``watch``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Set
from typing import Any

from pymongo.errors import OperationFailure, PyMongoError

from collab.errors import FeedLost, StoreError
from collab.store.base import HeldDocuments
from collab.store.mongodb.base import MongoBase, expires_at, store_errors
from collab.store.mongodb.log import deletion_of, records_of
from collab.store.records import FeedPosition, FeedRecord

FEED_AWAIT_MIN_S = 0.5  # a change stream waits this long for a change before asking again
# The feed's change stream is reopened (from its resume token) to follow documents
# the instance came to hold at most this often: a burst of loads costs one reopen.
# Until then, and until the stream next answers (FEED_AWAIT_MIN_S when quiet), a
# document loaded meanwhile gets its updates from its log.
FEED_REOPEN_MIN_S = 0.5
# A restarted instance follows on from its saved position only if it was saved this
# recently: it has no room open then, and an old position means replaying much of the
# oplog for nothing (rooms load from the log anyway).
FEED_POSITION_KEPT_S = 15 * 60.0
# Errors that mean the change stream cannot continue from its token: 286
# ChangeStreamHistoryLost, 280 ChangeStreamFatalError, 260 InvalidResumeToken,
# 136 CappedPositionLost.
FATAL_STREAM_ERRORS = {286, 280, 260, 136}


class MongoFeed(MongoBase):
    """The FeedStore part of :class:`~collab.store.mongodb.MongoStore`."""

    async def feed_position(self) -> FeedPosition:
        with store_errors("reading the feed position"):
            return await stream_end(self._log)

    async def follow(
        self,
        after: FeedPosition,
        *,
        poll_s: float,
        exclude_instance: str | None = None,
        deletions: bool = False,
        documents: HeldDocuments | None = None,
    ) -> AsyncIterator[tuple[FeedPosition, list[FeedRecord]]]:
        loop = asyncio.get_running_loop()
        position = after
        opened = False
        while True:
            held = None if documents is None else documents()
            reopen_from = loop.time() + FEED_REOPEN_MIN_S
            checked = held  # the latest set of held documents compared with ``held``
            grown = False
            match = feed_match(exclude_instance, held, deletions=deletions)
            changes = watch(self._log, position, match, poll_s, every_answer=documents is not None)
            async with contextlib.aclosing(changes) as stream:
                async for reached, entries in stream:
                    if entries or reached != position or not opened:  # news, or the opening
                        records: list[FeedRecord] = [
                            record
                            for entry in entries
                            if "deleted" not in entry
                            for record in records_of(entry)
                            if exclude_instance is None
                            or record.author.instance != exclude_instance
                        ]
                        # A deletion is an entry of the log (deletion_entry), in its place.
                        records += [deletion_of(entry) for entry in entries if "deleted" in entry]
                        self.stats.log_rows_read += len(records)
                        position, opened = reached, True
                        yield position, records
                    if documents is None or held is None or loop.time() < reopen_from:
                        continue
                    now_held = documents()
                    if now_held is not checked:
                        checked, grown = now_held, not now_held <= held
                    if grown:  # reopened from ``position``, to follow them too
                        break

    async def save_feed_position(self, instance: str, position: FeedPosition) -> None:
        now = time.time()
        with store_errors("saving the feed position"):
            await self._collection("feed_positions", presence=True).replace_one(
                {"_id": instance},
                {
                    "position": position,
                    "saved_s": now,
                    "expire_at": expires_at(now + FEED_POSITION_KEPT_S),
                },
                upsert=True,
            )

    async def saved_feed_position(self, instance: str) -> FeedPosition | None:
        since = time.time() - FEED_POSITION_KEPT_S  # the TTL index deletes lazily
        with store_errors("reading the feed position"):
            row = await self._collection("feed_positions").find_one(
                {"_id": instance, "saved_s": {"$gt": since}}
            )
        return row["position"] if row else None


def feed_match(
    exclude_instance: str | None, held: Set[str] | None, *, deletions: bool = False
) -> dict[str, Any]:
    """The change stream's filter: inserts, without ``exclude_instance``'s, of the
    ``held`` documents only (None: of every document; empty: of none, the stream
    then only moves its position on), with their deletions or without."""
    match: dict[str, Any] = {"operationType": "insert"}
    if exclude_instance is not None:
        match["fullDocument.instance"] = {"$ne": exclude_instance}
    if not deletions:
        match["fullDocument.deleted"] = {"$exists": False}
    if held is not None and deletions:  # a deletion's ``doc`` is not its name
        names = list(held)
        match["$or"] = [
            {"fullDocument.doc": {"$in": names}},
            {"fullDocument.deleted": {"$in": names}},
        ]
    elif held is not None:
        match["fullDocument.doc"] = {"$in": list(held)}
    return match


async def stream_end(collection: Any) -> FeedPosition:
    """Where a change stream on ``collection`` ends now: following from there
    yields what is written next."""
    async with await collection.watch([{"$match": {"operationType": "none"}}]) as stream:
        # Its first batch is empty, and its token the current end of the oplog.
        return stream.resume_token


async def watch(
    collection: Any,
    after: FeedPosition,
    match: dict[str, Any],
    poll_s: float,
    *,
    every_answer: bool = False,
) -> AsyncIterator[tuple[FeedPosition, list[dict[str, Any]]]]:
    """A change stream from ``after`` as ``(position, full documents)``: first
    once it is open, then one change at a time, and whenever only its position
    moved (past changes the match left out); with ``every_answer``, also when
    the stream answered with nothing new (a wait of FEED_AWAIT_MIN_S ended), so
    that its consumer looks around at least that often."""
    position = after
    try:
        stream = await collection.watch(
            [{"$match": match}],
            resume_after=after,
            max_await_time_ms=int(max(poll_s, FEED_AWAIT_MIN_S) * 1000),
        )
    except OperationFailure as exc:
        raise _stream_error(exc) from exc
    except PyMongoError as exc:
        raise StoreError(f"mongodb: opening a change stream: {exc}") from exc
    async with stream:
        yield position, []
        while True:
            try:
                change = await stream.try_next()
            except OperationFailure as exc:
                raise _stream_error(exc) from exc
            except PyMongoError as exc:
                raise StoreError(f"mongodb: following a change stream: {exc}") from exc
            token = stream.resume_token
            if change is not None and change.get("operationType") == "invalidate":
                raise FeedLost("mongodb: the change stream was invalidated (a drop or rename)")
            if change is None and not stream.alive:
                raise FeedLost("mongodb: the server closed the change stream")
            if change is not None and change.get("fullDocument") is not None:
                position = token
                yield position, [change["fullDocument"]]
            elif token is not None and token != position:
                position = token
                yield position, []
            elif every_answer:
                yield position, []


def _stream_error(exc: OperationFailure) -> StoreError:
    if exc.code in FATAL_STREAM_ERRORS or exc.has_error_label("NonResumableChangeStreamError"):
        return FeedLost(f"mongodb: the change stream cannot resume from its position: {exc}")
    return StoreError(f"mongodb: following a change stream: {exc}")
