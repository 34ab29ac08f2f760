"""Presence on SQLite (PresenceStore): the ``awareness`` table, one row per
(document, awareness client), written on a connection of its own that commits
without an fsync (presence need not be durable) and followed by ``change_id``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from collab.store.records import AwarenessChange, FeedPosition
from collab.store.sqlite.base import SQLiteBase, write_transaction
from collab.store.sqlite.feed import FEED_PAGE

_AWARENESS_COLUMNS = "doc, client_id, instance, data, expires_s"
AWARENESS_KEPT_S = 60.0  # expired awareness rows are deleted this long after expiry


class SQLitePresence(SQLiteBase):
    """The PresenceStore part of :class:`~collab.store.sqlite.SQLiteStore`."""

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
                await self._wait_to_poll(poll_s)
