"""Presence on MongoDB (PresenceStore): the ``awareness`` collection, one entry per
(document, awareness client), written without waiting for a majority (presence is
renewed every few seconds) and followed by a change stream; a TTL index removes
what expired."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from pymongo import ASCENDING, ReplaceOne

from collab.store.mongodb.base import MongoBase, expires_at, store_errors
from collab.store.mongodb.feed import stream_end, watch
from collab.store.records import AwarenessChange, FeedPosition


class MongoPresence(MongoBase):
    """The PresenceStore part of :class:`~collab.store.mongodb.MongoStore`."""

    async def publish_awareness(self, changes: Sequence[AwarenessChange]) -> None:
        if not changes:
            return
        now = time.time()
        writes = [
            ReplaceOne(
                {"_id": f"{change.client_id}@{change.doc}"},
                {
                    "doc": change.doc,
                    "client_id": change.client_id,
                    "instance": change.instance,
                    "data": change.update,
                    "expires_s": change.expires_s,
                    "changed_s": now,
                    "expire_at": expires_at(change.expires_s),
                },
                upsert=True,
            )
            for change in changes
        ]
        with store_errors("publishing awareness"):
            await self._collection("awareness", presence=True).bulk_write(writes, ordered=True)

    async def awareness_of(self, doc: str) -> list[AwarenessChange]:
        with store_errors(f"reading the awareness of {doc!r}"):
            rows = (
                await self._collection("awareness", presence=True)
                .find(
                    {"doc": doc, "expires_s": {"$gt": time.time()}}, sort=[("changed_s", ASCENDING)]
                )
                .to_list()
            )
        return [_awareness(row) for row in rows]

    async def awareness_position(self) -> FeedPosition:
        with store_errors("reading the awareness feed position"):
            return await stream_end(self._collection("awareness", presence=True))

    async def follow_awareness(
        self, after: FeedPosition, *, poll_s: float
    ) -> AsyncIterator[tuple[FeedPosition, list[AwarenessChange]]]:
        match = {"operationType": {"$in": ["insert", "replace"]}}
        collection = self._collection("awareness", presence=True)
        async for position, rows in watch(collection, after, match, poll_s):
            yield position, [_awareness(row) for row in rows]


def _awareness(row: Mapping[str, Any]) -> AwarenessChange:
    return AwarenessChange(
        row["doc"], row["client_id"], row["instance"], row["data"], row["expires_s"]
    )
