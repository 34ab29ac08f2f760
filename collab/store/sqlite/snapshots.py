"""Snapshots on SQLite (SnapshotStore): the ``snapshots`` and ``checkpoints``
tables, retention, and the snapshot lease in the document's row."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

from collab.errors import StoreError
from collab.store.records import MAX_SEQ, Checkpoint, SnapshotRecord
from collab.store.sqlite.base import SQLiteBase, of_epoch, write_transaction


class SQLiteSnapshots(SQLiteBase):
    """The SnapshotStore part of :class:`~collab.store.sqlite.SQLiteStore`."""

    async def save_snapshot(self, snapshot: SnapshotRecord) -> None:
        def write() -> None:
            conn = self._w
            with write_transaction(conn):
                if not of_epoch(conn, snapshot.doc, snapshot.epoch):
                    return  # deleted meanwhile: not kept (the transaction writes nothing)
                cursor = conn.execute(
                    "INSERT OR IGNORE INTO snapshots (doc, seq, data, time_s, waiting, authors) "
                    "VALUES (?,?,?,?,?,?)",
                    (
                        snapshot.doc,
                        snapshot.seq,
                        snapshot.data,
                        snapshot.time_s,
                        snapshot.waiting,
                        snapshot.authors,
                    ),
                )
                written = cursor.rowcount
                conn.execute(
                    "UPDATE documents SET snapshot_seq = max(snapshot_seq, ?), "
                    "lease_instance = NULL, lease_until_s = NULL WHERE name = ?",
                    (snapshot.seq, snapshot.doc),
                )
                recount_bytes_since_snapshot(conn, snapshot.doc)
            if written:
                self.stats.snapshots_written += 1

        await self._run(self._writer, write)

    async def latest_snapshot(
        self, doc: str, *, at_or_before_seq: int | None = None
    ) -> SnapshotRecord | None:
        return await self._run(
            self._reader, lambda: latest_snapshot_at(self._r, doc, at_or_before_seq)
        )

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


def latest_snapshot_at(
    conn: sqlite3.Connection, doc: str, at_or_before_seq: int | None
) -> SnapshotRecord | None:
    """The newest snapshot of ``doc``, or the newest at or before a seq."""
    row = conn.execute(
        "SELECT doc, seq, data, time_s, waiting, authors FROM snapshots "
        "WHERE doc = ? AND seq <= ? ORDER BY seq DESC LIMIT 1",
        (doc, at_or_before_seq if at_or_before_seq is not None else MAX_SEQ),
    ).fetchone()
    if not row:
        return None
    *fields, authors = row
    return SnapshotRecord(*fields, authors=authors)


def recount_bytes_since_snapshot(conn: sqlite3.Connection, doc: str) -> None:
    """Set the document's ``bytes_since_snapshot`` from the log after its
    ``snapshot_seq`` (after that changed)."""
    conn.execute(
        "UPDATE documents SET bytes_since_snapshot = coalesce(("
        "SELECT sum(length(data)) FROM updates "
        "WHERE doc = documents.name AND seq > documents.snapshot_seq), 0) "
        "WHERE name = ?",
        (doc,),
    )
