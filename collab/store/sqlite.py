"""SQLite store: the embedded default, shared by every process that opens the file.

Stdlib ``sqlite3`` in WAL mode with ``synchronous=FULL``, so a committed batch
survives a crash of the process or of the machine. All SQL runs off the event
loop on dedicated threads, each with its own connection: one writer (SQLite
allows one at a time anyway: its lock also serialises the processes that share
the file), one reader for loads and history, which WAL lets run beside it, one
that polls the feeds, and one that writes presence (awareness), which need not
be durable and so is committed without an fsync.

Seqs are given inside the writer's transaction (``BEGIN IMMEDIATE`` holds the
file's write lock), so they are gap-free per document across processes. Every
update row also gets an ``id`` from ``AUTOINCREMENT``: ids grow in commit order
across every process and never change, so each process follows the others'
commits by polling ``id > last`` through the primary key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from collab.errors import DocumentChanged, StoreError
from collab.store.base import (
    MAX_SEQ,
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
    Store,
    UpdateRecord,
    creating,
    expected_epochs,
    next_heads,
    prefix_end,
)
from collab.store.sqlite_schema import SCHEMA_VERSION, prepare

log = logging.getLogger("collab.store")
T = TypeVar("T")

_UPDATE_COLUMNS = "doc, seq, data, time_s, origin_user, origin_client, origin_instance"
_AWARENESS_COLUMNS = "doc, client_id, instance, data, expires_s"
INSERT_ROWS_PER_STATEMENT = 500  # 3,500 parameters, well under SQLite's 32,766
FEED_PAGE = 1000
AWARENESS_KEPT_S = 60.0  # expired awareness rows are deleted this long after expiry


def path_from_url(url: str) -> Path:
    """``sqlite:///relative.db`` or ``sqlite:////absolute.db``."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ValueError(f"not a sqlite URL: {url!r} (expected sqlite:///path/to/file.db)")
    return Path(url[len(prefix) :])


