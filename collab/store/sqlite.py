"""SQLite store: the embedded default.

Stdlib ``sqlite3`` in WAL mode with ``synchronous=FULL``, so a committed batch
survives a crash of the process or of the machine. All SQL runs off the event
loop on two dedicated threads, each with its own connection: one writer (SQLite
allows one at a time anyway) and one reader, which WAL lets run beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import groupby
from pathlib import Path
from typing import TypeVar

from collab.errors import StoreError
from collab.store.base import (
    DocumentInfo,
    LoadedDocument,
    Origin,
    QuarantinedEntry,
    Repair,
    SnapshotRecord,
    Store,
    UpdateRecord,
    check_continuity,
)

log = logging.getLogger("collab.store")
T = TypeVar("T")

SCHEMA_VERSION = 2
SCHEMA = """
CREATE TABLE documents (
    name TEXT PRIMARY KEY,
    epoch TEXT NOT NULL,
    head_seq INTEGER NOT NULL DEFAULT 0,
    created_s REAL NOT NULL,
    updated_s REAL NOT NULL
);
CREATE TABLE updates (
    doc TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    time_s REAL NOT NULL,
    origin_user TEXT,
    origin_client TEXT,
    origin_instance TEXT,
    PRIMARY KEY (doc, seq)
);
CREATE TABLE snapshots (
    doc TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    time_s REAL NOT NULL,
    PRIMARY KEY (doc, seq)
);
"""
# MIGRATIONS[v] takes a file from schema version v to v + 1.
MIGRATIONS: dict[int, str] = {
    1: """
CREATE TABLE quarantine (
    doc TEXT NOT NULL,
    kind TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    reason TEXT NOT NULL,
    quarantined_s REAL NOT NULL
);
CREATE INDEX quarantine_by_doc ON quarantine (doc, quarantined_s);
""",
}

_UPDATE_COLUMNS = "doc, seq, data, time_s, origin_user, origin_client, origin_instance"
INSERT_ROWS_PER_STATEMENT = 500  # 3,500 parameters, well under SQLite's 32,766


def path_from_url(url: str) -> Path:
    """``sqlite:///relative.db`` or ``sqlite:////absolute.db``."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ValueError(f"not a sqlite URL: {url!r} (expected sqlite:///path/to/file.db)")
    return Path(url[len(prefix) :])


