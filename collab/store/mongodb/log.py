"""The update log on MongoDB (LogStore): the ``updates`` collection.

Seqs: a batch takes the seqs after the document's last batch and is inserted as
one MongoDB document, so it is stored whole or not at all. When another instance
inserted first, the unique ``(doc, seq)`` index refuses the insert; the batch is
renumbered after the new last one and inserted again: never dropped, never
overlapping, no gap (each batch starts right after an existing one). Batches are
written with write concern ``majority`` and journaling: acknowledged means
durable. No transaction: an instance killed half-way through an append holds
nothing that would stall the others (MongoDB keeps an abandoned transaction's
locks for up to a minute). The ``documents`` entry is brought up to date after
each insert; the log, not that entry, says where a document stands.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from collab.errors import DocumentChanged, SeqConflict, StoreError
from collab.store.base import creating, expected_epochs
from collab.store.mongodb.base import DUPLICATE_KEY, LOCAL, MongoBase, store_errors
from collab.store.records import (
    AppendResult,
    Author,
    DeletionRecord,
    DocumentHead,
    NewUpdate,
    UpdateRecord,
)

MAX_BATCH_BYTES = 12 * 1024 * 1024  # a log entry's BSON, under the 16 MiB document limit
UPDATE_FIELDS_BYTES = 160  # BSON of one update's fields besides its data and names
MAX_NAME_BYTES = 64 * 1024  # user, client and instance names in one update, at most
MAX_UPDATE_BYTES = MAX_BATCH_BYTES - UPDATE_FIELDS_BYTES - MAX_NAME_BYTES  # alone in an entry
APPEND_ATTEMPTS = 20  # lost races retried within one append before SeqConflict
RACE_PAUSE_S = 0.002
DUPLICATE_INDEX = re.compile(r"index: (\S+) dup key")


class MongoLog(MongoBase):
    """The LogStore part of :class:`~collab.store.mongodb.MongoStore`."""

    max_update_bytes = MAX_UPDATE_BYTES

    async def append(self, updates: Sequence[NewUpdate]) -> AppendResult:
        if not updates:
            return AppendResult([], {})
        for update in updates:
            if len(update.data) > MAX_UPDATE_BYTES or _entry_bytes(update) > MAX_BATCH_BYTES:
                raise StoreError(
                    f"an update of {len(update.data)} bytes for {update.doc!r} exceeds what "
                    f"one MongoDB document holds ({MAX_UPDATE_BYTES} bytes)"
                )
        by_doc: dict[str, list[NewUpdate]] = {}
        for update in updates:
            by_doc.setdefault(update.doc, []).append(update)
        epochs = expected_epochs(updates)
        stored: dict[bytes, UpdateRecord] = {}
        heads: dict[str, DocumentHead] = {}
        with store_errors("appending"):
            for doc in creating(updates):
                # Created by its first write, with the epoch its room was given; or
                # created meanwhile by another writer: then its updates join that.
                await self._ensure_document(doc, by_doc[doc][0].time_s, epochs[doc])
                row = await self._documents.with_options(read_concern=LOCAL).find_one(
                    {"_id": doc}, {"epoch": 1}
                )
                if row is None:  # deleted at once
                    raise DocumentChanged({doc: epochs[doc]})
                if row["epoch"] != epochs[doc] and any(u.first for u in by_doc[doc]):
                    # A first content: another writer created the document first.
                    raise DocumentChanged({doc: epochs[doc]})
                epochs[doc] = row["epoch"]
                by_doc[doc] = [dataclasses.replace(u, epoch=row["epoch"]) for u in by_doc[doc]]
            # Every document's row is read first: whether its updates were made for
            # it, and (for all) whether what this instance remembers of it still holds.
            changed = {
                doc: epochs[doc] for doc in by_doc if not await self._is_epoch(doc, epochs.get(doc))
            }
            if changed:
                raise DocumentChanged(changed)
            for doc, mine in by_doc.items():
                batches = _batches(mine)
                last_seq = 0
                for batch in batches:
                    records = await self._append_batch(doc, batch)
                    stored.update(zip((u.submission for u in batch), records, strict=True))
                    last_seq = records[-1].seq
                if doc in epochs and not await self._is_epoch(doc, epochs[doc]):
                    # Deleted while this was inserted: take it back. (A deletion
                    # removes the row first, then the log: one of the two sees the
                    # other, so no entry outlives its document.)
                    await self._log.delete_many(
                        {"_id": {"$in": [b[0].submission for b in batches]}}
                    )
                    raise DocumentChanged({doc: epochs[doc]})
                heads[doc] = await self._after_append(doc, mine, last_seq)
        self.stats.append_batches += 1
        return AppendResult([stored[u.submission] for u in updates], heads)

    async def _append_batch(self, doc: str, batch: list[NewUpdate]) -> list[UpdateRecord]:
        """Insert one log entry after the document's last, renumbering it when another
        instance got there first."""
        if doc not in self._next_seq:
            await self._ensure_document(doc, batch[0].time_s)
        for attempt in range(1, APPEND_ATTEMPTS + 1):
            seq = self._next_seq.get(doc)
            if seq is None:
                # Not known yet, or forgotten while this waited (another append on
                # this store learnt that the document changed, or the cache was
                # cleared): learnt from the log.
                seq = await self._head_seq(doc) + 1
                self._remember(doc, seq)
            entry = _entry(batch, seq)
            try:
                await self._log.insert_one(entry)
            except PyMongoError as exc:
                if _is_duplicate(exc, "_id"):
                    return await self._stored_before(doc, batch)
                if not _is_duplicate(exc, "doc_seq"):
                    raise
                # Another instance took the seq: renumber after its entry, after a
                # pause that keeps two instances from colliding in step.
                self._remember(doc, await self._head_seq(doc, local=True) + 1)
                if attempt < APPEND_ATTEMPTS:
                    await asyncio.sleep(random.uniform(0, RACE_PAUSE_S * attempt))
                continue
            self._remember(doc, entry["last"] + 1)
            self.stats.log_rows_written += len(batch)
            return list(records_of(entry))
        raise SeqConflict(doc, f"{doc!r}: lost {APPEND_ATTEMPTS} races for the next seq")

    async def _stored_before(self, doc: str, batch: list[NewUpdate]) -> list[UpdateRecord]:
        """An earlier try of this append stored the entry that starts with this
        batch's first update (its outcome was unknown to the caller); the batch may
        have grown since, and what the entry lacks is appended after it. (That entry
        may not be majority-committed yet; the majority write to the document's
        entry that follows every append waits for it too.)"""
        entry = await self._log.with_options(read_concern=LOCAL).find_one(
            {"_id": batch[0].submission}
        )
        if entry is None or entry["doc"] != doc:
            raise StoreError(f"mongodb: the log entry of an earlier try for {doc!r} is gone")
        submissions = [u["submission"] for u in entry["updates"]]
        if submissions != [u.submission for u in batch[: len(submissions)]]:
            raise StoreError(f"mongodb: an earlier try for {doc!r} stored another batch")
        self._remember(doc, max(self._next_seq.get(doc, 0), entry["last"] + 1))
        records = list(records_of(entry))
        rest = batch[len(records) :]
        if rest:
            records += await self._append_batch(doc, rest)
        return records

    async def _after_append(self, doc: str, mine: list[NewUpdate], head: int) -> DocumentHead:
        """Bring the document's entry up to date with its log's ``head`` (the last
        seq appended); returns it for snapshots. (``bytes_since_snapshot`` only
        paces snapshots: an append retried after an unknown outcome may count its
        bytes twice, which brings a snapshot forward.)"""
        row = await self._documents.find_one_and_update(
            {"_id": doc},
            {
                "$max": {"head_seq": head, "updated_s": mine[-1].time_s},
                "$inc": {"bytes_since_snapshot": sum(len(u.data) for u in mine)},
            },
            projection={"snapshot_seq": 1, "bytes_since_snapshot": 1},
            return_document=ReturnDocument.AFTER,
        )
        if row is None:
            raise StoreError(f"mongodb: the entry of {doc!r} is gone")
        return DocumentHead(head, row.get("snapshot_seq", 0), row.get("bytes_since_snapshot", 0))

    async def read_updates(
        self,
        doc: str,
        *,
        after_seq: int = 0,
        until_seq: int | None = None,
        limit: int | None = None,
    ) -> list[UpdateRecord]:
        with store_errors(f"reading the log of {doc!r}"):
            records = await read_log(self._log, doc, after_seq, until_seq, limit)
        self.stats.log_rows_read += len(records)
        return records


async def read_log(
    collection: Any, doc: str, after_seq: int, until_seq: int | None, limit: int | None
) -> list[UpdateRecord]:
    """The updates of ``doc`` with ``after_seq < seq <= until_seq``, at most
    ``limit``, from the log ``collection``."""
    if limit == 0 or (until_seq is not None and until_seq <= after_seq):
        return []
    query: dict[str, Any] = {"doc": doc, "last": {"$gt": after_seq}}
    if until_seq is not None:
        query["seq"] = {"$lte": until_seq}
    records: list[UpdateRecord] = []
    cursor = collection.find(query, sort=[("last", ASCENDING)])
    async with cursor:
        async for entry in cursor:
            for record in records_of(entry):
                if record.seq <= after_seq:
                    continue
                if until_seq is not None and record.seq > until_seq:
                    break
                records.append(record)
                if limit is not None and len(records) == limit:
                    break
            if limit is not None and len(records) == limit:
                break
    return records


def _entry_bytes(update: NewUpdate) -> int:
    """A bound on what ``update`` adds to a log entry's BSON."""
    author = update.author
    names = len(author.user or "") + len(author.client or "") + len(author.instance or "")
    return len(update.data) + UPDATE_FIELDS_BYTES + 4 * names  # 4: UTF-8 at most


