"""What every area of the MongoDB store runs on: the client and its collections
with their write and read concerns, PyMongo's errors as StoreError, and each
document's entry in ``documents`` (created once, its epoch checked), with what
this instance remembers of it."""

from __future__ import annotations

import contextlib
import datetime
import logging
import secrets
import urllib.parse
from collections.abc import Iterator
from typing import Any

from bson.errors import InvalidDocument
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient
from pymongo.errors import DuplicateKeyError, PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from collab.errors import StoreError
from collab.store.base import Store

log = logging.getLogger("collab.store")

DURABLE = WriteConcern("majority", j=True)
PRESENCE = WriteConcern(w=1)  # presence is refreshed every few seconds: no need to wait
MAJORITY = ReadConcern("majority")
# What this member holds already, majority-committed or not: where a write was just
# refused as a duplicate, the entry that caused it may not be majority-committed yet.
LOCAL = ReadConcern("local")

KNOWN_DOCUMENTS_KEPT = 10_000  # documents whose entry and next seq this instance remembers
AWARENESS_KEPT_S = 60.0  # expired presence is deleted (by the TTL index) after this
SERVER_SELECTION_TIMEOUT_MS = 5000  # unless the URL says otherwise
DUPLICATE_KEY = 11000


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
def store_errors(what: str) -> Iterator[None]:
    """PyMongo's errors (and BSON's) while doing ``what``, raised as StoreError."""
    try:
        yield
    except (PyMongoError, InvalidDocument) as exc:  # InvalidDocument: also DocumentTooLarge
        raise StoreError(f"mongodb: {what}: {exc}") from exc


def expires_at(seconds_from_epoch: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds_from_epoch, tz=datetime.UTC)


class MongoBase(Store):
    """The client, opened and closed, and the document entries every area reads."""

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
        with store_errors("reading the URL"):
            self._client = AsyncMongoClient(self.url, **options)
        try:
            with store_errors("connecting"):
                hello = await self._client.admin.command("hello")
            if not hello.get("setName") and hello.get("msg") != "isdbgrid":
                raise StoreError(
                    "the MongoDB server is not a replica set member: collab needs a replica "
                    "set (one member will do) for change streams; start mongod with "
                    "--replSet NAME and run rs.initiate()"
                )
            if not self._create:
                with store_errors("reading the collections"):
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
        with store_errors("creating indexes"):
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
            await self._collection("version_names").create_index(
                [("doc", ASCENDING), ("seq", ASCENDING)], unique=True, name="doc_seq"
            )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            await client.close()

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
