"""Documents on MongoDB (DocumentStore): the ``documents`` collection, one entry
per document, and loading one with its latest snapshot and the log after it."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any

from pymongo import ASCENDING

from collab.errors import StoreError
from collab.store.base import prefix_end
from collab.store.mongodb.base import MongoBase, store_errors
from collab.store.mongodb.log import deletion_entry, read_log
from collab.store.mongodb.snapshots import latest_snapshot_in
from collab.store.records import Author, DocumentInfo, LoadedDocument

HEAD_READS_AT_ONCE = 32  # index lookups in flight for head_seqs


class MongoDocuments(MongoBase):
    """The DocumentStore part of :class:`~collab.store.mongodb.MongoStore`."""

    async def load(self, doc: str, *, create: bool = False) -> LoadedDocument:
        with store_errors(f"loading {doc!r}"):
            row = await self._documents.find_one({"_id": doc}, {"epoch": 1})
            if row is None and not create:
                return LoadedDocument(doc, secrets.token_hex(8), None, (), stored=False)
            if row is None:
                await self._ensure_document(doc, time.time())
                row = await self._documents.find_one({"_id": doc}, {"epoch": 1})
                if row is None:
                    raise StoreError(f"mongodb: {doc!r} was created but cannot be read back")
            # The log is append-only and a snapshot never drops what it covers, so
            # the newest snapshot and the log after it are consistent read in turn.
            snapshot = await latest_snapshot_in(self._snapshots, doc, None)
            after = snapshot.seq if snapshot else 0
            records = await read_log(self._log, doc, after, None, None)
        self.stats.log_rows_read += len(records)
        return LoadedDocument(doc, row["epoch"], snapshot, tuple(records))

    async def delete_document(self, doc: str, *, by: Author | None = None) -> bool:
        self._next_seq.pop(doc, None)
        self._known_epochs.pop(doc, None)
        with store_errors(f"deleting {doc!r}"):
            # The row first: appends check it after inserting, and take back theirs.
            row = await self._documents.find_one_and_delete({"_id": doc})
            if row is not None:
                # Into the log, which the feed's change stream watches: after every
                # entry of this generation, before any of the next.
                head = await self._head_seq(doc)
                await self._log.insert_one(
                    deletion_entry(doc, row["epoch"], head, time.time(), by or Author())
                )
            await self._log.delete_many({"doc": doc})
            await self._snapshots.delete_many({"doc": doc})
            await self._collection("checkpoints").delete_many({"doc": doc})
            await self._collection("quarantine").delete_many({"doc": doc})
            await self._collection("version_names").delete_many({"doc": doc})
            await self._collection("awareness", presence=True).delete_many({"doc": doc})
        return row is not None

    async def get_document(self, doc: str) -> DocumentInfo | None:
        with store_errors(f"reading {doc!r}"):
            row = await self._documents.find_one({"_id": doc})
            return _info(row, await self._head_seq(doc)) if row else None

    async def list_documents(
        self, *, prefix: str = "", after: str | None = None, limit: int | None = None
    ) -> list[DocumentInfo]:
        # The head kept in each entry: it lags the log only when an instance died
        # between storing a batch and updating the entry, until the next append.
        if limit == 0:
            return []  # (a MongoDB cursor's limit 0 means none)
        # A prefix as a range of _id, which is a range of its index: a regex is
        # one only where the server works out its literal prefix itself.
        bounds: dict[str, str] = {}
        if prefix:
            bounds["$gte"] = prefix
            end = prefix_end(prefix)
            if end is not None:
                bounds["$lt"] = end
        if after is not None:
            bounds["$gt"] = after
        query = {"_id": bounds} if bounds else {}
        with store_errors("listing documents"):
            cursor = self._documents.find(query, sort=[("_id", ASCENDING)])
            if limit is not None:
                cursor = cursor.limit(limit)
            rows = await cursor.to_list()
        self.stats.document_rows_read += len(rows)
        return [_info(row, row.get("head_seq", 0)) for row in rows]

    async def stored_bytes(self, docs: Sequence[str]) -> dict[str, int]:
        names = list(docs)
        with store_errors("reading document sizes"):
            known = await self._documents.find({"_id": {"$in": names}}, {"_id": 1}).to_list()
            sizes = {row["_id"]: 0 for row in known}
            for collection, size in (
                (self._log, {"$sum": "$sizes"}),
                (self._snapshots, {"$binarySize": "$data"}),
                (
                    self._collection("checkpoints"),
                    {
                        "$add": [
                            {"$binarySize": "$data"},
                            {"$binarySize": "$waiting"},
                            {"$binarySize": "$state_vector"},
                        ]
                    },
                ),
            ):
                cursor = await collection.aggregate(
                    [
                        {"$match": {"doc": {"$in": list(sizes)}}},
                        {"$project": {"doc": 1, "bytes": size}},
                        {"$group": {"_id": "$doc", "bytes": {"$sum": "$bytes"}}},
                    ]
                )
                rows = await cursor.to_list()
                for row in rows:
                    sizes[row["_id"]] += row["bytes"]
        return sizes

    async def head_seqs(self, docs: Sequence[str]) -> dict[str, int]:
        if not docs:
            return {}
        with store_errors("reading heads"):
            rows = await self._documents.find({"_id": {"$in": list(docs)}}, {"_id": 1}).to_list()
            names = [row["_id"] for row in rows]
            heads: list[int] = []
            for start in range(0, len(names), HEAD_READS_AT_ONCE):
                chunk = names[start : start + HEAD_READS_AT_ONCE]
                heads += await asyncio.gather(*(self._head_seq(name) for name in chunk))
            return dict(zip(names, heads, strict=True))


def _info(row: Mapping[str, Any], head_seq: int) -> DocumentInfo:
    return DocumentInfo(row["_id"], row["epoch"], head_seq, row["created_s"], row["updated_s"])