class SQLiteStore(Store):
    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        super().__init__()
        self.path = Path(path)
        self._create = create  # False: open() refuses a file that is missing or empty
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="collab-sqlite-writer")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="collab-sqlite-reader")
        self._feeder = ThreadPoolExecutor(1, thread_name_prefix="collab-sqlite-feed")
        self._presence = ThreadPoolExecutor(1, thread_name_prefix="collab-sqlite-presence")
        self._conns: dict[str, sqlite3.Connection] = {}
        self._closed = False

    # -- plumbing ---------------------------------------------------------------------

    async def _run(self, executor: ThreadPoolExecutor, fn: Callable[[], T]) -> T:
        if self._closed:
            raise StoreError("store is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(executor, fn)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite: {exc}") from exc

    def _connect(self, *, durable: bool = True) -> sqlite3.Connection:
        # isolation_level=None: transactions are explicit (BEGIN ... COMMIT).
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, cached_statements=0
        )
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'OFF'}")
        return conn

    async def open(self) -> None:
        def setup() -> None:
            if not self._create and not self.path.is_file():
                raise StoreError(f"no store at {self.path.resolve()}")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._connect()
            try:
                prepare(conn, self.path, create=self._create)
            except BaseException:
                conn.close()  # also rolls back a half-created schema
                raise
            self._conns["writer"] = conn

        await self._run(self._writer, setup)

        def read_only() -> sqlite3.Connection:
            conn = self._connect()
            conn.execute("PRAGMA query_only = ON")
            return conn

        self._conns["reader"] = await self._run(self._reader, read_only)
        self._conns["feed"] = await self._run(self._feeder, read_only)
        self._conns["presence"] = await self._run(
            self._presence, lambda: self._connect(durable=False)
        )
        log.info("sqlite store at %s (WAL, schema v%d)", self.path, SCHEMA_VERSION)

    async def close(self) -> None:
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        executors = {
            "writer": self._writer,
            "reader": self._reader,
            "feed": self._feeder,
            "presence": self._presence,
        }
        for name, executor in executors.items():
            conn = self._conns.pop(name, None)
            if conn is not None:
                await loop.run_in_executor(executor, conn.close)
            executor.shutdown(wait=False)
        self._closed = True

    def _conn(self, name: str) -> sqlite3.Connection:
        conn = self._conns.get(name)
        if conn is None:
            raise StoreError("store is not open")
        return conn

    @property
    def _w(self) -> sqlite3.Connection:
        return self._conn("writer")

    @property
    def _r(self) -> sqlite3.Connection:
        return self._conn("reader")

    # -- documents ----------------------------------------------------------------------

    def _create_document(
        self, conn: sqlite3.Connection, name: str, now: float, epoch: str | None = None
    ) -> None:
        conn.execute(
            "INSERT OR IGNORE INTO documents (name, epoch, created_s, updated_s) VALUES (?,?,?,?)",
            (name, epoch or secrets.token_hex(8), now, now),
        )

    async def load(self, doc: str, *, create: bool = False) -> LoadedDocument:
        def ensure_exists() -> None:
            self._create_document(self._w, doc, time.time())

        if create and await self.get_document(doc) is None:
            await self._run(self._writer, ensure_exists)

        def read() -> LoadedDocument:
            conn = self._r
            conn.execute("BEGIN")  # one consistent read snapshot of the WAL
            try:
                row = conn.execute("SELECT epoch FROM documents WHERE name = ?", (doc,)).fetchone()
                if row is None:
                    return LoadedDocument(doc, secrets.token_hex(8), None, (), stored=False)
                (epoch,) = row
                snapshot = self._latest_snapshot(conn, doc, None)
                rows = conn.execute(
                    f"SELECT {_UPDATE_COLUMNS} FROM updates WHERE doc = ? AND seq > ? ORDER BY seq",
                    (doc, snapshot.seq if snapshot else 0),
                ).fetchall()
            finally:
                conn.execute("COMMIT")
            self.stats.log_rows_read += len(rows)
            return LoadedDocument(doc, epoch, snapshot, tuple(map(_update_from_row, rows)))

        return await self._run(self._reader, read)

    async def delete_document(self, doc: str) -> bool:
        def write() -> bool:
            conn = self._w
            with write_transaction(conn):
                for table in ("updates", "snapshots", "checkpoints", "awareness", "quarantine"):
                    conn.execute(f"DELETE FROM {table} WHERE doc = ?", (doc,))
                deleted = conn.execute("DELETE FROM documents WHERE name = ?", (doc,)).rowcount
            return deleted > 0

        return await self._run(self._writer, write)

    async def get_document(self, doc: str) -> DocumentInfo | None:
        def read() -> DocumentInfo | None:
            row = self._r.execute(
                "SELECT name, epoch, head_seq, created_s, updated_s FROM documents WHERE name = ?",
                (doc,),
            ).fetchone()
            return DocumentInfo(*row) if row else None

        return await self._run(self._reader, read)

    async def list_documents(
        self, *, prefix: str = "", after: str | None = None, limit: int | None = None
    ) -> list[DocumentInfo]:
        def read() -> list[DocumentInfo]:
            # A prefix as a range of the primary key (LIKE would need escaping and
            # scan): EXPLAIN QUERY PLAN says SEARCH ... USING COVERING INDEX.
            query = "SELECT name, epoch, head_seq, created_s, updated_s FROM documents"
            where: list[str] = []
            args: list[Any] = []
            if prefix:
                where.append("name >= ?")
                args.append(prefix)
                end = prefix_end(prefix)
                if end is not None:
                    where.append("name < ?")
                    args.append(end)
            if after is not None:
                where.append("name > ?")
                args.append(after)
            if where:
                query += " WHERE " + " AND ".join(where)
            query += " ORDER BY name"
            if limit is not None:
                query += " LIMIT ?"
                args.append(limit)
            rows = self._r.execute(query, args).fetchall()
            self.stats.document_rows_read += len(rows)
            return [DocumentInfo(*row) for row in rows]

        return await self._run(self._reader, read)

    async def stored_bytes(self, docs: Sequence[str]) -> dict[str, int]:
        def read() -> dict[str, int]:
            sizes: dict[str, int] = {}
            for name in docs:
                row = self._r.execute(
                    "SELECT (SELECT coalesce(sum(length(data)), 0) FROM updates WHERE doc = ?)"
                    " + (SELECT coalesce(sum(length(data) + coalesce(length(waiting), 0)), 0)"
                    " FROM snapshots WHERE doc = ?)"
                    " + (SELECT coalesce(sum(length(data) + length(waiting)"
                    " + length(state_vector)), 0) FROM checkpoints WHERE doc = ?), "
                    "EXISTS (SELECT 1 FROM documents WHERE name = ?)",
                    (name, name, name, name),
                ).fetchone()
                if row[1]:
                    sizes[name] = row[0]
            return sizes

        return await self._run(self._reader, read)

    async def head_seqs(self, docs: Sequence[str]) -> dict[str, int]:
        def read() -> dict[str, int]:
            heads: dict[str, int] = {}
            names = list(docs)
            for start in range(0, len(names), INSERT_ROWS_PER_STATEMENT):
                chunk = names[start : start + INSERT_ROWS_PER_STATEMENT]
                rows = self._conn("feed").execute(
                    "SELECT name, head_seq FROM documents WHERE name IN "
                    f"({','.join('?' * len(chunk))})",
                    chunk,
                )
                heads.update(rows.fetchall())
            return heads

        return await self._run(self._feeder, read)

    # -- log ----------------------------------------------------------------------------

    async def append(self, updates: Sequence[NewUpdate]) -> AppendResult:
        if not updates:
            return AppendResult([], {})

        def write() -> AppendResult:
            conn = self._w
            with write_transaction(conn):
                heads: dict[str, DocumentHead] = {}
                changed: dict[str, str] = {}
                epochs = expected_epochs(updates)
                new = creating(updates)
                adopted: dict[str, str] = {}  # created, or found created meanwhile
                for update in updates:
                    if update.doc in heads or update.doc in changed:
                        continue
                    row = conn.execute(
                        "SELECT head_seq, snapshot_seq, bytes_since_snapshot, epoch "
                        "FROM documents WHERE name = ?",
                        (update.doc,),
                    ).fetchone()
                    expected = epochs.get(update.doc)
                    if update.doc in new:
                        if row is None:
                            self._create_document(conn, update.doc, update.time_s, expected)
                            row = (0, 0, 0, expected)
                        adopted[update.doc] = row[3]
                    elif expected is not None and (row is None or row[3] != expected):
                        changed[update.doc] = expected  # deleted, or another generation
                        continue
                    if row is None:
                        # Created at its first update's time, so that created_s never
                        # comes after updated_s.
                        self._create_document(conn, update.doc, update.time_s)
                        row = (0, 0, 0, None)
                    heads[update.doc] = DocumentHead(*row[:3])
                if changed:
                    raise DocumentChanged(changed)
                seqs, after = next_heads(heads, updates)
                records = [
                    UpdateRecord(u.doc, seq, u.data, u.time_s, u.author, adopted.get(u.doc))
                    for u, seq in zip(updates, seqs, strict=True)
                ]
                _insert_updates(conn, records)
                last_time = {r.doc: r.time_s for r in records}
                conn.executemany(
                    "UPDATE documents SET head_seq = ?, bytes_since_snapshot = ?, updated_s = ? "
                    "WHERE name = ?",
                    [
                        (head.head_seq, head.bytes_since_snapshot, last_time[doc], doc)
                        for doc, head in after.items()
                    ],
                )
            self.stats.log_rows_written += len(records)
            self.stats.append_batches += 1
            return AppendResult(records, after)

        return await self._run(self._writer, write)

    async def read_updates(
        self,
        doc: str,
        *,
        after_seq: int = 0,
        until_seq: int | None = None,
        limit: int | None = None,
    ) -> list[UpdateRecord]:
        def read() -> list[UpdateRecord]:
            rows = self._r.execute(
                f"SELECT {_UPDATE_COLUMNS} FROM updates WHERE doc = ? AND seq > ? AND seq <= ? "
                "ORDER BY seq LIMIT ?",
                (
                    doc,
                    after_seq,
                    until_seq if until_seq is not None else MAX_SEQ,
                    limit if limit is not None else -1,
                ),
            ).fetchall()
            self.stats.log_rows_read += len(rows)
            return [_update_from_row(row) for row in rows]

        return await self._run(self._reader, read)

    # -- the feed -----------------------------------------------------------------------

    async def feed_position(self) -> FeedPosition:
        def read() -> int:
            return (
                self._conn("feed").execute("SELECT coalesce(max(id), 0) FROM updates").fetchone()[0]
            )

        return await self._run(self._feeder, read)

    async def follow(
        self, after: FeedPosition, *, poll_s: float, exclude_instance: str | None = None
    ) -> AsyncIterator[tuple[FeedPosition, list[UpdateRecord]]]:
        position = int(after)
        yield position, []  # open at once
        while True:

            def read(position: int = position) -> tuple[int, list[tuple[Any, ...]]]:
                conn = self._conn("feed")
                conn.execute("BEGIN")  # the end and the rows from one read snapshot
                try:
                    (end,) = conn.execute("SELECT coalesce(max(id), 0) FROM updates").fetchone()
                    rows = conn.execute(
                        f"SELECT id, {_UPDATE_COLUMNS} FROM updates WHERE id > ? AND id <= ? "
                        "AND (? IS NULL OR origin_instance IS NOT ?) ORDER BY id LIMIT ?",
                        (position, end, exclude_instance, exclude_instance, FEED_PAGE),
                    ).fetchall()
                finally:
                    conn.execute("COMMIT")
                # A full page may stop short of the end; otherwise every row up to the
                # end was seen (the excluded ones without reading their data).
                return (rows[-1][0] if len(rows) == FEED_PAGE else end), rows

            reached, rows = await self._run(self._feeder, read)
            if rows or reached > position:
                position = reached
                yield position, [_update_from_row(row[1:]) for row in rows]
            if len(rows) < FEED_PAGE:
                await asyncio.sleep(poll_s)

    async def save_feed_position(self, instance: str, position: FeedPosition) -> None:
        def write() -> None:
            self._conn("presence").execute(
                "INSERT INTO feed_positions (instance, position, saved_s) VALUES (?,?,?) "
                "ON CONFLICT (instance) DO UPDATE SET "
                "position = excluded.position, saved_s = excluded.saved_s",
                (instance, int(position), time.time()),
            )

        await self._run(self._presence, write)

    async def saved_feed_position(self, instance: str) -> FeedPosition | None:
        def read() -> int | None:
            row = (
                self._conn("feed")
                .execute("SELECT position FROM feed_positions WHERE instance = ?", (instance,))
                .fetchone()
            )
            return row[0] if row else None

        return await self._run(self._feeder, read)

    # -- snapshots ------------------------------------------------------------------------

    async def save_snapshot(self, snapshot: SnapshotRecord) -> None:
        def write() -> None:
            conn = self._w
            with write_transaction(conn):
                if not _of_epoch(conn, snapshot.doc, snapshot.epoch):
                    return  # deleted meanwhile: not kept (the transaction writes nothing)
                cursor = conn.execute(
                    "INSERT OR IGNORE INTO snapshots (doc, seq, data, time_s, waiting) "
                    "VALUES (?,?,?,?,?)",
                    (snapshot.doc, snapshot.seq, snapshot.data, snapshot.time_s, snapshot.waiting),
                )
                written = cursor.rowcount
                conn.execute(
                    "UPDATE documents SET snapshot_seq = max(snapshot_seq, ?), "
                    "lease_instance = NULL, lease_until_s = NULL WHERE name = ?",
                    (snapshot.seq, snapshot.doc),
                )
                conn.execute(
                    "UPDATE documents SET bytes_since_snapshot = coalesce(("
                    "SELECT sum(length(data)) FROM updates "
                    "WHERE doc = documents.name AND seq > documents.snapshot_seq), 0) "
                    "WHERE name = ?",
                    (snapshot.doc,),
                )
            if written:
                self.stats.snapshots_written += 1

        await self._run(self._writer, write)

    async def latest_snapshot(
        self, doc: str, *, at_or_before_seq: int | None = None
    ) -> SnapshotRecord | None:
        return await self._run(
            self._reader, lambda: self._latest_snapshot(self._r, doc, at_or_before_seq)
        )

    @staticmethod
    def _latest_snapshot(
        conn: sqlite3.Connection, doc: str, at_or_before_seq: int | None
    ) -> SnapshotRecord | None:
        row = conn.execute(
            "SELECT doc, seq, data, time_s, waiting FROM snapshots WHERE doc = ? AND seq <= ? "
            "ORDER BY seq DESC LIMIT 1",
            (doc, at_or_before_seq if at_or_before_seq is not None else MAX_SEQ),
        ).fetchone()
        return SnapshotRecord(*row) if row else None

    async def snapshot_seqs(self, doc: str) -> list[int]:
        def read() -> list[int]:
            rows = self._r.execute(
                "SELECT seq FROM snapshots WHERE doc = ? ORDER BY seq", (doc,)
            ).fetchall()
            return [seq for (seq,) in rows]

        return await self._run(self._reader, read)

    async def delete_snapshots(self, doc: str, seqs: Sequence[int]) -> None:
        if not seqs:
            return

        def write() -> None:
            conn = self._w
            with write_transaction(conn):
                conn.executemany(
                    "DELETE FROM snapshots WHERE doc = ? AND seq = ?", [(doc, s) for s in seqs]
                )

        await self._run(self._writer, write)

    async def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        def write() -> None:
            # One statement: it saves only while the document has that epoch.
            self._w.execute(
                "INSERT OR IGNORE INTO checkpoints "
                "(doc, seq, base_seq, waiting, state_vector, data) "
                "SELECT ?, ?, ?, ?, ?, ? WHERE ? IS NULL "
                "OR EXISTS (SELECT 1 FROM documents WHERE name = ? AND epoch = ?)",
                (
                    checkpoint.doc,
                    checkpoint.seq,
                    checkpoint.base_seq,
                    checkpoint.waiting,
                    checkpoint.state_vector,
                    checkpoint.data,
                    checkpoint.epoch,
                    checkpoint.doc,
                    checkpoint.epoch,
                ),
            )

        await self._run(self._writer, write)

    async def checkpoints(
        self, doc: str, *, after_seq: int = 0, until_seq: int | None = None
    ) -> list[Checkpoint]:
        def read() -> list[Checkpoint]:
            rows = self._r.execute(
                "SELECT doc, seq, base_seq, data, waiting, state_vector FROM checkpoints "
                "WHERE doc = ? AND seq > ? AND seq <= ? ORDER BY seq",
                (doc, after_seq, MAX_SEQ if until_seq is None else until_seq),
            ).fetchall()
            return [Checkpoint(*row) for row in rows]

        return await self._run(self._reader, read)

    async def prune_history(self, doc: str, through_seq: int) -> None:
        def write() -> None:
            conn = self._w
            with write_transaction(conn):
                kept = conn.execute(
                    "SELECT 1 FROM snapshots WHERE doc = ? AND seq = ?", (doc, through_seq)
                ).fetchone()
                if kept is None:
                    raise StoreError(
                        f"{doc!r}: no snapshot at seq {through_seq} to keep history from"
                    )
                conn.execute("DELETE FROM updates WHERE doc = ? AND seq <= ?", (doc, through_seq))
                conn.execute("DELETE FROM snapshots WHERE doc = ? AND seq < ?", (doc, through_seq))
                conn.execute(
                    "DELETE FROM checkpoints WHERE doc = ? AND seq < ?", (doc, through_seq)
                )

        await self._run(self._writer, write)

    async def lease_snapshot(self, doc: str, instance: str, lease_s: float) -> bool:
        def write() -> bool:
            now = time.time()
            cursor = self._w.execute(
                "UPDATE documents SET lease_instance = ?, lease_until_s = ? WHERE name = ? "
                "AND (lease_until_s IS NULL OR lease_until_s < ? OR lease_instance = ?)",
                (instance, now + lease_s, doc, now, instance),
            )
            return cursor.rowcount == 1

        return await self._run(self._writer, write)

    # -- presence -------------------------------------------------------------------------

    async def publish_awareness(self, changes: Sequence[AwarenessChange]) -> None:
        if not changes:
            return

        def write() -> None:
            conn = self._conn("presence")
            with write_transaction(conn):
                (last,) = conn.execute(
                    "SELECT value FROM counters WHERE name = 'awareness_change'"
                ).fetchone()
                conn.executemany(
                    f"INSERT INTO awareness ({_AWARENESS_COLUMNS}, change_id) "
                    "VALUES (?,?,?,?,?,?) ON CONFLICT (doc, client_id) DO UPDATE SET "
                    "instance = excluded.instance, data = excluded.data, "
                    "expires_s = excluded.expires_s, change_id = excluded.change_id",
                    [
                        (c.doc, c.client_id, c.instance, c.update, c.expires_s, last + index)
                        for index, c in enumerate(changes, 1)
                    ],
                )
                conn.execute(
                    "UPDATE counters SET value = ? WHERE name = 'awareness_change'",
                    (last + len(changes),),
                )
                conn.execute(
                    "DELETE FROM awareness WHERE expires_s < ?", (time.time() - AWARENESS_KEPT_S,)
                )

        await self._run(self._presence, write)

    async def awareness_of(self, doc: str) -> list[AwarenessChange]:
        def read() -> list[AwarenessChange]:
            rows = self._r.execute(
                f"SELECT {_AWARENESS_COLUMNS} FROM awareness WHERE doc = ? AND expires_s > ? "
                "ORDER BY change_id",
                (doc, time.time()),
            ).fetchall()
            return [AwarenessChange(*row) for row in rows]

        return await self._run(self._reader, read)

    async def awareness_position(self) -> FeedPosition:
        def read() -> int:
            (value,) = (
                self._conn("feed")
                .execute("SELECT value FROM counters WHERE name = 'awareness_change'")
                .fetchone()
            )
            return value

        return await self._run(self._feeder, read)

    async def follow_awareness(
        self, after: FeedPosition, *, poll_s: float
    ) -> AsyncIterator[tuple[FeedPosition, list[AwarenessChange]]]:
        position = int(after)
        while True:

            def read(position: int = position) -> list[tuple[Any, ...]]:
                return (
                    self._conn("feed")
                    .execute(
                        f"SELECT change_id, {_AWARENESS_COLUMNS} FROM awareness "
                        "WHERE change_id > ? ORDER BY change_id LIMIT ?",
                        (position, FEED_PAGE),
                    )
                    .fetchall()
                )

            rows = await self._run(self._feeder, read)
            if rows:
                position = rows[-1][0]
                yield position, [AwarenessChange(*row[1:]) for row in rows]
            if len(rows) < FEED_PAGE:
                await asyncio.sleep(poll_s)

    # -- repairs --------------------------------------------------------------------------

    async def repair(
        self, doc: str, updates: Mapping[int, Repair], snapshots: Mapping[int, str]
    ) -> str:
        epoch = secrets.token_hex(8)

        def write() -> None:
            conn = self._w
            now = time.time()
            with write_transaction(conn):
                for seq, repair in sorted(updates.items()):
                    moved = conn.execute(
                        "INSERT INTO quarantine (doc, kind, seq, data, reason, quarantined_s) "
                        "SELECT doc, 'update', seq, data, ?, ? FROM updates "
                        "WHERE doc = ? AND seq = ?",
                        (repair.reason, now, doc, seq),
                    )
                    if moved.rowcount != 1:
                        raise StoreError(f"{doc}: no update at seq {seq}")
                    conn.execute(
                        "UPDATE updates SET data = ? WHERE doc = ? AND seq = ?",
                        (repair.data, doc, seq),
                    )
                for seq, reason in sorted(snapshots.items()):
                    conn.execute(
                        "INSERT INTO quarantine (doc, kind, seq, data, reason, quarantined_s) "
                        "SELECT doc, 'snapshot', seq, data, ?, ? FROM snapshots "
                        "WHERE doc = ? AND seq = ?",
                        (reason, now, doc, seq),
                    )
                    conn.execute("DELETE FROM snapshots WHERE doc = ? AND seq = ?", (doc, seq))
                conn.execute(
                    "UPDATE documents SET epoch = ?, snapshot_seq = coalesce("
                    "(SELECT max(seq) FROM snapshots WHERE doc = ?), 0) WHERE name = ?",
                    (epoch, doc, doc),
                )
                conn.execute(
                    "UPDATE documents SET bytes_since_snapshot = coalesce(("
                    "SELECT sum(length(data)) FROM updates "
                    "WHERE doc = documents.name AND seq > documents.snapshot_seq), 0) "
                    "WHERE name = ?",
                    (doc,),
                )

        await self._run(self._writer, write)
        return epoch

    async def quarantined(self, doc: str) -> list[QuarantinedEntry]:
        def read() -> list[QuarantinedEntry]:
            rows = self._r.execute(
                "SELECT doc, kind, seq, data, reason, quarantined_s FROM quarantine "
                "WHERE doc = ? ORDER BY quarantined_s, rowid",
                (doc,),
            ).fetchall()
            return [QuarantinedEntry(*row) for row in rows]

        return await self._run(self._reader, read)


