"""Repairs on SQLite (RepairStore): entries set aside go to the ``quarantine``
table, in one transaction with the new epoch."""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping

from collab.errors import StoreError
from collab.store.records import QuarantinedEntry, Repair
from collab.store.sqlite.base import SQLiteBase, write_transaction
from collab.store.sqlite.snapshots import recount_bytes_since_snapshot


class SQLiteRepairs(SQLiteBase):
    """The RepairStore part of :class:`~collab.store.sqlite.SQLiteStore`."""

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
                recount_bytes_since_snapshot(conn, doc)

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
