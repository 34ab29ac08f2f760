"""MongoDB store: several server instances on one replica set.

PyMongo's asyncio API (``AsyncMongoClient``) all the way down: no thread runs a
blocking client. The database is the store URL's path; the rest of the URL goes
to PyMongo as it is. MongoDB must run as a replica set (one member will do):
change streams need one.

Collections, with their indexes created at open:

- ``documents``: one per document, ``_id`` its name: epoch, times, head seq,
  snapshot seq, bytes since the snapshot, the snapshot lease.
- ``updates``: the log, one MongoDB document per appended batch of one
  document's updates (``seq`` its first, ``last`` its last), unique on
  ``(doc, seq)``. Its ``_id`` is the first update's submission id
  (``NewUpdate.submission``), so that an append retried after an unknown
  outcome finds what the first try stored instead of storing it twice.
- ``snapshots``: a document's state at a seq, in parts of at most
  ``SNAPSHOT_PART_BYTES`` (a MongoDB document holds 16 MiB), each with the digest
  of the whole, unique on ``(doc, seq, digest, part)``: two instances may encode
  one version in different bytes, and parts of the two are never joined. A
  snapshot counts once all its parts are there.
- ``awareness``: the latest presence state per ``(doc, client id)``, removed by a
  TTL index some time after it expires.
- ``feed_positions``: each instance's place in the feed (a change-stream resume
  token), so that a restarted instance follows on from where it stopped.
- ``quarantine``: what ``collab check --repair`` set aside.

Seqs: a batch takes the seqs after the document's last batch and is inserted as
one MongoDB document, so it is stored whole or not at all. When another instance
inserted first, the unique ``(doc, seq)`` index refuses the insert; the batch
is renumbered after the new last one and inserted again: never dropped, never
overlapping, no gap (each batch starts right after an existing one). Batches
are written with write concern ``majority`` and journaling: acknowledged means
durable. No transaction: an instance killed half-way through an append holds
nothing that would stall the others (MongoDB keeps an abandoned transaction's
locks for up to a minute). The ``documents`` entry is brought up to date after
each insert; the log, not that entry, says where a document stands.

The feed is a change stream on ``updates``: inserts, in commit (oplog) order,
without the following instance's own. Its positions are resume tokens. A token
the oplog no longer reaches raises :class:`FeedLost`; the caller then follows
from the current end and reads each live document's log after its last seq.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import hashlib
import logging
import random
import re
import secrets
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

from bson.errors import InvalidDocument
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReplaceOne, ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure, PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from collab.errors import DocumentChanged, FeedLost, SeqConflict, StoreError
from collab.store.base import Store, creating, expected_epochs, prefix_end
from collab.store.records import (
    AppendResult,
    Author,
    AwarenessChange,
    Checkpoint,
    DocumentHead,
    DocumentInfo,
    FeedPosition,
    LoadedDocument,
    NewUpdate,
    QuarantinedEntry,
    Repair,
    SnapshotRecord,
    UpdateRecord,
)

log = logging.getLogger("collab.store")

DURABLE = WriteConcern("majority", j=True)
PRESENCE = WriteConcern(w=1)  # presence is refreshed every few seconds: no need to wait
MAJORITY = ReadConcern("majority")
# What this member holds already, majority-committed or not: where a write was just
# refused as a duplicate, the entry that caused it may not be majority-committed yet.
LOCAL = ReadConcern("local")

MAX_BATCH_BYTES = 12 * 1024 * 1024  # a log entry's BSON, under the 16 MiB document limit
UPDATE_FIELDS_BYTES = 160  # BSON of one update's fields besides its data and names
MAX_NAME_BYTES = 64 * 1024  # user, client and instance names in one update, at most
MAX_UPDATE_BYTES = MAX_BATCH_BYTES - UPDATE_FIELDS_BYTES - MAX_NAME_BYTES  # alone in an entry
SNAPSHOT_PART_BYTES = 8 * 1024 * 1024
APPEND_ATTEMPTS = 20  # lost races retried within one append before SeqConflict
RACE_PAUSE_S = 0.002
HEAD_READS_AT_ONCE = 32  # index lookups in flight for head_seqs
KNOWN_DOCUMENTS_KEPT = 10_000  # documents whose entry and next seq this instance remembers
FEED_AWAIT_MIN_S = 0.5  # a change stream waits this long for a change before asking again
# A restarted instance follows on from its saved position only if it was saved this
# recently: it has no room open then, and an old position means replaying much of the
# oplog for nothing (rooms load from the log anyway).
FEED_POSITION_KEPT_S = 15 * 60.0
AWARENESS_KEPT_S = 60.0  # expired presence is deleted (by the TTL index) after this
SERVER_SELECTION_TIMEOUT_MS = 5000  # unless the URL says otherwise
DUPLICATE_KEY = 11000

# Errors that mean the change stream cannot continue from its token: 286
# ChangeStreamHistoryLost, 280 ChangeStreamFatalError, 260 InvalidResumeToken,
# 136 CappedPositionLost.
FATAL_STREAM_ERRORS = {286, 280, 260, 136}
DUPLICATE_INDEX = re.compile(r"index: (\S+) dup key")


def database_from_url(url: str) -> str:
    """The database named by ``mongodb://[user@]host[,host...]/DATABASE?options``.
    (Read here rather than by PyMongo's parser, which resolves mongodb+srv names.)"""
    scheme, separator, rest = url.partition("://")
    if scheme not in ("mongodb", "mongodb+srv") or not separator:
        raise ValueError(f"not a MongoDB URL: {url!r}")
    _, slash, path = rest.partition("/")
    database = urllib.parse.unquote(path.partition("?")[0]) if slash else ""
    if not database:
        raise ValueError(
            "the MongoDB URL names no database: use mongodb://HOST:PORT/DATABASE?options"
        )
    if any(c in database for c in '/\\. "$\0'):
        raise ValueError(f"{database!r} is not a valid MongoDB database name")
    return database


@contextlib.contextmanager
def _errors(what: str) -> Iterator[None]:
    try:
        yield
    except (PyMongoError, InvalidDocument) as exc:  # InvalidDocument: also DocumentTooLarge
        raise StoreError(f"mongodb: {what}: {exc}") from exc


def _expires_at(seconds_from_epoch: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds_from_epoch, tz=datetime.UTC)


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


def _records(entry: Mapping[str, Any]) -> Iterator[UpdateRecord]:
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


def _info(row: Mapping[str, Any], head_seq: int) -> DocumentInfo:
    return DocumentInfo(row["_id"], row["epoch"], head_seq, row["created_s"], row["updated_s"])


def _awareness(row: Mapping[str, Any]) -> AwarenessChange:
    return AwarenessChange(
        row["doc"], row["client_id"], row["instance"], row["data"], row["expires_s"]
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


class MongoStore(Store):
    max_update_bytes = MAX_UPDATE_BYTES

    def __init__(self, url: str, *, create: bool = True) -> None:
        super().__init__()
        self.url = url
        self._create = create  # False: open() refuses a database with no collab store
        self._database_name = database_from_url(url)
        self._client: AsyncMongoClient[dict[str, Any]] | None = None
        self._closed = False
        # What this instance learnt of documents: that the entry exists, and the seq
        # its next batch probably gets (another instance may have taken it).
        self._next_seq: dict[str, int] = {}
        self._known_epochs: dict[str, str] = {}  # of the documents in _next_seq

    # -- plumbing ---------------------------------------------------------------------

    def _collection(self, name: str, *, presence: bool = False) -> Any:
        if self._closed or self._client is None:
            raise StoreError("store is not open" if not self._closed else "store is closed")
        database = self._client.get_database(
            self._database_name,
            write_concern=PRESENCE if presence else DURABLE,
            read_concern=MAJORITY,
        )
        return database[name]

    @property
    def _documents(self) -> Any:
        return self._collection("documents")

    @property
    def _log(self) -> Any:
        return self._collection("updates")

    @property
    def _snapshots(self) -> Any:
        return self._collection("snapshots")

    async def open(self) -> None:
        options: dict[str, Any] = {"tz_aware": False}
        if "serverselectiontimeoutms" not in self.url.lower():
            options["serverSelectionTimeoutMS"] = SERVER_SELECTION_TIMEOUT_MS
        with _errors("reading the URL"):
            self._client = AsyncMongoClient(self.url, **options)
        try:
            with _errors("connecting"):
                hello = await self._client.admin.command("hello")
            if not hello.get("setName") and hello.get("msg") != "isdbgrid":
                raise StoreError(
                    "the MongoDB server is not a replica set member: collab needs a replica "
                    "set (one member will do) for change streams; start mongod with "
                    "--replSet NAME and run rs.initiate()"
                )
            if not self._create:
                with _errors("reading the collections"):
                    names = await self._client[self._database_name].list_collection_names()
                if "updates" not in names:  # made with its indexes when a store is created
                    raise StoreError(f"no store in MongoDB database {self._database_name!r}")
            await self._create_indexes()
        except BaseException:
            await self._client.close()
            self._client = None
            raise
        log.info("mongodb store: database %r", self._database_name)

    async def _create_indexes(self) -> None:
        with _errors("creating indexes"):
            await self._log.create_index(
                [("doc", ASCENDING), ("seq", ASCENDING)], unique=True, name="doc_seq"
            )
            await self._log.create_index([("doc", ASCENDING), ("last", ASCENDING)], name="doc_last")
            await self._snapshots.create_index(
                [
                    ("doc", ASCENDING),
                    ("seq", ASCENDING),
                    ("digest", ASCENDING),
                    ("part", ASCENDING),
                ],
                unique=True,
                name="doc_seq_digest_part",
            )
            awareness = self._collection("awareness", presence=True)
            await self._collection("checkpoints").create_index(
                [("doc", ASCENDING), ("seq", ASCENDING)], unique=True, name="doc_seq"
            )
            await awareness.create_index([("doc", ASCENDING)], name="doc")
            await awareness.create_index(
                "expire_at", expireAfterSeconds=int(AWARENESS_KEPT_S), name="expiry"
            )
            await self._collection("feed_positions").create_index(
                "expire_at", expireAfterSeconds=0, name="expiry"
            )
            await self._collection("quarantine").create_index(
                [("doc", ASCENDING), ("quarantined_s", ASCENDING)], name="doc_time"
            )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    # -- documents ----------------------------------------------------------------------

    async def _ensure_document(self, doc: str, now: float, epoch: str | None = None) -> None:
        """Create the document's entry unless it exists. Upserts of one ``_id`` may
        race; MongoDB's documentation advises trying again, which then matches."""
        for attempt in range(1, 4):
            try:
                await self._documents.update_one(
                    {"_id": doc},
                    {
                        "$setOnInsert": {
                            "epoch": epoch or secrets.token_hex(8),
                            "created_s": now,
                            "updated_s": now,
                            "head_seq": 0,
                            "snapshot_seq": 0,
                            "bytes_since_snapshot": 0,
                        }
                    },
                    upsert=True,
                )
                return
            except DuplicateKeyError:
                if attempt == 3:
                    raise

    async def _head_seq(self, doc: str, *, local: bool = False) -> int:
        """The seq of the document's last update, from the log (``local``: including
        entries not majority-committed yet, to renumber after them)."""
        collection = self._log.with_options(read_concern=LOCAL) if local else self._log
        entry = await collection.find_one({"doc": doc}, {"last": 1}, sort=[("seq", DESCENDING)])
        return entry["last"] if entry else 0

    async def load(self, doc: str, *, create: bool = False) -> LoadedDocument:
        with _errors(f"loading {doc!r}"):
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
            snapshot = await self._latest_snapshot(doc, None)
            after = snapshot.seq if snapshot else 0
            records = await self._read(doc, after, None, None)
        return LoadedDocument(doc, row["epoch"], snapshot, tuple(records))

    async def delete_document(self, doc: str) -> bool:
        self._next_seq.pop(doc, None)
        self._known_epochs.pop(doc, None)
        with _errors(f"deleting {doc!r}"):
            # The row first: appends check it after inserting, and take back theirs.
            deleted = await self._documents.delete_one({"_id": doc})
            await self._log.delete_many({"doc": doc})
            await self._snapshots.delete_many({"doc": doc})
            await self._collection("checkpoints").delete_many({"doc": doc})
            await self._collection("quarantine").delete_many({"doc": doc})
            await self._collection("awareness", presence=True).delete_many({"doc": doc})
        return deleted.deleted_count > 0

    async def get_document(self, doc: str) -> DocumentInfo | None:
        with _errors(f"reading {doc!r}"):
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
        with _errors("listing documents"):
            cursor = self._documents.find(query, sort=[("_id", ASCENDING)])
            if limit is not None:
                cursor = cursor.limit(limit)
            rows = await cursor.to_list()
        self.stats.document_rows_read += len(rows)
        return [_info(row, row.get("head_seq", 0)) for row in rows]

    async def stored_bytes(self, docs: Sequence[str]) -> dict[str, int]:
        names = list(docs)
        with _errors("reading document sizes"):
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
        with _errors("reading heads"):
            rows = await self._documents.find({"_id": {"$in": list(docs)}}, {"_id": 1}).to_list()
            names = [row["_id"] for row in rows]
            heads: list[int] = []
            for start in range(0, len(names), HEAD_READS_AT_ONCE):
                chunk = names[start : start + HEAD_READS_AT_ONCE]
                heads += await asyncio.gather(*(self._head_seq(name) for name in chunk))
            return dict(zip(names, heads, strict=True))

    # -- log ----------------------------------------------------------------------------

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
        with _errors("appending"):
            for doc in creating(updates):
                # Created by its first write, with the epoch its room was given; or
                # created meanwhile by another writer: then its updates join that.
                await self._ensure_document(doc, by_doc[doc][0].time_s, epochs[doc])
                row = await self._documents.with_options(read_concern=LOCAL).find_one(
                    {"_id": doc}, {"epoch": 1}
                )
                if row is None:  # deleted at once
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
                for batch in batches:
                    records = await self._append_batch(doc, batch)
                    stored.update(zip((u.submission for u in batch), records, strict=True))
                if doc in epochs and not await self._is_epoch(doc, epochs[doc]):
                    # Deleted while this was inserted: take it back. (A deletion
                    # removes the row first, then the log: one of the two sees the
                    # other, so no entry outlives its document.)
                    await self._log.delete_many(
                        {"_id": {"$in": [b[0].submission for b in batches]}}
                    )
                    raise DocumentChanged({doc: epochs[doc]})
                heads[doc] = await self._after_append(doc, mine)
        self.stats.append_batches += 1
        return AppendResult([stored[u.submission] for u in updates], heads)

    async def _append_batch(self, doc: str, batch: list[NewUpdate]) -> list[UpdateRecord]:
        """Insert one log entry after the document's last, renumbering it when another
        instance got there first."""
        if doc not in self._next_seq:
            await self._ensure_document(doc, batch[0].time_s)
            self._remember(doc, await self._head_seq(doc) + 1)
        for attempt in range(1, APPEND_ATTEMPTS + 1):
            seq = self._next_seq[doc]
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
            return list(_records(entry))
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
        records = list(_records(entry))
        rest = batch[len(records) :]
        if rest:
            records += await self._append_batch(doc, rest)
        return records

    async def _after_append(self, doc: str, mine: list[NewUpdate]) -> DocumentHead:
        """Bring the document's entry up to date; returns its head for snapshots.
        (``bytes_since_snapshot`` only paces snapshots: an append retried after an
        unknown outcome may count its bytes twice, which brings a snapshot forward.)"""
        head = self._next_seq[doc] - 1
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

    async def _is_epoch(self, doc: str, epoch: str | None) -> bool:
        """Whether the document exists with this epoch (``epoch`` None: True, no
        check; a missing document is created by the append). Learning that its epoch
        changed (another instance deleted it and it was created again) drops what
        this instance remembered of its log."""
        row = await self._documents.with_options(read_concern=LOCAL).find_one(
            {"_id": doc}, {"epoch": 1}
        )
        current = row["epoch"] if row else None
        if self._known_epochs.get(doc) != current:
            self._next_seq.pop(doc, None)
            if current is None:
                self._known_epochs.pop(doc, None)
            else:
                self._known_epochs[doc] = current
        return epoch is None or current == epoch

    def _remember(self, doc: str, next_seq: int) -> None:
        if len(self._next_seq) >= KNOWN_DOCUMENTS_KEPT and doc not in self._next_seq:
            self._next_seq.clear()  # re-learnt from the log on the next append
            self._known_epochs.clear()
        self._next_seq[doc] = next_seq

    async def read_updates(
        self,
        doc: str,
        *,
        after_seq: int = 0,
        until_seq: int | None = None,
        limit: int | None = None,
    ) -> list[UpdateRecord]:
        with _errors(f"reading the log of {doc!r}"):
            return await self._read(doc, after_seq, until_seq, limit)

    async def _read(
        self, doc: str, after_seq: int, until_seq: int | None, limit: int | None
    ) -> list[UpdateRecord]:
        if limit == 0 or (until_seq is not None and until_seq <= after_seq):
            return []
        query: dict[str, Any] = {"doc": doc, "last": {"$gt": after_seq}}
        if until_seq is not None:
            query["seq"] = {"$lte": until_seq}
        records: list[UpdateRecord] = []
        cursor = self._log.find(query, sort=[("last", ASCENDING)])
        async with cursor:
            async for entry in cursor:
                for record in _records(entry):
                    if record.seq <= after_seq:
                        continue
                    if until_seq is not None and record.seq > until_seq:
                        break
                    records.append(record)
                    if limit is not None and len(records) == limit:
                        break
                if limit is not None and len(records) == limit:
                    break
        self.stats.log_rows_read += len(records)
        return records

    # -- the feed -----------------------------------------------------------------------

    async def _stream_end(self, collection: Any) -> FeedPosition:
        async with await collection.watch([{"$match": {"operationType": "none"}}]) as stream:
            # Its first batch is empty, and its token the current end of the oplog.
            return stream.resume_token

    async def feed_position(self) -> FeedPosition:
        with _errors("reading the feed position"):
            return await self._stream_end(self._log)

    async def follow(
        self, after: FeedPosition, *, poll_s: float, exclude_instance: str | None = None
    ) -> AsyncIterator[tuple[FeedPosition, list[UpdateRecord]]]:
        match: dict[str, Any] = {"operationType": "insert"}
        if exclude_instance is not None:
            match["fullDocument.instance"] = {"$ne": exclude_instance}
        async for position, entries in self._watch(self._log, after, match, poll_s):
            records = [
                record
                for entry in entries
                for record in _records(entry)
                if exclude_instance is None or record.author.instance != exclude_instance
            ]
            self.stats.log_rows_read += len(records)
            yield position, records

    async def _watch(
        self, collection: Any, after: FeedPosition, match: dict[str, Any], poll_s: float
    ) -> AsyncIterator[tuple[FeedPosition, list[dict[str, Any]]]]:
        """A change stream from ``after`` as ``(position, full documents)``: first
        once it is open, then one change at a time, and whenever only its position
        moved (past changes the match left out)."""
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

    async def save_feed_position(self, instance: str, position: FeedPosition) -> None:
        now = time.time()
        with _errors("saving the feed position"):
            await self._collection("feed_positions", presence=True).replace_one(
                {"_id": instance},
                {
                    "position": position,
                    "saved_s": now,
                    "expire_at": _expires_at(now + FEED_POSITION_KEPT_S),
                },
                upsert=True,
            )

    async def saved_feed_position(self, instance: str) -> FeedPosition | None:
        since = time.time() - FEED_POSITION_KEPT_S  # the TTL index deletes lazily
        with _errors("reading the feed position"):
            row = await self._collection("feed_positions").find_one(
                {"_id": instance, "saved_s": {"$gt": since}}
            )
        return row["position"] if row else None

    # -- snapshots ------------------------------------------------------------------------

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
                **({"waiting": snapshot.waiting} if index == 0 else {}),
            }
            for index, part in enumerate(parts)
        ]
        written = True
        with _errors(f"saving a snapshot of {snapshot.doc!r}"):
            if snapshot.epoch is not None and not await self._is_epoch(
                snapshot.doc, snapshot.epoch
            ):
                return  # deleted meanwhile: a snapshot of what is gone is not kept
            if await self._latest_snapshot(snapshot.doc, snapshot.seq, exactly=True):
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
                since = await self._bytes_after(snapshot.doc, row.get("snapshot_seq", 0))
                await self._documents.update_one(
                    {"_id": snapshot.doc}, {"$set": {"bytes_since_snapshot": since}}
                )
        if written:
            self.stats.snapshots_written += 1

    async def _bytes_after(self, doc: str, seq: int) -> int:
        """Bytes of the document's updates after ``seq`` (at most a snapshot
        interval's worth of entries is read)."""
        entries = await self._log.find(
            {"doc": doc, "last": {"$gt": seq}}, {"seq": 1, "sizes": 1}
        ).to_list()
        return sum(
            size
            for entry in entries
            for at, size in enumerate(entry["sizes"], entry["seq"])
            if at > seq
        )

    async def latest_snapshot(
        self, doc: str, *, at_or_before_seq: int | None = None
    ) -> SnapshotRecord | None:
        with _errors(f"reading a snapshot of {doc!r}"):
            return await self._latest_snapshot(doc, at_or_before_seq)

    async def _latest_snapshot(
        self, doc: str, at_or_before_seq: int | None, *, exactly: bool = False
    ) -> SnapshotRecord | None:
        query: dict[str, Any] = {"doc": doc, "part": 0}
        if at_or_before_seq is not None:
            query["seq"] = at_or_before_seq if exactly else {"$lte": at_or_before_seq}
        cursor = self._snapshots.find(query, sort=[("seq", DESCENDING)])
        async with cursor:
            async for first in cursor:
                data = await self._whole(first)
                if data is not None:
                    return SnapshotRecord(
                        doc, first["seq"], data, first["time_s"], first.get("waiting")
                    )
        return None

    async def _whole(self, first: Mapping[str, Any]) -> bytes | None:
        """A snapshot's data from its parts; None while some part is missing (an
        instance died while writing it)."""
        if first["parts"] == 1:
            return first["data"]
        rest = await self._snapshots.find(
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

    async def snapshot_seqs(self, doc: str) -> list[int]:
        with _errors(f"listing the snapshots of {doc!r}"):
            rows = await self._snapshots.find(
                {"doc": doc, "part": 0}, {"seq": 1}, sort=[("seq", ASCENDING)]
            ).to_list()
        return sorted({row["seq"] for row in rows})

    async def delete_snapshots(self, doc: str, seqs: Sequence[int]) -> None:
        if not seqs:
            return
        with _errors(f"deleting snapshots of {doc!r}"):
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
        with _errors(f"saving a checkpoint of {checkpoint.doc!r}"):
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
        with _errors(f"reading the checkpoints of {doc!r}"):
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
        with _errors(f"pruning the history of {doc!r}"):
            if await self._latest_snapshot(doc, through_seq, exactly=True) is None:
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
        with _errors(f"leasing the snapshot of {doc!r}"):
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

    # -- presence -------------------------------------------------------------------------

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
                    "expire_at": _expires_at(change.expires_s),
                },
                upsert=True,
            )
            for change in changes
        ]
        with _errors("publishing awareness"):
            await self._collection("awareness", presence=True).bulk_write(writes, ordered=True)

    async def awareness_of(self, doc: str) -> list[AwarenessChange]:
        with _errors(f"reading the awareness of {doc!r}"):
            rows = (
                await self._collection("awareness", presence=True)
                .find(
                    {"doc": doc, "expires_s": {"$gt": time.time()}}, sort=[("changed_s", ASCENDING)]
                )
                .to_list()
            )
        return [_awareness(row) for row in rows]

    async def awareness_position(self) -> FeedPosition:
        with _errors("reading the awareness feed position"):
            return await self._stream_end(self._collection("awareness", presence=True))

    async def follow_awareness(
        self, after: FeedPosition, *, poll_s: float
    ) -> AsyncIterator[tuple[FeedPosition, list[AwarenessChange]]]:
        match = {"operationType": {"$in": ["insert", "replace"]}}
        collection = self._collection("awareness", presence=True)
        async for position, rows in self._watch(collection, after, match, poll_s):
            yield position, [_awareness(row) for row in rows]

    # -- repairs --------------------------------------------------------------------------

    async def repair(
        self, doc: str, updates: Mapping[int, Repair], snapshots: Mapping[int, str]
    ) -> str:
        # An offline tool's rare operation, so one transaction (unlike appends).
        assert self._client is not None
        epoch = secrets.token_hex(8)
        now = time.time()
        quarantine = self._collection("quarantine")
        with _errors(f"repairing {doc!r}"):
            async with self._client.start_session() as session:
                await session.start_transaction(write_concern=DURABLE)
                try:
                    for seq, fix in sorted(updates.items()):
                        entry = await self._log.find_one(
                            {"doc": doc, "seq": {"$lte": seq}, "last": {"$gte": seq}},
                            session=session,
                        )
                        if entry is None:
                            raise StoreError(f"{doc}: no update at seq {seq}")
                        index = seq - entry["seq"]
                        original = entry["updates"][index]["data"]
                        await self._log.update_one(
                            {"_id": entry["_id"]},
                            {
                                "$set": {
                                    f"updates.{index}.data": fix.data,
                                    f"sizes.{index}": len(fix.data),
                                }
                            },
                            session=session,
                        )
                        await quarantine.insert_one(
                            _quarantined(doc, "update", seq, original, fix.reason, now),
                            session=session,
                        )
                    for seq, reason in sorted(snapshots.items()):
                        parts = await self._snapshots.find(
                            {"doc": doc, "seq": seq}, sort=[("part", ASCENDING)], session=session
                        ).to_list()
                        if not parts:
                            continue
                        digest = parts[0].get("digest")  # one encoding of the version
                        data = b"".join(p["data"] for p in parts if p.get("digest") == digest)
                        await quarantine.insert_one(
                            _quarantined(doc, "snapshot", seq, data, reason, now),
                            session=session,
                        )
                        await self._snapshots.delete_many({"doc": doc, "seq": seq}, session=session)
                    newest = await self._snapshots.find_one(
                        {"doc": doc, "part": 0},
                        {"seq": 1},
                        sort=[("seq", DESCENDING)],
                        session=session,
                    )
                    await self._documents.update_one(
                        {"_id": doc},
                        {"$set": {"epoch": epoch, "snapshot_seq": newest["seq"] if newest else 0}},
                        session=session,
                    )
                except BaseException:
                    with contextlib.suppress(PyMongoError):
                        await session.abort_transaction()
                    raise
                await session.commit_transaction()
            row = await self._documents.find_one({"_id": doc}, {"snapshot_seq": 1})
            since = await self._bytes_after(doc, row.get("snapshot_seq", 0) if row else 0)
            await self._documents.update_one(
                {"_id": doc}, {"$set": {"bytes_since_snapshot": since}}
            )
        return epoch

    async def quarantined(self, doc: str) -> list[QuarantinedEntry]:
        with _errors(f"reading the quarantine of {doc!r}"):
            rows = (
                await self._collection("quarantine")
                .find({"doc": doc}, sort=[("quarantined_s", ASCENDING), ("_id", ASCENDING)])
                .to_list()
            )
        return [
            QuarantinedEntry(
                row["doc"],
                row["kind"],
                row["seq"],
                row["data"],
                row["reason"],
                row["quarantined_s"],
            )
            for row in rows
        ]


def _quarantined(
    doc: str, kind: str, seq: int, data: bytes, reason: str, now: float
) -> dict[str, Any]:
    return {
        "doc": doc,
        "kind": kind,
        "seq": seq,
        "data": data,
        "reason": reason,
        "quarantined_s": now,
    }


def _stream_error(exc: OperationFailure) -> StoreError:
    if exc.code in FATAL_STREAM_ERRORS or exc.has_error_label("NonResumableChangeStreamError"):
        return FeedLost(f"mongodb: the change stream cannot resume from its position: {exc}")
    return StoreError(f"mongodb: following a change stream: {exc}")