def _batches(updates: Sequence[NewUpdate]) -> list[list[NewUpdate]]:
    """A document's updates, in order, in log entries of at most MAX_BATCH_BYTES."""
    batches: list[list[NewUpdate]] = [[]]
    size = 0
    for update in updates:
        if batches[-1] and size + _entry_bytes(update) > MAX_BATCH_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(update)
        size += _entry_bytes(update)
    return batches


def _entry(batch: list[NewUpdate], seq: int) -> dict[str, Any]:
    instances = {u.author.instance for u in batch}
    return {
        "_id": batch[0].submission,
        "doc": batch[0].doc,
        "seq": seq,
        "last": seq + len(batch) - 1,
        # The feed leaves out an instance's own entries by this field; None when
        # the batch carries several instances' updates.
        "instance": instances.pop() if len(instances) == 1 else None,
        "sizes": [len(u.data) for u in batch],
        # Change streams replay inserts a deletion removed since: rooms of the next
        # generation of the document tell them by this.
        "epoch": batch[0].epoch,
        "updates": [
            {
                "data": u.data,
                "time_s": u.time_s,
                "user": u.author.user,
                "client": u.author.client,
                "instance": u.author.instance,
                "submission": u.submission,
            }
            for u in batch
        ],
    }


def deletion_entry(doc: str, epoch: str, last_seq: int, now: float, by: Author) -> dict[str, Any]:
    """A document's deletion as a log entry, so that the feed carries it in its
    place. Its ``doc`` is no document's name (a name is a string): reads of a
    document's log never see it, and each generation's deletion is its own key of
    the ``doc_seq`` index."""
    return {
        "doc": {"deleted": doc, "epoch": epoch},
        "seq": 0,
        "last": last_seq,
        "deleted": doc,
        "epoch": epoch,
        "time_s": now,
        "user": by.user,
        "client": by.client,
        "instance": by.instance,
    }


