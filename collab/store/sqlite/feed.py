"""The feed on SQLite (FeedStore): every update row gets an ``id`` from
``AUTOINCREMENT``; ids grow in commit order across every process and never
change, so each process follows the others' commits by polling ``id > last``
through the primary key, reading only the rows of the documents it holds. A
deletion's row (``deletions``) takes its id from the same sequence, so
``follow(..., deletions=True)`` reads both tables in one order."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Set
from dataclasses import replace
from typing import Any

from collab.store.base import HeldDocuments
from collab.store.records import Author, DeletionRecord, FeedPosition, FeedRecord
from collab.store.sqlite.base import SQLiteBase
from collab.store.sqlite.log import UPDATE_COLUMNS, update_from_row

FEED_PAGE = 1000  # rows read per poll, at most
# The feed's end: the last id of either table (a deletion may be the last commit).
FEED_END = (
    "SELECT max((SELECT coalesce(max(id), 0) FROM updates),"
    " (SELECT coalesce(max(id), 0) FROM deletions))"
)
DELETION_COLUMNS = "id, doc, epoch, last_seq, time_s, origin_user, origin_client, origin_instance"
# Each row with its generation, from the same read snapshot (a deletion takes a
# document's rows with it).
WITH_EPOCH = f"id, {UPDATE_COLUMNS}, (SELECT epoch FROM documents WHERE name = updates.doc)"
FEED_QUERY = (
    f"SELECT {WITH_EPOCH} FROM updates WHERE id > ? AND id <= ? "
    "AND (? IS NULL OR origin_instance IS NOT ?) ORDER BY id LIMIT ?"
)
# The rows of the held documents only (a JSON array of names): the other rows are
# passed over by the primary key without reading their data. ``+doc`` keeps SQLite
# from walking the (doc, seq) index instead, which would read every held
# document's whole log at each poll.
FEED_QUERY_OF_DOCUMENTS = (
    f"SELECT {WITH_EPOCH} FROM updates WHERE id > ? AND id <= ? "
    "AND (? IS NULL OR origin_instance IS NOT ?) "
    "AND +doc IN (SELECT value FROM json_each(?)) ORDER BY id LIMIT ?"
)


class SQLiteFeed(SQLiteBase):
    """The FeedStore part of :class:`~collab.store.sqlite.SQLiteStore`."""

    async def feed_position(self) -> FeedPosition:
        def read() -> int:
            return self._conn("feed").execute(FEED_END).fetchone()[0]

        return await self._run(self._feeder, read)

    async def follow(
        self,
        after: FeedPosition,
        *,
        poll_s: float,
        exclude_instance: str | None = None,
        deletions: bool = False,
        documents: HeldDocuments | None = None,
    ) -> AsyncIterator[tuple[FeedPosition, list[FeedRecord]]]:
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
            ) -> tuple[int, list[tuple[Any, ...]], list[tuple[Any, ...]]]:
                conn = self._conn("feed")
                conn.execute("BEGIN")  # the end and the rows from one read snapshot
                try:
                    (end,) = conn.execute(FEED_END).fetchone()
                    rows = conn.execute(
                        FEED_QUERY if held_json is None else FEED_QUERY_OF_DOCUMENTS,
                        (position, end, exclude_instance, exclude_instance)
                        + (() if held_json is None else (held_json,))
                        + (FEED_PAGE,),
                    ).fetchall()
                    # A full page may stop short of the end; otherwise every row up to
                    # the end was seen (the excluded ones without reading their data).
                    reached = rows[-1][0] if len(rows) == FEED_PAGE else end
                    gone = (
                        conn.execute(
                            f"SELECT {DELETION_COLUMNS} FROM deletions "
                            "WHERE id > ? AND id <= ? ORDER BY id",
                            (position, reached),
                        ).fetchall()
                        if deletions
                        else []
                    )
                finally:
                    conn.execute("COMMIT")
                self.stats.log_rows_read += len(rows)
                return reached, rows, gone

            reached, rows, gone = await self._run(self._feeder, read)
            if held is not None:  # few: left out here rather than by the query
                gone = [row for row in gone if row[1] in held]
            if rows or reached > position:
                position = reached
                records: list[tuple[int, FeedRecord]] = [
                    (row[0], replace(update_from_row(row[1:-1]), epoch=row[-1])) for row in rows
                ]
                if gone:
                    records += [(row[0], deletion_from_row(row)) for row in gone]
                    records.sort(key=lambda pair: pair[0])
                yield position, [record for _, record in records]
            if len(rows) < FEED_PAGE:
                if exclude_instance is None:
                    await asyncio.sleep(poll_s)  # this instance's own commits too
                else:
                    await self._wait_to_poll(poll_s)

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


def deletion_from_row(row: tuple[Any, ...]) -> DeletionRecord:
    _, doc, epoch, last_seq, time_s, user, client, instance = row
    return DeletionRecord(doc, epoch, last_seq, time_s, Author(user, client, instance))
