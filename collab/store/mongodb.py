"""MongoDB store: several server instances on one replica set.

PyMongo's asyncio API (``AsyncMongoClient``) all the way down: no thread runs a
blocking client. The database is the store URL's path; the rest of the URL goes
to PyMongo as it is. MongoDB must run as a replica set (one member will do):
change streams and transactions need one.

Collections, with their indexes created at open:

- ``documents``: one per document, ``_id`` its name: epoch, head seq, snapshot
  seq, bytes since the snapshot, times, the snapshot lease.
- ``updates``: the log, one MongoDB document per update, unique on
  ``(doc, seq)``. ``_id`` is the update's submission id (``NewUpdate.submission``),
  so that an append retried after an unknown outcome finds what the first try
  stored instead of storing it twice.
- ``snapshots``: a document's state at a seq, in parts of at most
  ``SNAPSHOT_PART_BYTES`` (a MongoDB document holds 16 MiB), unique on
  ``(doc, seq, part)``.
- ``awareness``: the latest presence state per ``(doc, client id)``, removed by a
  TTL index some time after it expires.
- ``feed_positions``: each instance's place in the feed (a change-stream resume
  token), so that a restarted instance follows on from where it stopped.
- ``quarantine``: what ``collab check --repair`` set aside.

Seqs: an append is one transaction. For each document of the batch it raises
the document's ``head_seq`` by its number of updates (``$inc``, which returns the
head before it) and inserts the updates with the seqs in between. Two instances
appending to one document at once write the same ``documents`` entry, so MongoDB
aborts one transaction with a write conflict (``TransientTransactionError``); it
is run again, reading the new head: renumbered, never dropped. The unique
``(doc, seq)`` index backs this up. A batch is stored whole or not at all, and
acknowledged only once the commit is majority-written and journaled.

The feed is a change stream on ``updates``: inserts, in commit (oplog) order,
without the following instance's own. Its positions are resume tokens. A token
the oplog no longer reaches raises :class:`FeedLost`; the caller then follows
from the current end and reads each live document's log after its last seq.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import random
import secrets
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReplaceOne, ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure, PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from collab.errors import FeedLost, SeqConflict, StoreError
from collab.store.base import (
    AppendResult,
    Author,
    AwarenessChange,
    DocumentHead,
    DocumentInfo,
    FeedPosition,
    LoadedDocument,
    NewUpdate,
    QuarantinedEntry,
    Repair,
    SnapshotRecord,
    Store,
    UpdateRecord,
)

log = logging.getLogger("collab.store")

DURABLE = WriteConcern("majority", j=True)
PRESENCE = WriteConcern(w=1)  # presence is refreshed every few seconds: no need to wait
MAJORITY = ReadConcern("majority")
SNAPSHOT_READ = ReadConcern("snapshot")

SNAPSHOT_PART_BYTES = 8 * 1024 * 1024
MAX_UPDATE_BYTES = 15 * 1024 * 1024  # an update and its fields in one 16 MiB document
APPEND_ATTEMPTS = 20  # write conflicts retried within one append before SeqConflict
RACE_PAUSE_S = 0.002
UPSERT_ATTEMPTS = 5
COMMIT_ATTEMPTS = 3  # commits retried on an unknown outcome (MongoDB makes that safe)
FEED_AWAIT_MIN_S = 0.5  # a change stream waits this long for a change before asking again
FEED_POSITION_KEPT_S = 7 * 24 * 3600.0  # an instance gone for a week starts afresh
AWARENESS_KEPT_S = 60.0  # expired presence is deleted (by the TTL index) after this
SERVER_SELECTION_TIMEOUT_MS = 5000  # unless the URL says otherwise

# Errors that mean the change stream cannot continue from its token.
HISTORY_LOST = 286  # ChangeStreamHistoryLost
FATAL_STREAM_ERRORS = {HISTORY_LOST, 280, 136}  # ChangeStreamFatalError, CappedPositionLost


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
    except PyMongoError as exc:
        raise StoreError(f"mongodb: {what}: {exc}") from exc


def _expires_at(seconds_from_epoch: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds_from_epoch, tz=datetime.UTC)


def _record(row: Mapping[str, Any]) -> UpdateRecord:
    return UpdateRecord(
        row["doc"],
        row["seq"],
        row["data"],
        row["time_s"],
        Author(row.get("user"), row.get("client"), row.get("instance")),
    )


def _info(row: Mapping[str, Any]) -> DocumentInfo:
    return DocumentInfo(
        row["_id"], row["epoch"], row.get("head_seq", 0), row["created_s"], row["updated_s"]
    )


def _awareness(row: Mapping[str, Any]) -> AwarenessChange:
    return AwarenessChange(
        row["doc"], row["client_id"], row["instance"], row["data"], row["expires_s"]
    )


class MongoStore(Store):
    max_update_bytes = MAX_UPDATE_BYTES

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self._database_name = database_from_url(url)
        self._client: AsyncMongoClient[dict[str, Any]] | None = None
        self._closed = False

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
    def _updates(self) -> Any:
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
                    "set (one member will do) for change streams and transactions; start "
                    "mongod with --replSet NAME and run rs.initiate()"
                )
            await self._create_indexes()
        except BaseException:
            await self._client.close()
            self._client = None
            raise
        log.info("mongodb store: database %r", self._database_name)

    async def _create_indexes(self) -> None:
        with _errors("creating indexes"):
            await self._updates.create_index(
                [("doc", ASCENDING), ("seq", ASCENDING)], unique=True, name="doc_seq"
            )
            await self._snapshots.create_index(
                [("doc", ASCENDING), ("seq", ASCENDING), ("part", ASCENDING)],
                unique=True,
                name="doc_seq_part",
            )
            awareness = self._collection("awareness", presence=True)
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

    async def _commit(self, session: Any) -> None:
        """Commit, retrying an unknown outcome: MongoDB commits a transaction once
        however often its commit is sent."""
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                await session.commit_transaction()
                return
            except PyMongoError as exc:
                if attempt == COMMIT_ATTEMPTS or not exc.has_error_label(
                    "UnknownTransactionCommitResult"
                ):
                    raise

    # -- documents ----------------------------------------------------------------------

    @staticmethod
    def _new_document_fields(now: float) -> dict[str, Any]:
        return {
            "epoch": secrets.token_hex(8),
            "created_s": now,
            "snapshot_seq": 0,
        }

    async def load(self, doc: str) -> LoadedDocument:
        with _errors(f"loading {doc!r}"):
            row = await self._documents.find_one({"_id": doc}, {"epoch": 1})
            if row is None:
                row = await self._create_document(doc)
            # The log is append-only and a snapshot never drops what it covers, so
            # the newest snapshot and the log after it are consistent read in turn.
            snapshot = await self._latest_snapshot(doc, None)
            rows = await self._updates.find(
                {"doc": doc, "seq": {"$gt": snapshot.seq if snapshot else 0}},
                sort=[("seq", ASCENDING)],
            ).to_list()
        self.stats.log_rows_read += len(rows)
        return LoadedDocument(doc, row["epoch"], snapshot, tuple(map(_record, rows)))

    async def _create_document(self, doc: str) -> dict[str, Any]:
        now = time.time()
        for attempt in range(1, UPSERT_ATTEMPTS + 1):
            try:
                await self._documents.update_one(
                    {"_id": doc},
                    {
                        "$setOnInsert": {
                            **self._new_document_fields(now),
                            "head_seq": 0,
                            "bytes_since_snapshot": 0,
                            "updated_s": now,
                        }
                    },
                    upsert=True,
                )
                break
            except DuplicateKeyError:
                # Another instance created it at the same moment: the upsert, tried
                # again, finds it (as MongoDB's documentation advises).
                if attempt == UPSERT_ATTEMPTS:
                    raise
        row = await self._documents.find_one({"_id": doc}, {"epoch": 1})
        if row is None:
            raise StoreError(f"mongodb: {doc!r} was created but cannot be read back")
        return row

    async def get_document(self, doc: str) -> DocumentInfo | None:
        with _errors(f"reading {doc!r}"):
            row = await self._documents.find_one({"_id": doc})
        return _info(row) if row else None

    async def list_documents(self) -> list[DocumentInfo]:
        with _errors("listing documents"):
            rows = await self._documents.find({}, sort=[("_id", ASCENDING)]).to_list()
        return [_info(row) for row in rows]

    async def head_seqs(self, docs: Sequence[str]) -> dict[str, int]:
        if not docs:
            return {}
        with _errors("reading heads"):
            rows = await self._documents.find(
                {"_id": {"$in": list(docs)}}, {"head_seq": 1}
            ).to_list()
        return {row["_id"]: row.get("head_seq", 0) for row in rows}

    # -- log ----------------------------------------------------------------------------

    async def append(self, updates: Sequence[NewUpdate]) -> AppendResult:
        if not updates:
            return AppendResult([], {})
        for update in updates:
            if len(update.data) > MAX_UPDATE_BYTES:
                raise StoreError(
                    f"an update of {len(update.data)} bytes for {update.doc!r} exceeds what "
                    f"one MongoDB document holds ({MAX_UPDATE_BYTES} bytes)"
                )
        keys = [update.submission for update in updates]
        for attempt in range(1, APPEND_ATTEMPTS + 1):
            try:
                with _errors("appending"):
                    return await self._append_once(updates, keys)
            except StoreError as exc:
                cause = exc.__cause__
                if _duplicate_key(cause):
                    return await self._append_rest(updates, keys)
                if isinstance(cause, PyMongoError) and cause.has_error_label(
                    "TransientTransactionError"
                ):
                    if attempt < APPEND_ATTEMPTS:
                        # Another instance won the race: renumber, after a pause that
                        # keeps two instances from colliding in step.
                        await asyncio.sleep(random.uniform(0, RACE_PAUSE_S * attempt))
                        continue
                    raise SeqConflict(updates[0].doc, f"lost {attempt} races: {cause}") from exc
                raise
        raise AssertionError("unreachable")

    async def _append_once(self, updates: Sequence[NewUpdate], keys: list[bytes]) -> AppendResult:
        assert self._client is not None
        order: dict[str, list[int]] = {}
        for index, update in enumerate(updates):
            order.setdefault(update.doc, []).append(index)
        async with self._client.start_session() as session:
            await session.start_transaction(read_concern=SNAPSHOT_READ, write_concern=DURABLE)
            try:
                seqs: list[int] = [0] * len(updates)
                heads: dict[str, DocumentHead] = {}
                for doc, indexes in order.items():
                    mine = [updates[i] for i in indexes]
                    size = sum(len(u.data) for u in mine)
                    before = await self._documents.find_one_and_update(
                        {"_id": doc},
                        {
                            "$inc": {"head_seq": len(mine), "bytes_since_snapshot": size},
                            "$max": {"updated_s": mine[-1].time_s},
                            # Created at its first update's time, so that created_s
                            # never comes after updated_s.
                            "$setOnInsert": self._new_document_fields(mine[0].time_s),
                        },
                        upsert=True,
                        return_document=ReturnDocument.BEFORE,
                        projection={"head_seq": 1, "snapshot_seq": 1, "bytes_since_snapshot": 1},
                        session=session,
                    )
                    head = before.get("head_seq", 0) if before else 0
                    snapshot_seq = before.get("snapshot_seq", 0) if before else 0
                    since = before.get("bytes_since_snapshot", 0) if before else 0
                    for offset, index in enumerate(indexes, 1):
                        seqs[index] = head + offset
                    heads[doc] = DocumentHead(head + len(mine), snapshot_seq, since + size)
                records = [
                    UpdateRecord(u.doc, seq, u.data, u.time_s, u.author)
                    for u, seq in zip(updates, seqs, strict=True)
                ]
                await self._updates.insert_many(
                    [_row(record, key) for record, key in zip(records, keys, strict=True)],
                    ordered=True,
                    session=session,
                )
            except BaseException:
                with contextlib.suppress(PyMongoError):
                    await session.abort_transaction()
                raise
            await self._commit(session)
        self.stats.log_rows_written += len(records)
        self.stats.append_batches += 1
        return AppendResult(records, heads)

    async def _append_rest(self, updates: Sequence[NewUpdate], keys: list[bytes]) -> AppendResult:
        """An append met updates stored already: an earlier try whose outcome was
        unknown did commit them. Their records come from the log; the others (if
        the batch grew since) are appended now."""
        with _errors("reading updates stored by an earlier try"):
            rows = await self._updates.find({"_id": {"$in": keys}}).to_list()
        stored = {row["_id"]: _record(row) for row in rows}
        if not stored:
            raise StoreError(
                "a seq the document's head had not reached is taken: the log and the "
                "documents collection disagree (run collab check)"
            )
        rest = [(u, k) for u, k in zip(updates, keys, strict=True) if k not in stored]
        if rest:
            appended = await self.append([u for u, _ in rest])
            stored.update(zip((k for _, k in rest), appended.records, strict=True))
        docs = list(dict.fromkeys(u.doc for u in updates))
        with _errors("reading heads"):
            rows = await self._documents.find({"_id": {"$in": docs}}).to_list()
        heads = {
            row["_id"]: DocumentHead(
                row.get("head_seq", 0),
                row.get("snapshot_seq", 0),
                row.get("bytes_since_snapshot", 0),
            )
            for row in rows
        }
        return AppendResult([stored[key] for key in keys], heads)

    async def read_updates(
        self,
        doc: str,
        *,
        after_seq: int = 0,
        until_seq: int | None = None,
        limit: int | None = None,
    ) -> list[UpdateRecord]:
        if limit == 0:
            return []  # MongoDB's limit(0) means no limit
        seq: dict[str, int] = {"$gt": after_seq}
        if until_seq is not None:
            seq["$lte"] = until_seq
        with _errors(f"reading the log of {doc!r}"):
            rows = await self._updates.find(
                {"doc": doc, "seq": seq}, sort=[("seq", ASCENDING)], limit=limit or 0
            ).to_list()
        self.stats.log_rows_read += len(rows)
        return [_record(row) for row in rows]

    # -- the feed -----------------------------------------------------------------------

    async def _stream_end(self, collection: Any) -> FeedPosition:
        async with await collection.watch([{"$match": {"operationType": "none"}}]) as stream:
            # Its first batch is empty, and its token the current end of the oplog.
            return stream.resume_token

    async def feed_position(self) -> FeedPosition:
        with _errors("reading the feed position"):
            return await self._stream_end(self._updates)

    async def follow(
        self, after: FeedPosition, *, poll_s: float, exclude_instance: str | None = None
    ) -> AsyncIterator[tuple[FeedPosition, list[UpdateRecord]]]:
        match: dict[str, Any] = {"operationType": "insert"}
        if exclude_instance is not None:
            match["fullDocument.instance"] = {"$ne": exclude_instance}
        async for position, rows in self._watch(self._updates, after, match, poll_s):
            self.stats.log_rows_read += len(rows)
            yield position, [_record(row) for row in rows]

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
                if change is not None:
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
        with _errors("reading the feed position"):
            row = await self._collection("feed_positions").find_one({"_id": instance})
        return row["position"] if row else None

    # -- snapshots ------------------------------------------------------------------------

    async def save_snapshot(self, snapshot: SnapshotRecord) -> None:
        assert self._client is not None
        data = snapshot.data
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
                "data": part,
                "time_s": snapshot.time_s,
                **({"waiting": snapshot.waiting} if index == 0 else {}),
            }
            for index, part in enumerate(parts)
        ]
        written = False
        with _errors(f"saving a snapshot of {snapshot.doc!r}"):
            async with self._client.start_session() as session:
                await session.start_transaction(read_concern=SNAPSHOT_READ, write_concern=DURABLE)
                try:
                    exists = await self._snapshots.find_one(
                        {"doc": snapshot.doc, "seq": snapshot.seq, "part": 0},
                        {"_id": 1},
                        session=session,
                    )
                    if exists is None:
                        await self._snapshots.insert_many(rows, session=session)
                        written = True
                    row = await self._documents.find_one_and_update(
                        {"_id": snapshot.doc},
                        {
                            "$max": {"snapshot_seq": snapshot.seq},
                            "$unset": {"lease_instance": "", "lease_until_s": ""},
                        },
                        return_document=ReturnDocument.AFTER,
                        projection={"snapshot_seq": 1},
                        session=session,
                    )
                    if row is not None:
                        since = await self._bytes_after(
                            snapshot.doc, row.get("snapshot_seq", 0), session
                        )
                        await self._documents.update_one(
                            {"_id": snapshot.doc},
                            {"$set": {"bytes_since_snapshot": since}},
                            session=session,
                        )
                except BaseException:
                    with contextlib.suppress(PyMongoError):
                        await session.abort_transaction()
                    raise
                await self._commit(session)
        if written:
            self.stats.snapshots_written += 1

    async def _bytes_after(self, doc: str, seq: int, session: Any) -> int:
        cursor = await self._updates.aggregate(
            [
                {"$match": {"doc": doc, "seq": {"$gt": seq}}},
                {"$group": {"_id": None, "bytes": {"$sum": "$size"}}},
            ],
            session=session,
        )
        result = await cursor.to_list()
        return int(result[0]["bytes"]) if result else 0

    async def latest_snapshot(
        self, doc: str, *, at_or_before_seq: int | None = None
    ) -> SnapshotRecord | None:
        with _errors(f"reading a snapshot of {doc!r}"):
            return await self._latest_snapshot(doc, at_or_before_seq)

    async def _latest_snapshot(
        self, doc: str, at_or_before_seq: int | None
    ) -> SnapshotRecord | None:
        query: dict[str, Any] = {"doc": doc, "part": 0}
        if at_or_before_seq is not None:
            query["seq"] = {"$lte": at_or_before_seq}
        first = await self._snapshots.find_one(query, sort=[("seq", DESCENDING)])
        if first is None:
            return None
        data = first["data"]
        if first["parts"] > 1:
            rest = await self._snapshots.find(
                {"doc": doc, "seq": first["seq"], "part": {"$gt": 0}},
                sort=[("part", ASCENDING)],
            ).to_list()
            if len(rest) != first["parts"] - 1:
                raise StoreError(f"the snapshot of {doc!r} at seq {first['seq']} is incomplete")
            data = b"".join([data, *(row["data"] for row in rest)])
        return SnapshotRecord(doc, first["seq"], data, first["time_s"], first.get("waiting"))

    async def snapshot_seqs(self, doc: str) -> list[int]:
        with _errors(f"listing the snapshots of {doc!r}"):
            rows = await self._snapshots.find(
                {"doc": doc, "part": 0}, {"seq": 1}, sort=[("seq", ASCENDING)]
            ).to_list()
        return [row["seq"] for row in rows]

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
        assert self._client is not None
        epoch = secrets.token_hex(8)
        now = time.time()
        quarantine = self._collection("quarantine")
        with _errors(f"repairing {doc!r}"):
            async with self._client.start_session() as session:
                await session.start_transaction(read_concern=SNAPSHOT_READ, write_concern=DURABLE)
                try:
                    for seq, fix in sorted(updates.items()):
                        row = await self._updates.find_one_and_update(
                            {"doc": doc, "seq": seq},
                            {"$set": {"data": fix.data, "size": len(fix.data)}},
                            return_document=ReturnDocument.BEFORE,
                            session=session,
                        )
                        if row is None:
                            raise StoreError(f"{doc}: no update at seq {seq}")
                        await quarantine.insert_one(
                            _quarantined(doc, "update", seq, row["data"], fix.reason, now),
                            session=session,
                        )
                    for seq, reason in sorted(snapshots.items()):
                        snapshot = await self._latest_snapshot_in(doc, seq, session)
                        if snapshot is None:
                            continue
                        await quarantine.insert_one(
                            _quarantined(doc, "snapshot", seq, snapshot, reason, now),
                            session=session,
                        )
                        await self._snapshots.delete_many({"doc": doc, "seq": seq}, session=session)
                    newest = await self._snapshots.find_one(
                        {"doc": doc, "part": 0},
                        {"seq": 1},
                        sort=[("seq", DESCENDING)],
                        session=session,
                    )
                    snapshot_seq = newest["seq"] if newest else 0
                    since = await self._bytes_after(doc, snapshot_seq, session)
                    await self._documents.update_one(
                        {"_id": doc},
                        {
                            "$set": {
                                "epoch": epoch,
                                "snapshot_seq": snapshot_seq,
                                "bytes_since_snapshot": since,
                            }
                        },
                        session=session,
                    )
                except BaseException:
                    with contextlib.suppress(PyMongoError):
                        await session.abort_transaction()
                    raise
                await self._commit(session)
        return epoch

    async def _latest_snapshot_in(self, doc: str, seq: int, session: Any) -> bytes | None:
        rows = await self._snapshots.find(
            {"doc": doc, "seq": seq}, sort=[("part", ASCENDING)], session=session
        ).to_list()
        return b"".join(row["data"] for row in rows) if rows else None

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


def _row(record: UpdateRecord, key: bytes) -> dict[str, Any]:
    return {
        "_id": key,
        "doc": record.doc,
        "seq": record.seq,
        "time_s": record.time_s,
        "user": record.author.user,
        "client": record.author.client,
        "instance": record.author.instance,
        "size": len(record.data),
        "data": record.data,
    }


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


def _duplicate_key(exc: BaseException | None) -> bool:
    if isinstance(exc, DuplicateKeyError):
        return True
    if isinstance(exc, BulkWriteError):
        return any(error.get("code") == 11000 for error in exc.details.get("writeErrors", []))
    return False


def _stream_error(exc: OperationFailure) -> StoreError:
    if exc.code in FATAL_STREAM_ERRORS:
        return FeedLost(f"mongodb: the change stream cannot resume from its position: {exc}")
    return StoreError(f"mongodb: following a change stream: {exc}")
