"""Version names on SQLite (VersionNameStore): the ``version_names`` table, a row
per named version, keyed by ``(doc, seq)``."""

from __future__ import annotations

from collab.store.records import VersionName
from collab.store.sqlite.base import SQLiteBase, write_transaction


class SQLiteNames(SQLiteBase):
    """The VersionNameStore part of :class:`~collab.store.sqlite.SQLiteStore`."""

    async def name_version(self, name: VersionName) -> None:
        def write() -> None:
            with write_transaction(self._w):
                self._w.execute(
                    "INSERT OR REPLACE INTO version_names (doc, seq, name, user, time_s) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (name.doc, name.seq, name.name, name.user, name.time_s),
                )

        await self._run(self._writer, write)

    async def unname_version(self, doc: str, seq: int) -> bool:
        def write() -> bool:
            with write_transaction(self._w):
                deleted = self._w.execute(
                    "DELETE FROM version_names WHERE doc = ? AND seq = ?", (doc, seq)
                ).rowcount
            return deleted > 0

        return await self._run(self._writer, write)

    async def version_names(self, doc: str) -> list[VersionName]:
        def read() -> list[VersionName]:
            rows = self._r.execute(
                "SELECT doc, seq, name, user, time_s FROM version_names WHERE doc = ? ORDER BY seq",
                (doc,),
            ).fetchall()
            return [VersionName(*row) for row in rows]

        return await self._run(self._reader, read)
