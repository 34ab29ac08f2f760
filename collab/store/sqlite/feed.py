"""The feed on SQLite (FeedStore): every update row gets an ``id`` from
``AUTOINCREMENT``; ids grow in commit order across every process and never
change, so each process follows the others' commits by polling ``id > last``
through the primary key, reading only the rows of the documents it holds."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Set
from typing import Any

from collab.store.base import HeldDocuments
from collab.store.records import FeedPosition, UpdateRecord
from collab.store.sqlite.base import SQLiteBase
from collab.store.sqlite.log import UPDATE_COLUMNS, update_from_row

FEED_PAGE = 1000  # rows read per poll, at most
FEED_QUERY = (
    f"SELECT id, {UPDATE_COLUMNS} FROM updates WHERE id > ? AND id <= ? "
    "AND (? IS NULL OR origin_instance IS NOT ?) ORDER BY id LIMIT ?"
)
# The rows of the held documents only (a JSON array of names): the other rows are
# passed over by the primary key without reading their data. ``+doc`` keeps SQLite
# from walking the (doc, seq) index instead, which would read every held
# document's whole log at each poll.
FEED_QUERY_OF_DOCUMENTS = (
    f"SELECT id, {UPDATE_COLUMNS} FROM updates WHERE id > ? AND id <= ? "
    "AND (? IS NULL OR origin_instance IS NOT ?) "
    "AND +doc IN (SELECT value FROM json_each(?)) ORDER BY id LIMIT ?"
)


class SQLiteFeed(SQLiteBase):
    """The FeedStore part of :class:`~collab.store.sqlite.SQLiteStore`."""

    async def feed_position(self) -> FeedPosition:
        def read() -> int:
            return (
                self._conn("feed").execute("SELECT coalesce(max(id), 0) FROM updates").fetchone()[0]
            )

        return await self._run(self._feeder, read)

    async def follow(
        self,
        after: FeedPosition,
        *,
        poll_s: float,
        exclude_instance: str | None = None,
        documents: HeldDocuments | None = None,
    ) -> AsyncIterator[tuple[FeedPosition, list[UpdateRecord]]]:
        position = int(after)
        yield position, []  # open at once
        held: Set[str] | None = None
        held_json: str | None = None  # ``held`` as the query takes it
        while True:
            if documents is not None:
                names = documents()  # on the loop, as each poll starts (the contract)
                if names is not held:
                    held, held_json = names, json.dumps(list(names))

            def read(
                position: int = position, held_json: str | None = held_json
            ) -> tuple[int, list[tuple[Any, ...]]]:
                conn = self._conn("feed")
                conn.execute("BEGIN")  # the end and the rows from one read snapshot
                try:
                    (end,) = conn.execute("SELECT coalesce(max(id), 0) FROM updates").fetchone()
                    rows = conn.execute(
                        FEED_QUERY if held_json is None else FEED_QUERY_OF_DOCUMENTS,
                        (position, end, exclude_instance, exclude_instance)
                        + (() if held_json is None else (held_json,))
                        + (FEED_PAGE,),
                    ).fetchall()
                finally:
                    conn.execute("COMMIT")
                self.stats.log_rows_read += len(rows)
                # A full page may stop short of the end; otherwise every row up to the
                # end was seen (the excluded ones without reading their data).
                return (rows[-1][0] if len(rows) == FEED_PAGE else end), rows

            reached, rows = await self._run(self._feeder, read)
            if rows or reached > position:
                position = reached
                yield position, [update_from_row(row[1:]) for row in rows]
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
