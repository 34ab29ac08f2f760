"""The client's offline queue on disk: for each document, every local edit the
server has not acknowledged yet, merged into one update, with the epoch it was
made in. A client process that restarts while offline reads it back and still
delivers those edits.

SQLite (stdlib ``sqlite3``) on a thread of its own, so that no write blocks the
event loop. Writes are coalesced: a document's row is rewritten at most every
``SAVE_INTERVAL_S`` (an edit made in the last moments before a crash may be lost:
it was never acknowledged, and the user saw no "saved"), and at close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

log = logging.getLogger("collab.client")
T = TypeVar("T")

SAVE_INTERVAL_S = 0.05
SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    doc TEXT PRIMARY KEY,
    epoch TEXT,
    updates BLOB NOT NULL
)
"""


class QueueFile:
    """Rows of ``(doc, epoch, merged unacknowledged updates)``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="collab-client-queue")
        self._conn: sqlite3.Connection | None = None
        # doc -> a callable giving (epoch, merged update or None) when it is saved
        self._dirty: dict[str, Callable[[], tuple[str | None, bytes | None]]] = {}
        self._saver: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def open(self) -> None:
        def connect() -> sqlite3.Connection:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(SCHEMA)
            return conn

        self._conn = await self._run(connect)
        self._saver = asyncio.get_running_loop().create_task(self._save_loop())

    async def load(self, doc: str) -> tuple[str | None, bytes] | None:
        """The epoch and merged updates queued for ``doc``, if any."""
        conn = self._connection()
        row = await self._run(
            lambda: conn.execute(
                "SELECT epoch, updates FROM queue WHERE doc = ?", (doc,)
            ).fetchone()
        )
        return (row[0], bytes(row[1])) if row else None

    def mark(self, doc: str, snapshot: Callable[[], tuple[str | None, bytes | None]]) -> None:
        """Save ``doc``'s queue soon; ``snapshot()`` gives what to save then."""
        self._dirty[doc] = snapshot
        self._wakeup.set()

    async def _save_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            try:
                await self._save_dirty()
            except (sqlite3.Error, OSError) as exc:
                log.error("the offline queue %s could not be saved: %s", self.path, exc)
            await asyncio.sleep(SAVE_INTERVAL_S)

    async def _save_dirty(self) -> None:
        dirty, self._dirty = self._dirty, {}
        rows = [(doc, *snapshot()) for doc, snapshot in dirty.items()]
        if not rows:
            return
        conn = self._connection()

        def write() -> None:
            conn.execute("BEGIN")
            try:
                for doc, epoch, updates in rows:
                    if updates is None:
                        conn.execute("DELETE FROM queue WHERE doc = ?", (doc,))
                    else:
                        conn.execute(
                            "INSERT INTO queue (doc, epoch, updates) VALUES (?,?,?) "
                            "ON CONFLICT (doc) DO UPDATE SET "
                            "epoch = excluded.epoch, updates = excluded.updates",
                            (doc, epoch, updates),
                        )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

        await self._run(write)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("the offline queue is not open")
        return self._conn

    async def close(self) -> None:
        """Save what is marked, then close. Safe to call twice."""
        if self._saver is not None:
            self._saver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._saver
            self._saver = None
        if self._conn is not None:
            try:
                await self._save_dirty()
            except (sqlite3.Error, OSError) as exc:
                log.error("the offline queue %s could not be saved: %s", self.path, exc)
            conn, self._conn = self._conn, None
            await self._run(conn.close)
        self._executor.shutdown(wait=False)
