"""Each instance follows only the documents it holds. What other instances commit
to the rest is left out by the store, unread (SQLite's poll asks for the held
documents' rows only, MongoDB's change stream matches them only), and a document
opened on one instance while another writes to it misses nothing: every update
reaches its peers, in order, soon, without waiting for the feed audit. On one
SQLite file and on MongoDB (SecantusDB, or COLLAB_TEST_MONGODB_URL)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

from collab.app import CollabServer
from collab.config import Settings
from collab.store import FeedPosition, HeldDocuments, LoadedDocument, Store, UpdateRecord
from collab.store.mongodb import MongoStore
from collab.store.mongodb import feed as mongodb_feed
from collab.store.sqlite import SQLiteStore
from tests.helpers import TIMEOUT_S, SeqWatcher, appends, wait_until

T = TypeVar("T")
# The feed audit never runs during these tests: whatever arrives came from the feed
# or from a room reading its log when the feed came to follow it.
AUDIT_S = 600.0
# Generous: a record crosses in milliseconds; a document opened on MongoDB waits for
# the change stream to be reopened with it (within about a second).
ARRIVES_S = 5.0
ROUNDS = 12
EDITS = 24


class Noting:
    """A store that notes the update rows it gives, by document (what its feed
    brings, what loads and log reads return), and when a poll of its feed starts."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rows: Counter[str] = Counter()
        self.log_reads = 0
        self.asked = asyncio.Event()  # the feed asked for the documents held

    async def follow(
        self,
        after: FeedPosition,
        *,
        poll_s: float,
        exclude_instance: str | None = None,
        documents: HeldDocuments | None = None,
    ) -> AsyncIterator[tuple[FeedPosition, list[UpdateRecord]]]:
        asking = documents

        if documents is not None:

            def asking() -> Any:
                names = documents()
                self.asked.set()
                return names

        feed = super().follow(
            after, poll_s=poll_s, exclude_instance=exclude_instance, documents=asking
        )
        async with contextlib.aclosing(feed) as batches:
            async for position, records in batches:
                self.rows.update(record.doc for record in records)
                yield position, records

    async def read_updates(self, doc: str, **options: Any) -> list[UpdateRecord]:
        records = await super().read_updates(doc, **options)
        self.rows[doc] += len(records)
        self.log_reads += 1
        return records

    async def load(self, doc: str, *, create: bool = False) -> LoadedDocument:
        loaded = await super().load(doc, create=create)
        self.rows[doc] += len(loaded.updates)
        return loaded


class NotingSQLiteStore(Noting, SQLiteStore):
    """Its feed's polls can be held where they start, once they asked for the
    documents held: a poll in flight, as long as a test needs."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.polls_go = asyncio.Event()
        self.polls_go.set()

    async def _run(self, executor: ThreadPoolExecutor, fn: Callable[[], T]) -> T:
        if executor is self._feeder:
            await self.polls_go.wait()
        return await super()._run(executor, fn)


class NotingMongoStore(Noting, MongoStore):
    pass


@pytest.fixture(params=["sqlite", pytest.param("mongodb", marks=pytest.mark.slow)])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Store]:
    """Each call: a store on one SQLite file, or one MongoDB database, that every
    instance of the test shares."""
    if request.param == "sqlite":
        return lambda: NotingSQLiteStore(tmp_path / "shared.db")
    # A document loaded on b is followed once b's change stream is reopened with it:
    # at most every FEED_REOPEN_MIN_S, when the stream next answers (within
    # FEED_AWAIT_MIN_S when quiet). A tenth of a second each, not half: the same
    # race between the room's log read and the reopened stream, five times as often.
    monkeypatch = request.getfixturevalue("monkeypatch")
    monkeypatch.setattr(mongodb_feed, "FEED_REOPEN_MIN_S", 0.1)
    monkeypatch.setattr(mongodb_feed, "FEED_AWAIT_MIN_S", 0.1)
    url = request.getfixturevalue("mongodb_url")
    return lambda: NotingMongoStore(url)


async def two_instances(
    start_server: Callable[..., Awaitable[CollabServer]],
    settings: Settings,
    make_store: Callable[[], Store],
) -> tuple[CollabServer, CollabServer, Noting]:
    """Instances a and b on one store; b's notes what it reads."""
    shared = settings.replace(feed_audit_s=AUDIT_S)
    a = await start_server(shared.replace(instance_id="a"), make_store())
    store_b = make_store()
    b = await start_server(shared.replace(instance_id="b"), store_b)
    assert isinstance(store_b, Noting)
    return a, b, store_b