class SQLiteStore(Store):
    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="collab-sqlite-writer")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="collab-sqlite-reader")
        self._write_conn: sqlite3.Connection | None = None
        self._read_conn: sqlite3.Connection | None = None
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

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: transactions are explicit (BEGIN ... COMMIT).
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute("PRAGMA synchronous = FULL")
        return conn

    async def open(self) -> None:
        def check_version(version: int) -> None:
            if not 0 <= version <= SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: schema version {version}, this server knows {SCHEMA_VERSION}"
                )

        def setup() -> None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._connect()
            try:
                # Refuse a foreign file before switching it to WAL, which would stick.
                check_version(conn.execute("PRAGMA user_version").fetchone()[0])
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode.lower() != "wal":
                    raise StoreError(f"{self.path}: could not switch to WAL mode (got {mode})")
                # Checked again under the write lock so that two processes opening a
                # new file cannot both create the schema.
                conn.execute("BEGIN IMMEDIATE")
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                check_version(version)
                if version == 0:
                    _execute_script(conn, SCHEMA)
                    version = 1
                while version < SCHEMA_VERSION:
                    _execute_script(conn, MIGRATIONS[version])
                    version += 1
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                conn.close()  # also rolls back a half-created schema
                raise
            self._write_conn = conn

        await self._run(self._writer, setup)

        def setup_reader() -> None:
            conn = self._connect()
            conn.execute("PRAGMA query_only = ON")
            self._read_conn = conn

        await self._run(self._reader, setup_reader)
        log.info("sqlite store at %s (WAL, schema v%d)", self.path, SCHEMA_VERSION)

    async def close(self) -> None:
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        for executor, conn in ((self._writer, self._write_conn), (self._reader, self._read_conn)):
            if conn is not None:
                await loop.run_in_executor(executor, conn.close)
            executor.shutdown(wait=False)
        self._closed = True

    @property
    def _w(self) -> sqlite3.Connection:
        if self._write_conn is None:
            raise StoreError("store is not open")
        return self._write_conn

    @property
    def _r(self) -> sqlite3.Connection:
        if self._read_conn is None:
            raise StoreError("store is not open")
        return self._read_conn

    # -- documents ----------------------------------------------------------------------

    def _create_document(self, conn: sqlite3.Connection, name: str, now: float) -> None:
        conn.execute(
            "INSERT OR IGNORE INTO documents (name, epoch, created_s, updated_s) VALUES (?,?,?,?)",
            (name, secrets.token_hex(8), now, now),
        )

    async def load(self, doc: str) -> LoadedDocument:
        def ensure_exists() -> None:
            self._create_document(self._w, doc, time.time())

        if await self.get_document(doc) is None:
            await self._run(self._writer, ensure_exists)

        def read() -> LoadedDocument:
            conn = self._r
            conn.execute("BEGIN")  # one consistent read snapshot of the WAL
            try:
                (epoch,) = conn.execute(
                    "SELECT epoch FROM documents WHERE name = ?", (doc,)
                ).fetchone()
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

    async def get_document(self, doc: str) -> DocumentInfo | None:
        def read() -> DocumentInfo | None:
            row = self._r.execute(
                "SELECT name, epoch, head_seq, created_s, updated_s FROM documents WHERE name = ?",
                (doc,),
            ).fetchone()
            return DocumentInfo(*row) if row else None

        return await self._run(self._reader, read)

    async def list_documents(self) -> list[DocumentInfo]:
        def read() -> list[DocumentInfo]:
            rows = self._r.execute(
                "SELECT name, epoch, head_seq, created_s, updated_s FROM documents ORDER BY name"
            ).fetchall()
            return [DocumentInfo(*row) for row in rows]

        return await self._run(self._reader, read)

    # -- log ----------------------------------------------------------------------------

    async def append(self, updates: Sequence[UpdateRecord]) -> None:
        if not updates:
            return
        ordered = sorted(updates, key=lambda u: u.doc)  # stable: keeps seq order per doc

        def write() -> None:
            conn = self._w
            conn.execute("BEGIN IMMEDIATE")
            try:
                for name, group in groupby(ordered, key=lambda u: u.doc):
                    batch = list(group)
                    row = conn.execute(
                        "SELECT head_seq FROM documents WHERE name = ?", (name,)
                    ).fetchone()
                    if row is None:
                        self._create_document(conn, name, batch[0].time_s)
                    check_continuity(name, row[0] if row else 0, [u.seq for u in batch])
                    _insert_updates(conn, batch)
                    conn.execute(
                        "UPDATE documents SET head_seq = ?, updated_s = ? WHERE name = ?",
                        (batch[-1].seq, batch[-1].time_s, name),
                    )
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
            self.stats.log_rows_written += len(ordered)
            self.stats.append_batches += 1

        await self._run(self._writer, write)

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
                    until_seq if until_seq is not None else 2**63 - 1,
                    limit if limit is not None else -1,
                ),
            ).fetchall()
            self.stats.log_rows_read += len(rows)
            return [_update_from_row(row) for row in rows]

        return await self._run(self._reader, read)

    # -- repairs --------------------------------------------------------------------------

    async def snapshot_seqs(self, doc: str) -> list[int]:
        def read() -> list[int]:
            rows = self._r.execute(
                "SELECT seq FROM snapshots WHERE doc = ? ORDER BY seq", (doc,)
            ).fetchall()
            return [seq for (seq,) in rows]

        return await self._run(self._reader, read)

    async def repair(
        self, doc: str, updates: Mapping[int, Repair], snapshots: Mapping[int, str]
    ) -> str:
        epoch = secrets.token_hex(8)

        def write() -> None:
            conn = self._w
            now = time.time()
            conn.execute("BEGIN IMMEDIATE")
            try:
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
                conn.execute("UPDATE documents SET epoch = ? WHERE name = ?", (epoch, doc))
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise

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

    # -- snapshots ------------------------------------------------------------------------

    async def save_snapshot(self, snapshot: SnapshotRecord) -> None:
        def write() -> None:
            cursor = self._w.execute(
                "INSERT OR IGNORE INTO snapshots (doc, seq, data, time_s) VALUES (?,?,?,?)",
                (snapshot.doc, snapshot.seq, snapshot.data, snapshot.time_s),
            )
            if cursor.rowcount:
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
            "SELECT doc, seq, data, time_s FROM snapshots WHERE doc = ? AND seq <= ? "
            "ORDER BY seq DESC LIMIT 1",
            (doc, at_or_before_seq if at_or_before_seq is not None else 2**63 - 1),
        ).fetchone()
        return SnapshotRecord(*row) if row else None


def _execute_script(conn: sqlite3.Connection, script: str) -> None:
    # Statement by statement: executescript() would commit the open transaction.
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


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
                    u.origin.user,
                    u.origin.client,
                    u.origin.instance,
                )
            ],
        )


def _update_from_row(row: tuple) -> UpdateRecord:
    doc, seq, data, time_s, user, client, instance = row
    return UpdateRecord(doc, seq, data, time_s, Origin(user, client, instance))
