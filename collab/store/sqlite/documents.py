"""Documents on SQLite (DocumentStore): the ``documents`` table, one row per
document, and loading one with its latest snapshot and the log after it."""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from collab.store.base import prefix_end
from collab.store.records import Author, DocumentInfo, LoadedDocument
from collab.store.sqlite.base import (
    SQLiteBase,
    create_document,
    document_rows,
    write_transaction,
)
from collab.store.sqlite.log import UPDATE_COLUMNS, update_from_row
from collab.store.sqlite.snapshots import latest_snapshot_at


class SQLiteDocuments(SQLiteBase):
    """The DocumentStore part of :class:`~collab.store.sqlite.SQLiteStore`."""

    async def load(self, doc: str, *, create: bool = False) -> LoadedDocument:
        def ensure_exists() -> None:
            create_document(self._w, doc, time.time())

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
                snapshot = latest_snapshot_at(conn, doc, None)
                rows = conn.execute(
                    f"SELECT {UPDATE_COLUMNS} FROM updates WHERE doc = ? AND seq > ? ORDER BY seq",
                    (doc, snapshot.seq if snapshot else 0),
                ).fetchall()
            finally:
                conn.execute("COMMIT")
            self.stats.log_rows_read += len(rows)
            return LoadedDocument(doc, epoch, snapshot, tuple(map(update_from_row, rows)))

        return await self._run(self._reader, read)

    async def delete_document(self, doc: str, *, by: Author | None = None) -> bool:
        author = by or Author()

        def write() -> bool:
            conn = self._w
            with write_transaction(conn):
                row = conn.execute(
                    "SELECT epoch, head_seq FROM documents WHERE name = ?", (doc,)
                ).fetchone()
                if row is not None:
                    record_deletion(conn, doc, row[0], row[1], time.time(), author)
                for table in (
                    "updates",
                    "snapshots",
                    "checkpoints",
                    "awareness",
                    "quarantine",
                    "version_names",
                ):
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
            rows = document_rows(self._conn("feed"), list(docs), "head_seq")
            return {name: head for name, (head,) in rows.items()}

        return await self._run(self._feeder, read)


def record_deletion(
    conn: sqlite3.Connection, doc: str, epoch: str, last_seq: int, now: float, by: Author
) -> None:
    """Add the deletion's row with the next id of the updates' sequence: the feed
    (collab.store.sqlite.feed) reads it after every update committed before it
    and before every one committed after. Inside the deleting write transaction."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'updates'").fetchone()
    if row is None:  # no update was ever stored: the sequence starts here
        (last,) = conn.execute("SELECT coalesce(max(id), 0) FROM deletions").fetchone()
        conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('updates', ?)", (last + 1,))
        new_id = last + 1
    else:
        new_id = row[0] + 1
        conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'updates'", (new_id,))
    conn.execute(
        "INSERT INTO deletions (id, doc, epoch, last_seq, time_s, origin_user, origin_client,"
        " origin_instance) VALUES (?,?,?,?,?,?,?,?)",
        (new_id, doc, epoch, last_seq, now, by.user, by.client, by.instance),
    )
