"""Snapshots on MongoDB (SnapshotStore): the ``snapshots`` collection, a
snapshot in parts of at most ``SNAPSHOT_PART_BYTES`` that counts once all its
parts are there; ``checkpoints``; retention; and the snapshot lease in the
document's entry."""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError

from collab.errors import StoreError
from collab.store.mongodb.base import DUPLICATE_KEY, MongoBase, log, store_errors
from collab.store.mongodb.log import MAX_BATCH_BYTES
from collab.store.records import Checkpoint, SnapshotRecord

SNAPSHOT_PART_BYTES = 8 * 1024 * 1024


class MongoSnapshots(MongoBase):
    """The SnapshotStore part of :class:`~collab.store.mongodb.MongoStore`."""

    async def save_snapshot(self, snapshot: SnapshotRecord) -> None:
        data = snapshot.data
        digest = hashlib.sha256(data).hexdigest()[:32]
        parts = [
            data[start : start + SNAPSHOT_PART_BYTES]
            for start in range(0, max(len(data), 1), SNAPSHOT_PART_BYTES)
        ]
        rows = [
            {
                "doc": snapshot.doc,
                "seq": snapshot.seq,
                "part": index,
                "parts": len(parts),
                "digest": digest,
                "data": part,
                "time_s": snapshot.time_s,
                **(
                    {"waiting": snapshot.waiting, "authors": snapshot.authors} if index == 0 else {}
                ),
            }
            for index, part in enumerate(parts)
        ]
        written = True
        with store_errors(f"saving a snapshot of {snapshot.doc!r}"):
            if snapshot.epoch is not None and not await self._is_epoch(
                snapshot.doc, snapshot.epoch
            ):
                return  # deleted meanwhile: a snapshot of what is gone is not kept
            if await latest_snapshot_in(self._snapshots, snapshot.doc, snapshot.seq, exactly=True):
                written = False  # this version is stored whole already
            else:
                try:
                    # Each part once: a part stored by an earlier try stays, the
                    # others are added.
                    await self._snapshots.insert_many(rows, ordered=False)
                except BulkWriteError as exc:
                    errors = exc.details.get("writeErrors", [])
                    if any(error.get("code") != DUPLICATE_KEY for error in errors):
                        raise
                    written = len(errors) < len(rows)
            if snapshot.epoch is not None and not await self._is_epoch(
                snapshot.doc, snapshot.epoch
            ):
                # Deleted while it was written (the row goes first): take it back.
                await self._snapshots.delete_many(
                    {"doc": snapshot.doc, "seq": snapshot.seq, "digest": digest}
                )
                return
            # Only once every part is stored does the snapshot count.
            row = await self._documents.find_one_and_update(
                {"_id": snapshot.doc},
                {
                    "$max": {"snapshot_seq": snapshot.seq},
                    "$unset": {"lease_instance": "", "lease_until_s": ""},
                },
                projection={"snapshot_seq": 1},
                return_document=ReturnDocument.AFTER,
            )
            if row is not None:
                await recount_bytes_since_snapshot(
                    self._documents, self._log, snapshot.doc, row.get("snapshot_seq", 0)
                )
        if written:
            self.stats.snapshots_written += 1

    async def latest_snapshot(
        self, doc: str, *, at_or_before_seq: int | None = None
    ) -> SnapshotRecord | None:
        with store_errors(f"reading a snapshot of {doc!r}"):
            return await latest_snapshot_in(self._snapshots, doc, at_or_before_seq)

    async def snapshot_seqs(self, doc: str) -> list[int]:
        with store_errors(f"listing the snapshots of {doc!r}"):
            rows = await self._snapshots.find(
                {"doc": doc, "part": 0}, {"seq": 1}, sort=[("seq", ASCENDING)]
            ).to_list()
        return sorted({row["seq"] for row in rows})

    async def delete_snapshots(self, doc: str, seqs: Sequence[int]) -> None:
        if not seqs:
            return
        with store_errors(f"deleting snapshots of {doc!r}"):
            await self._snapshots.delete_many({"doc": doc, "seq": {"$in": list(seqs)}})

    async def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        size = len(checkpoint.data) + len(checkpoint.waiting) + len(checkpoint.state_vector)
        if size > MAX_BATCH_BYTES:
            # Beyond one MongoDB document: versions after it replay the log instead.
            log.debug(
                "checkpoint of %r at seq %d left out: %d bytes",
                checkpoint.doc,
                checkpoint.seq,
                size,
            )
            return
        row = {
            "doc": checkpoint.doc,
            "seq": checkpoint.seq,
            "base_seq": checkpoint.base_seq,
            "data": checkpoint.data,
            "waiting": checkpoint.waiting,
            "state_vector": checkpoint.state_vector,
        }
        collection = self._collection("checkpoints")
        with store_errors(f"saving a checkpoint of {checkpoint.doc!r}"):
            if checkpoint.epoch is not None and not await self._is_epoch(
                checkpoint.doc, checkpoint.epoch
            ):
                return  # deleted meanwhile
            with contextlib.suppress(DuplicateKeyError):  # one that exists is kept
                await collection.insert_one(row)
            if checkpoint.epoch is not None and not await self._is_epoch(
                checkpoint.doc, checkpoint.epoch
            ):
                await collection.delete_one(row)  # deleted while it was written

    async def checkpoints(
        self, doc: str, *, after_seq: int = 0, until_seq: int | None = None
    ) -> list[Checkpoint]:
        query: dict[str, Any] = {"doc": doc, "seq": {"$gt": after_seq}}
        if until_seq is not None:
            query["seq"]["$lte"] = until_seq
        with store_errors(f"reading the checkpoints of {doc!r}"):
            rows = (
                await self._collection("checkpoints")
                .find(query, sort=[("seq", ASCENDING)])
                .to_list()
            )
        return [
            Checkpoint(
                row["doc"],
                row["seq"],
                row["base_seq"],
                row["data"],
                row["waiting"],
                row["state_vector"],
            )
            for row in rows
        ]

    async def prune_history(self, doc: str, through_seq: int) -> None:
        with store_errors(f"pruning the history of {doc!r}"):
            if await latest_snapshot_in(self._snapshots, doc, through_seq, exactly=True) is None:
                raise StoreError(f"{doc!r}: no snapshot at seq {through_seq} to keep history from")
            # Whole entries only: one that reaches past the snapshot stays, and so
            # does the newest, from which the next append learns its seq.
            newest = await self._head_seq(doc)
            await self._log.delete_many({"doc": doc, "last": {"$lte": through_seq, "$lt": newest}})
            await self._snapshots.delete_many({"doc": doc, "seq": {"$lt": through_seq}})
            await self._collection("checkpoints").delete_many(
                {"doc": doc, "seq": {"$lt": through_seq}}
            )

    async def lease_snapshot(self, doc: str, instance: str, lease_s: float) -> bool:
        now = time.time()
        with store_errors(f"leasing the snapshot of {doc!r}"):
            result = await self._documents.update_one(
                {
                    "_id": doc,
                    "$or": [
                        {"lease_until_s": {"$exists": False}},
                        {"lease_until_s": None},
                        {"lease_until_s": {"$lt": now}},
                        {"lease_instance": instance},
                    ],
                },
                {"$set": {"lease_instance": instance, "lease_until_s": now + lease_s}},
            )
        return result.matched_count == 1