def deletion_of(entry: Mapping[str, Any]) -> DeletionRecord:
    """The deletion a :func:`deletion_entry` holds."""
    return DeletionRecord(
        entry["deleted"],
        entry["epoch"],
        entry["last"],
        entry["time_s"],
        Author(entry["user"], entry["client"], entry["instance"]),
    )


def records_of(entry: Mapping[str, Any]) -> Iterator[UpdateRecord]:
    """The updates a log entry holds, as records."""
    doc = entry["doc"]
    for seq, u in enumerate(entry["updates"], entry["seq"]):
        yield UpdateRecord(
            doc,
            seq,
            u["data"],
            u["time_s"],
            Author(u["user"], u["client"], u["instance"]),
            entry.get("epoch"),
        )


def _is_duplicate(exc: PyMongoError, index: str) -> bool:
    """Whether ``exc`` is a duplicate key on ``index`` ("_id" or "doc_seq"), told by
    the error's key pattern, or else by the index its message names (never by a
    document name, which may contain anything)."""
    if isinstance(exc, DuplicateKeyError):
        errors = [exc.details or {}]
    elif isinstance(exc, BulkWriteError):
        errors = exc.details.get("writeErrors", [])
    else:
        return False
    for error in errors:
        if error.get("code") != DUPLICATE_KEY:
            continue
        pattern = error.get("keyPattern")
        if pattern:
            on = "_id" if list(pattern) == ["_id"] else "doc_seq"
        else:
            named = DUPLICATE_INDEX.search(str(error.get("errmsg", "")))
            on = "_id" if named and named.group(1) == "_id_" else "doc_seq"
        if on == index:
            return True
    return False