def _of_epoch(conn: sqlite3.Connection, doc: str, epoch: str | None) -> bool:
    """Whether the document still has ``epoch`` (None: no check)."""
    if epoch is None:
        return True
    row = conn.execute("SELECT epoch FROM documents WHERE name = ?", (doc,)).fetchone()
    return row is not None and row[0] == epoch


@contextlib.contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` (the file's write lock, which every process sharing the
    file waits for) then ``COMMIT``; on any exception, rolled back and raised as it
    was."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back after a failure without hiding it: SQLite may have rolled the
    transaction back already (a full disk does), and ROLLBACK would then fail
    with "no transaction is active" in place of the real error."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _insert_updates(conn: sqlite3.Connection, batch: Sequence[UpdateRecord]) -> None:
    # One statement per chunk of rows: executemany releases and retakes the GIL for
    # every row, which stalls behind a busy event loop for the switch interval each
    # time (a 1,000-row commit took seconds under load, milliseconds this way).
    for start in range(0, len(batch), INSERT_ROWS_PER_STATEMENT):
        chunk = batch[start : start + INSERT_ROWS_PER_STATEMENT]
        conn.execute(
            f"INSERT INTO updates ({_UPDATE_COLUMNS}) VALUES "
            + ",".join(["(?,?,?,?,?,?,?)"] * len(chunk)),
            [
                value
                for u in chunk
                for value in (
                    u.doc,
                    u.seq,
                    u.data,
                    u.time_s,
                    u.author.user,
                    u.author.client,
                    u.author.instance,
                )
            ],
        )


def _update_from_row(row: tuple[Any, ...]) -> UpdateRecord:
    doc, seq, data, time_s, user, client, instance = row
    return UpdateRecord(doc, seq, data, time_s, Author(user, client, instance))