async def latest_snapshot_in(
    snapshots: Any, doc: str, at_or_before_seq: int | None, *, exactly: bool = False
) -> SnapshotRecord | None:
    """The newest whole snapshot of ``doc`` in the ``snapshots`` collection, or the
    newest at or before a seq (``exactly``: at that seq)."""
    query: dict[str, Any] = {"doc": doc, "part": 0}
    if at_or_before_seq is not None:
        query["seq"] = at_or_before_seq if exactly else {"$lte": at_or_before_seq}
    cursor = snapshots.find(query, sort=[("seq", DESCENDING)])
    async with cursor:
        async for first in cursor:
            data = await _whole(snapshots, first)
            if data is not None:
                return SnapshotRecord(
                    doc,
                    first["seq"],
                    data,
                    first["time_s"],
                    first.get("waiting"),
                    authors=first.get("authors"),
                )
    return None


async def _whole(snapshots: Any, first: Mapping[str, Any]) -> bytes | None:
    """A snapshot's data from its parts; None while some part is missing (an
    instance died while writing it)."""
    if first["parts"] == 1:
        return first["data"]
    rest = await snapshots.find(
        {
            "doc": first["doc"],
            "seq": first["seq"],
            "digest": first.get("digest"),
            "part": {"$gt": 0},
        },
        sort=[("part", ASCENDING)],
    ).to_list()
    if len(rest) != first["parts"] - 1:
        return None
    return b"".join([first["data"], *(row["data"] for row in rest)])


async def recount_bytes_since_snapshot(
    documents: Any, log_collection: Any, doc: str, snapshot_seq: int
) -> None:
    """Set the document entry's ``bytes_since_snapshot`` from the log after
    ``snapshot_seq``, its snapshot's (after that changed)."""
    since = await _bytes_after(log_collection, doc, snapshot_seq)
    await documents.update_one({"_id": doc}, {"$set": {"bytes_since_snapshot": since}})


async def _bytes_after(log_collection: Any, doc: str, seq: int) -> int:
    """Bytes of the document's updates after ``seq`` (at most a snapshot
    interval's worth of entries is read)."""
    entries = await log_collection.find(
        {"doc": doc, "last": {"$gt": seq}}, {"seq": 1, "sizes": 1}
    ).to_list()
    return sum(
        size
        for entry in entries
        for at, size in enumerate(entry["sizes"], entry["seq"])
        if at > seq
    )