async def test_a_document_opened_on_one_instance_while_another_writes_it_gets_every_update(
    start_server, settings, shared_store
):
    a, b, _ = await two_instances(start_server, settings, shared_store)
    for round_ in range(ROUNDS):
        doc = f"round-{round_}"
        updates = appends(round_ + 1, EDITS)
        join_at = (round_ * 5) % EDITS  # b opens it at another moment each round
        writer = await SeqWatcher.join(a.port, f"writer-{round_}", doc)
        reader: SeqWatcher | None = None
        try:
            for ref, update in enumerate(updates):
                writer.send(ref, update)  # without waiting for acks: a writes meanwhile
                if ref == join_at:
                    reader = await SeqWatcher.join(b.port, f"reader-{round_}", doc)
            assert reader is not None
            await reader.wait_for(lambda r=reader: r.seqs[-1] == EDITS, timeout_s=ARRIVES_S)

            assert reader.seqs == list(range(reader.seqs[0], EDITS + 1)), (round_, reader.seqs)
            assert reader.text() == "".join(f"<{round_ + 1}.{i}>" for i in range(EDITS))
        finally:
            await writer.close()
            if reader is not None:
                await reader.close()


async def test_an_instance_reads_no_row_of_the_documents_it_does_not_hold(
    start_server, settings, shared_store
):
    a, b, store_b = await two_instances(start_server, settings, shared_store)
    reader = await SeqWatcher.join(b.port, "reader", "mine")
    mine = await SeqWatcher.join(a.port, "writer", "mine")
    writers = [await SeqWatcher.join(a.port, f"w{i}", f"other-{i}") for i in range(10)]
    try:
        mine.send(0, appends(1, 1)[0])
        await reader.wait_for(lambda: reader.seqs[-1] == 1)  # b's feed follows "mine" now
        rows_before, noted = store_b.stats.log_rows_read, store_b.rows.copy()

        for i, writer in enumerate(writers):
            for ref, update in enumerate(appends(10 + i, 20)):
                writer.send(ref, update)
        for writer in writers:
            await writer.wait_for(lambda w=writer: len(w.acks) == 20)
        mine.send(1, appends(2, 1)[0])
        # Committed after every other document's: once b has it, b's feed is past them.
        await reader.wait_for(lambda: reader.seqs[-1] == 2)

        read = store_b.rows - noted
        assert set(read) == {"mine"}, read  # of the 200 rows a wrote elsewhere: none
        assert store_b.stats.log_rows_read - rows_before == read["mine"] <= 2
    finally:
        for peer in (reader, mine, *writers):
            await peer.close()


async def test_a_room_loaded_while_a_poll_without_it_runs_gets_what_that_poll_passed_over(
    start_server, settings, tmp_path
):
    a, b, store_b = await two_instances(
        start_server, settings, lambda: NotingSQLiteStore(tmp_path / "shared.db")
    )
    assert isinstance(store_b, NotingSQLiteStore)
    writer = await SeqWatcher.join(a.port, "writer", "doc")
    updates = appends(3, 2)
    reader: SeqWatcher | None = None
    try:
        writer.send(0, updates[0])
        await writer.wait_for(lambda: 0 in writer.acks)
        store_b.polls_go.clear()
        store_b.asked.clear()
        async with asyncio.timeout(TIMEOUT_S):
            await store_b.asked.wait()  # a poll of b's feed began, without "doc", and waits

        reader = await SeqWatcher.join(b.port, "reader", "doc")  # loads on b meanwhile
        await wait_until(lambda: store_b.log_reads > 0)  # and read the log once loaded
        writer.send(1, updates[1])
        await writer.wait_for(lambda: 1 in writer.acks)
        store_b.polls_go.set()  # the poll passes over seq 2: it did not ask for "doc"
        await reader.wait_for(lambda: reader.seqs[-1] == 2, timeout_s=ARRIVES_S)

        assert reader.seqs == [1, 2]
        assert reader.text() == writer.text()
    finally:
        store_b.polls_go.set()
        await writer.close()
        if reader is not None:
            await reader.close()
