"""The update log on SQLite (LogStore): the ``updates`` table. Seqs are given
inside the writer's transaction (``BEGIN IMMEDIATE`` holds the file's write
lock), so they are gap-free per document across processes."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from collab.errors import DocumentChanged
from collab.store.base import creating, expected_epochs, next_heads
from collab.store.records import (
    MAX_SEQ,
    AppendResult,
    Author,
    DocumentHead,
    NewUpdate,
    UpdateRecord,
)
from collab.store.sqlite.base import (
    SMALL_APPEND_BYTES,
    SQLiteBase,
    create_document,
    document_rows,
    padded,
    statement_chunks,
    write_transaction,
)

UPDATE_COLUMNS = "doc, seq, data, time_s, origin_user, origin_client, origin_instance"


class SQLiteLog(SQLiteBase):
    """The LogStore part of :class:`~collab.store.sqlite.SQLiteStore`."""

    async def append(self, updates: Sequence[NewUpdate]) -> AppendResult:
        if not updates:
            return AppendResult([], {})

        small = sum(len(u.data) for u in updates) <= SMALL_APPEND_BYTES

        def write() -> AppendResult:
            conn = self._conn("small-writer") if small else self._w
            with write_transaction(conn):
                heads: dict[str, DocumentHead] = {}
                changed: dict[str, str] = {}
                epochs = expected_epochs(updates)
                new = creating(updates)
                adopted: dict[str, str] = {}  # created, or found created meanwhile
                rows = document_rows(
                    conn,
                    list(dict.fromkeys(u.doc for u in updates)),
                    "head_seq, snapshot_seq, bytes_since_snapshot, epoch",
                )
                for update in updates:
                    if update.doc in heads or update.doc in changed:
                        continue
                    row = rows.get(update.doc)
                    expected = epochs.get(update.doc)
                    if update.doc in new:
                        if row is None:
                            create_document(conn, update.doc, update.time_s, expected)
                            row = (0, 0, 0, expected)
                        elif update.first:
                            changed[update.doc] = expected  # created by another writer first
                            continue
                        adopted[update.doc] = row[3]
                    elif expected is not None and (row is None or row[3] != expected):
                        changed[update.doc] = expected  # deleted, or another generation
                        continue
                    if row is None:
                        # Created at its first update's time, so that created_s never
                        # comes after updated_s.
                        create_document(conn, update.doc, update.time_s)
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
                _update_heads(
                    conn,
                    [
                        (doc, head.head_seq, head.bytes_since_snapshot, last_time[doc])
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
                f"SELECT {UPDATE_COLUMNS} FROM updates WHERE doc = ? AND seq > ? AND seq <= ? "
                "ORDER BY seq LIMIT ?",
                (
                    doc,
                    after_seq,
                    until_seq if until_seq is not None else MAX_SEQ,
                    limit if limit is not None else -1,
                ),
            ).fetchall()
            self.stats.log_rows_read += len(rows)
            return [update_from_row(row) for row in rows]

        return await self._run(self._reader, read)


# UPDATE ... FROM came with SQLite 3.33 (2020); an older library sets the heads a
# statement each.
UPDATE_FROM = sqlite3.sqlite_version_info >= (3, 33, 0)


def _update_heads(conn: sqlite3.Connection, heads: Sequence[tuple[str, int, int, float]]) -> None:
    """Set each (name, head_seq, bytes_since_snapshot, updated_s)."""
    if not UPDATE_FROM:
        conn.executemany(
            "UPDATE documents SET head_seq = ?, bytes_since_snapshot = ?, updated_s = ? "
            "WHERE name = ?",
            [(head, size, at, name) for name, head, size, at in heads],
        )
        return
    for chunk in map(padded, statement_chunks(heads)):
        conn.execute(
            "UPDATE documents SET head_seq = new.column2, bytes_since_snapshot = new.column3, "
            f"updated_s = new.column4 FROM (VALUES {','.join(['(?,?,?,?)'] * len(chunk))}) "
            "AS new WHERE documents.name = new.column1",
            [value for row in chunk for value in row],
        )


def _insert_updates(conn: sqlite3.Connection, batch: Sequence[UpdateRecord]) -> None:
    for chunk in statement_chunks(batch):
        conn.execute(
            f"INSERT INTO updates ({UPDATE_COLUMNS}) VALUES "
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


def update_from_row(row: tuple[Any, ...]) -> UpdateRecord:
    doc, seq, data, time_s, user, client, instance = row
    return UpdateRecord(doc, seq, data, time_s, Author(user, client, instance))
