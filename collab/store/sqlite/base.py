"""What every area of the SQLite store runs on: its threads and their
connections, opening and closing the file, the write transaction, and the
``documents`` row each area reads or writes."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import secrets
import sqlite3
import struct
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from collab.errors import StoreError
from collab.store.base import Store
from collab.store.sqlite.schema import SCHEMA_VERSION, prepare

log = logging.getLogger("collab.store")
T = TypeVar("T")

# Prepared statements a connection keeps for reuse: parsing a statement again costs
# about as much as running a small one. A kept statement also keeps the values last
# bound to it, blobs included, until it runs again: so the writer's own connection
# (snapshots, imports, large batches) keeps none, and small appends have a
# connection of their own whose statements hold at most
# CACHED_STATEMENTS x SMALL_APPEND_BYTES.
CACHED_STATEMENTS = 32
SMALL_APPEND_BYTES = 64 * 1024

# Each open store holds a shared lock on the file's "-instances" companion; one
# that could take that lock exclusively is alone on the file. Following other
# instances' commits and presence, a store alone polls every ALONE_POLL_S rather
# than every feed_poll_s (the polls were nearly all an idle server's CPU) and
# looks for others every ALONE_CHECK_S: another instance is noticed within that,
# and what a command run beside it wrote and exited in between (`collab import`
# into the file) within ALONE_POLL_S.
ALONE_POLL_S = 1.0
ALONE_CHECK_S = 0.1
# The lock is on the file's first byte, per open file (Linux's "open file
# description" locks: two stores open in one process see each other, and asking
# whether an exclusive lock could be taken changes nothing). struct flock:
# l_type, l_whence, l_start, l_len, l_pid.
_LOCK = struct.Struct("hhqqi")
_OFD_SETLK: int | None = getattr(fcntl, "F_OFD_SETLK", None)
_OFD_GETLK: int | None = getattr(fcntl, "F_OFD_GETLK", None)


class SQLiteBase(Store):
    """The connections: one writer, one reader, one that polls the feeds and one
    that writes presence, each on a thread of its own (``_run``)."""

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
        self._instances_fd: int | None = None  # the "-instances" lock file, while open

    async def _run(self, executor: ThreadPoolExecutor, fn: Callable[[], T]) -> T:
        if self._closed:
            raise StoreError("store is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(executor, fn)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite: {exc}") from exc

    def _connect(self, *, durable: bool = True, cached: bool = True) -> sqlite3.Connection:
        # isolation_level=None: transactions are explicit (BEGIN ... COMMIT).
        conn = sqlite3.connect(
            self.path,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=CACHED_STATEMENTS if cached else 0,
        )
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'OFF'}")
        return conn

    async def open(self) -> None:
        def setup() -> None:
            if not self._create and not self.path.is_file():
                raise StoreError(f"no store at {self.path.resolve()}")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._connect(cached=False)
            try:
                prepare(conn, self.path, create=self._create)
            except BaseException:
                conn.close()  # also rolls back a half-created schema
                raise
            self._conns["writer"] = conn
            self._open_instances_lock()
            # The same thread's second connection, for appends of small batches:
            # both take the file's write lock in turn, one transaction at a time.
            self._conns["small-writer"] = self._connect()

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
            "small-writer": self._writer,
            "reader": self._reader,
            "feed": self._feeder,
            "presence": self._presence,
        }
        for name, executor in executors.items():
            conn = self._conns.pop(name, None)
            if conn is not None:
                await loop.run_in_executor(executor, conn.close)
        for executor in set(executors.values()):
            executor.shutdown(wait=False)
        if self._instances_fd is not None:
            os.close(self._instances_fd)  # the lock goes with it
            self._instances_fd = None
        self._closed = True

    def _open_instances_lock(self) -> None:
        if _OFD_GETLK is None:  # no open-file-description locks (not Linux)
            return
        try:
            fd = os.open(f"{self.path}-instances", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:  # then this instance never counts itself alone
            log.warning("no lock file beside the store (%s): polling as for several", exc)
            return
        try:
            fcntl.fcntl(fd, _OFD_SETLK, _LOCK.pack(fcntl.F_RDLCK, os.SEEK_SET, 0, 1, 0))
        except OSError as exc:
            os.close(fd)
            log.warning("cannot lock %s-instances (%s): polling as for several", self.path, exc)
            return
        self._instances_fd = fd

    def _alone(self) -> bool:
        """Whether no other process (no other open store) has the file open: asks
        the kernel whether an exclusive lock could be taken, taking nothing (one
        non-blocking syscall: called on the event loop)."""
        if self._instances_fd is None:
            return False
        try:
            answer = fcntl.fcntl(
                self._instances_fd,
                _OFD_GETLK,
                _LOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, 0, 1, 0),
            )
        except OSError:
            return False
        return _LOCK.unpack(answer)[0] == fcntl.F_UNLCK

    async def _wait_to_poll(self, poll_s: float) -> None:
        """Wait until the next poll for other processes' commits or presence is
        due: after ``poll_s``, or, while this process is alone on the file, once
        ALONE_POLL_S passed or another process opens it."""
        pause = poll_s
        waited = 0.0
        while True:
            await asyncio.sleep(pause)
            waited += pause
            if waited >= ALONE_POLL_S or not self._alone():
                return
            pause = max(poll_s, min(ALONE_CHECK_S, ALONE_POLL_S - waited))

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


# Statements over many rows (documents, updates) take them some hundreds at a time,
# never one a statement: every statement releases and retakes the GIL, and each
# retake waits behind a busy event loop (a 1,000-row commit took seconds under
# load, milliseconds this way; on many small rooms the hand-offs were most of the
# writer's cost).
ROWS_PER_STATEMENT = 512  # at most 3,584 parameters (7 a row), well under SQLite's 32,766


def statement_chunks(rows: Sequence[T]) -> Iterator[Sequence[T]]:
    """``rows``, one statement's worth (ROWS_PER_STATEMENT) at a time."""
    for start in range(0, len(rows), ROWS_PER_STATEMENT):
        yield rows[start : start + ROWS_PER_STATEMENT]


def padded(rows: Sequence[T]) -> Sequence[T]:
    """``rows`` with its last repeated up to the next power of two: the statements
    that take them come in a few lengths, which a connection's cache of prepared
    statements keeps (preparing one cost 3 times running it). A repeated name in
    ``IN``, or a repeated identical row in ``FROM (VALUES ...)``, changes nothing."""
    size = 1 << (len(rows) - 1).bit_length()
    return rows if size == len(rows) else [*rows, *[rows[-1]] * (size - len(rows))]


def document_rows(
    conn: sqlite3.Connection, names: Sequence[str], columns: str
) -> dict[str, tuple[Any, ...]]:
    """The ``columns`` of each document of ``names`` that exists, by name."""
    rows: dict[str, tuple[Any, ...]] = {}
    for chunk in map(padded, statement_chunks(names)):
        for name, *row in conn.execute(
            f"SELECT name, {columns} FROM documents WHERE name IN ({','.join('?' * len(chunk))})",
            chunk,
        ):
            rows[name] = tuple(row)
    return rows


def create_document(
    conn: sqlite3.Connection, name: str, now: float, epoch: str | None = None
) -> None:
    """Add the document's row unless there is one (with a new epoch, unless given)."""
    conn.execute(
        "INSERT OR IGNORE INTO documents (name, epoch, created_s, updated_s) VALUES (?,?,?,?)",
        (name, epoch or secrets.token_hex(8), now, now),
    )


def of_epoch(conn: sqlite3.Connection, doc: str, epoch: str | None) -> bool:
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
