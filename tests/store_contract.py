"""The contract every Store backend keeps (see collab/store/base.py).

A backend's test module subclasses :class:`StoreContract` and provides a ``store``
fixture (an opened store, closed after the test) and a ``second`` fixture: the
same stored data as another server instance sees it (another connection to the
same database, or the same object for a store in memory). A backend that keeps
its data across a close also overrides ``reopen``.

    class TestSQLiteStore(StoreContract):
        @pytest.fixture
        def store(self, io_loop, tmp_path): ...
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from collab.errors import DocumentChanged, StoreError
from collab.store import (
    Author,
    AwarenessChange,
    Checkpoint,
    DeletionRecord,
    DocumentHead,
    FeedPosition,
    NewUpdate,
    Repair,
    SnapshotRecord,
    Store,
    UpdateRecord,
    VersionName,
)

Reopen = Callable[[Store], Awaitable[Store]]
TIMEOUT_S = 10.0


def new(doc: str, data: bytes | str | None = None, time_s: float = 0.5) -> NewUpdate:
    if data is None:
        data = doc
    return NewUpdate(doc, data.encode() if isinstance(data, str) else data, time_s)


def news(doc: str, count: int) -> list[NewUpdate]:
    return [new(doc, f"{doc}:{i}") for i in range(1, count + 1)]


def seqs(updates: list[UpdateRecord] | tuple[UpdateRecord, ...]) -> list[int]:
    return [u.seq for u in updates]


async def next_batches(
    feed: AsyncIterator[tuple[FeedPosition, list]], count: int
) -> tuple[FeedPosition, list]:
    """Read feed batches until ``count`` items came; return the last position and them."""
    items: list = []
    position = None
    async with asyncio.timeout(TIMEOUT_S):
        while len(items) < count:
            position, batch = await anext(feed)
            items.extend(batch)
    return position, items


class StoreContract:
    @pytest.fixture
    def store(self) -> Store:
        raise NotImplementedError("a backend's test class provides the store fixture")

    @pytest.fixture
    def second(self, store: Store) -> Store:
        raise NotImplementedError("a backend's test class provides the second fixture")

    @pytest.fixture
    def reopen(self) -> Reopen:
        """``await reopen(store)``: close ``store`` and open a new one on its data."""
        pytest.skip("this backend keeps nothing once closed")

    # -- documents and epochs ---------------------------------------------------------------

    async def test_loading_a_missing_document_stores_nothing(self, store: Store):
        loaded = await store.load("notes")

        assert (loaded.stored, loaded.updates, loaded.head_seq) == (False, (), 0)
        assert isinstance(loaded.epoch, str) and loaded.epoch
        assert await store.get_document("notes") is None
        assert await store.list_documents() == []
        assert (await store.load("notes")).epoch != loaded.epoch  # nothing kept

    async def test_a_creating_append_stores_the_document_under_its_epoch(self, store: Store):
        loaded = await store.load("notes")
        first = NewUpdate("notes", b"a", time.time(), epoch=loaded.epoch, create=True)
        await store.append([first])

        info = await store.get_document("notes")
        assert info is not None and (info.epoch, info.head_seq) == (loaded.epoch, 1)
        assert (await store.load("notes")).stored
        # Another writer's first write, made before it knew: it joins the document.
        other = NewUpdate("notes", b"b", time.time(), epoch="f" * 16, create=True)
        (record,) = (await store.append([other])).records
        assert (record.seq, record.epoch) == (2, loaded.epoch)
        assert (await store.get_document("notes")).epoch == loaded.epoch

    async def test_a_first_content_is_stored_only_by_the_append_that_creates_the_document(
        self, store: Store, second: Store
    ):
        mine, theirs = await store.load("notes"), await second.load("notes")
        seed = NewUpdate("notes", b"a", time.time(), epoch=mine.epoch, create=True, first=True)
        (record,) = (await store.append([seed])).records
        assert (record.seq, record.epoch) == (1, mine.epoch)
        # Another writer's first content, made before it knew: refused, not joined.
        other = NewUpdate("notes", b"b", time.time(), epoch=theirs.epoch, create=True, first=True)
        with pytest.raises(DocumentChanged):
            await second.append([other])
        assert [r.data for r in await store.read_updates("notes")] == [b"a"]

    async def test_loading_a_new_document_with_create_creates_it_empty(self, store: Store):
        assert await store.get_document("notes") is None

        loaded = await store.load("notes", create=True)

        assert loaded.name == "notes"
        assert isinstance(loaded.epoch, str) and loaded.epoch
        assert loaded.snapshot is None
        assert loaded.updates == ()
        assert loaded.head_seq == 0
        info = await store.get_document("notes")
        assert info is not None
        assert (info.name, info.epoch, info.head_seq) == ("notes", loaded.epoch, 0)

    async def test_the_epoch_stays_the_same_across_loads_and_appends(self, store: Store):
        first = await store.load("notes", create=True)
        await store.append(news("notes", 3))
        second = await store.load("notes")

        assert second.epoch == first.epoch
        assert (await store.get_document("notes")).epoch == first.epoch

    async def test_every_document_gets_its_own_epoch(self, store: Store):
        epochs = {(await store.load(name, create=True)).epoch for name in ("a", "b", "c")}

        assert len(epochs) == 3

    async def test_concurrent_first_loads_agree_on_one_epoch(self, store: Store, second: Store):
        loads = await asyncio.gather(*(s.load("notes", create=True) for s in (store, second) * 3))

        assert len({loaded.epoch for loaded in loads}) == 1
        assert [d.name for d in await store.list_documents()] == ["notes"]

    async def test_the_epoch_and_the_log_survive_reopening(self, store: Store, reopen: Reopen):
        epoch = (await store.load("notes", create=True)).epoch
        written = (await store.append(news("notes", 3))).records
        await store.save_snapshot(SnapshotRecord("notes", 2, b"snap", 1.0))

        store = await reopen(store)

        loaded = await store.load("notes")
        assert loaded.epoch == epoch
        assert loaded.snapshot == SnapshotRecord("notes", 2, b"snap", 1.0)
        assert seqs(loaded.updates) == [3]
        assert await store.read_updates("notes") == written
        assert seqs((await store.append(news("notes", 1))).records) == [4]

    async def test_appending_to_a_document_never_loaded_creates_it(self, store: Store):
        await store.append(news("fresh", 2))

        info = await store.get_document("fresh")
        assert info is not None and info.head_seq == 2
        assert (await store.load("fresh")).epoch == info.epoch

    async def test_documents_are_listed_by_name_with_their_head_seq(self, store: Store):
        before = time.time()
        await store.load("b", create=True)
        await store.load("a", create=True)
        await store.append(
            [NewUpdate("a", b"x", time.time()) for _ in range(3)]
            + [NewUpdate("c", b"y", time.time())]
        )

        listed = await store.list_documents()

        assert [(d.name, d.head_seq) for d in listed] == [("a", 3), ("b", 0), ("c", 1)]
        for info in listed:
            assert info == await store.get_document(info.name)
            assert before - 1 <= info.created_s <= info.updated_s <= time.time() + 1

    async def test_documents_are_listed_by_prefix_a_page_at_a_time(self, store: Store):
        for name in ("b/2", "a", "b/1", "b", "c", "bz", "b/é"):
            await store.append([new(name)])

        assert [d.name for d in await store.list_documents()] == sorted(
            ["b/2", "a", "b/1", "b", "c", "bz", "b/é"]
        )
        assert [d.name for d in await store.list_documents(prefix="b/")] == ["b/1", "b/2", "b/é"]
        page = await store.list_documents(prefix="b", limit=2)
        assert [d.name for d in page] == ["b", "b/1"]
        rest = await store.list_documents(prefix="b", after="b/1")
        assert [d.name for d in rest] == ["b/2", "b/é", "bz"]
        assert await store.list_documents(prefix="x") == []

    async def test_a_prefix_lists_names_with_the_highest_characters_and_reads_only_them(
        self, store: Store
    ):
        top = "\U0010ffff"
        names = ["a", "a" + top, "a" + top + "z", "a\ud7ff", "a\ue000", "a\uffff", "ab", "b", top]
        for name in names:
            await store.append([new(name)])
        before = store.stats.document_rows_read

        assert [d.name for d in await store.list_documents(prefix="a" + top)] == [
            "a" + top,
            "a" + top + "z",
        ]
        assert [d.name for d in await store.list_documents(prefix="a\ud7ff")] == ["a\ud7ff"]
        assert [d.name for d in await store.list_documents(prefix=top)] == [top]
        assert [d.name for d in await store.list_documents(prefix="a", after="a\ue000")] == [
            "a\uffff",
            "a" + top,
            "a" + top + "z",
        ]
        assert store.stats.document_rows_read - before == 2 + 1 + 1 + 3  # what was listed

    async def test_stored_bytes_count_a_documents_log_and_snapshots(self, store: Store):
        await store.append([new("notes", b"x" * 100), new("notes", b"y" * 50), new("other", b"z")])
        await store.save_snapshot(SnapshotRecord("notes", 2, b"s" * 30, 1.0))

        sizes = await store.stored_bytes(["notes", "other", "missing"])

        assert sizes == {"notes": 180, "other": 1}

    async def test_an_unknown_document_has_no_info_no_updates_and_no_snapshot(self, store: Store):
        assert await store.get_document("nothing") is None
        assert await store.read_updates("nothing") == []
        assert await store.latest_snapshot("nothing") is None
        assert await store.list_documents() == []

    # -- appends: the store gives the seqs ----------------------------------------------------

    async def test_appends_get_seqs_from_one_without_gaps_and_keep_author_and_time(
        self, store: Store
    ):
        given = [
            NewUpdate("notes", b"one", 1700000000.123456, Author("ann", "c-1", "i-1")),
            NewUpdate("notes", b"two", 1700000001.654321, Author()),
            NewUpdate("notes", b"three", time.time(), Author(user="bob")),
        ]

        first = await store.append(given[:2])
        second = await store.append([*given[2:], new("notes", "four")])

        records = first.records + second.records
        assert seqs(records) == [1, 2, 3, 4]
        assert [(r.data, r.time_s, r.author) for r in records[:3]] == [
            (u.data, u.time_s, u.author) for u in given
        ]
        assert await store.read_updates("notes") == records
        assert (await store.load("notes")).updates == tuple(records)

    async def test_one_batch_may_carry_several_documents_interleaved(self, store: Store):
        result = await store.append([new("a"), new("b"), new("a"), new("b"), new("a")])

        assert [(r.doc, r.seq) for r in result.records] == [
            ("a", 1),
            ("b", 1),
            ("a", 2),
            ("b", 2),
            ("a", 3),
        ]
        assert seqs(await store.read_updates("a")) == [1, 2, 3]
        assert seqs(await store.read_updates("b")) == [1, 2]

    async def test_an_append_reports_each_documents_head_for_snapshots(self, store: Store):
        await store.append([new("a", b"12345"), new("a", b"678")])
        await store.save_snapshot(SnapshotRecord("a", 1, b"s", 1.0))

        result = await store.append([new("a", b"9"), new("b", b"xy")])

        assert result.heads == {
            "a": DocumentHead(head_seq=3, snapshot_seq=1, bytes_since_snapshot=4),
            "b": DocumentHead(head_seq=1, snapshot_seq=0, bytes_since_snapshot=2),
        }

    async def test_instances_appending_to_one_document_at_once_all_succeed_without_gaps(
        self, store: Store, second: Store
    ):
        async def writer(target: Store, name: str) -> list[UpdateRecord]:
            stored = []
            for i in range(20):
                stored += (await target.append([new("shared", f"{name}{i}")])).records
            return stored

        mine, theirs = await asyncio.gather(writer(store, "a"), writer(second, "b"))

        log = await store.read_updates("shared")
        assert seqs(log) == list(range(1, 41))
        assert sorted(r.data for r in log) == sorted(r.data for r in mine + theirs)
        assert seqs(mine) == sorted(seqs(mine)) and seqs(theirs) == sorted(seqs(theirs))
        assert {r.seq for r in mine}.isdisjoint(r.seq for r in theirs)

    async def test_an_empty_batch_stores_nothing(self, store: Store):
        result = await store.append([])

        assert result.records == []
        assert await store.list_documents() == []

    async def test_head_seqs_gives_the_latest_seq_of_the_documents_asked_for(self, store: Store):
        await store.append(news("a", 3) + news("b", 1))
        await store.load("empty", create=True)

        assert await store.head_seqs(["a", "b", "empty", "missing"]) == {
            "a": 3,
            "b": 1,
            "empty": 0,
        }
        assert await store.head_seqs([]) == {}

    # -- reading the log --------------------------------------------------------------------

    async def test_read_updates_honours_after_until_and_limit_in_seq_order(self, store: Store):
        await store.append(news("notes", 10))
        await store.append(news("other", 5))

        async def read(**kwargs: int | None) -> list[int]:
            return seqs(await store.read_updates("notes", **kwargs))

        assert await read() == list(range(1, 11))
        assert await read(after_seq=3) == list(range(4, 11))
        assert await read(until_seq=5) == [1, 2, 3, 4, 5]
        assert await read(after_seq=3, until_seq=6) == [4, 5, 6]
        assert await read(after_seq=3, limit=2) == [4, 5]
        assert await read(after_seq=3, until_seq=5, limit=10) == [4, 5]
        assert await read(until_seq=99) == list(range(1, 11))
        assert await read(after_seq=10) == []
        assert await read(after_seq=6, until_seq=6) == []
        assert await read(after_seq=6, until_seq=2) == []
        # limit=0 means no rows, not "no limit" (MongoDB's limit(0) is unlimited).
        assert await read(limit=0) == []
        assert [u.data for u in await store.read_updates("notes", after_seq=8)] == [
            b"notes:9",
            b"notes:10",
        ]

    # -- the feed ---------------------------------------------------------------------------

    async def test_the_feed_brings_every_instances_commits_in_commit_order(
        self, store: Store, second: Store
    ):
        await store.append(news("before", 2))  # not followed: before the position
        position = await store.feed_position()
        async with contextlib.aclosing(store.follow(position, poll_s=0.01)) as feed:
            mine = (await store.append([new("a", "1"), new("b", "1")])).records
            theirs = (await second.append([new("a", "2")])).records
            mine += (await store.append([new("a", "3")])).records

            _, records = await next_batches(feed, 4)

        assert records == mine[:2] + theirs + mine[2:]

    async def test_following_again_from_a_position_resumes_without_loss_or_repeat(
        self, store: Store, second: Store
    ):
        start = await second.feed_position()
        async with contextlib.aclosing(second.follow(start, poll_s=0.01)) as feed:
            await store.append(news("doc", 3))
            position, first = await next_batches(feed, 3)
        await store.append([new("doc", "later")])

        async with contextlib.aclosing(second.follow(position, poll_s=0.01)) as feed:
            _, rest = await next_batches(feed, 1)

        assert seqs(first + rest) == [1, 2, 3, 4]
        assert rest[0].data == b"later"

    async def test_the_feed_leaves_out_an_excluded_instances_records_and_moves_past_them(
        self, store: Store, second: Store
    ):
        position = await store.feed_position()
        async with contextlib.aclosing(
            store.follow(position, poll_s=0.01, exclude_instance="me")
        ) as feed:
            await store.append([NewUpdate("a", b"mine", 1.0, Author(instance="me"))])
            theirs = (
                await second.append([NewUpdate("a", b"theirs", 1.0, Author(instance="you"))])
            ).records

            _, records = await next_batches(feed, 1)

        assert records == theirs

    async def test_the_feed_of_some_documents_leaves_the_others_out(
        self, store: Store, second: Store
    ):
        held = frozenset({"a"})
        position = await store.feed_position()
        async with contextlib.aclosing(
            store.follow(position, poll_s=0.01, documents=lambda: held)
        ) as feed:
            await second.append([new("b", "1")])
            theirs = (await second.append([new("a", "1"), new("c", "1")])).records
            theirs += (await second.append([new("b", "2"), new("a", "2")])).records
            _, records = await next_batches(feed, 2)

        assert records == [theirs[0], theirs[3]]

    async def test_a_feed_of_no_documents_brings_nothing_and_opens_at_once(
        self, store: Store, second: Store
    ):
        position = await store.feed_position()
        async with contextlib.aclosing(
            store.follow(position, poll_s=0.01, documents=frozenset)
        ) as feed:
            async with asyncio.timeout(TIMEOUT_S):
                opened, records = await anext(feed)
            await second.append([new("a", "1")])
            # Nothing comes: a batch, if any, only moves the position on.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):  # a generous look, not a timing
                    while True:
                        _, batch = await anext(feed)
                        records += batch

        assert opened == position and records == []

    async def test_a_document_that_joins_the_followed_set_comes_from_then_on(
        self, store: Store, second: Store
    ):
        held: set[str] = set()
        named = asyncio.Event()  # the backend asked for the set, and "a" was in it

        def documents() -> frozenset[str]:
            if "a" in held:
                named.set()
            return frozenset(held)

        position = await store.feed_position()
        async with contextlib.aclosing(
            store.follow(position, poll_s=0.01, documents=documents)
        ) as feed:
            async with asyncio.timeout(TIMEOUT_S):
                await anext(feed)
            passed_over = (await second.append([new("a", "before")])).records
            held.add("a")
            records: list[UpdateRecord] = []

            async def read_until_after() -> None:
                while not any(r.data == b"after" for r in records):
                    records.extend((await anext(feed))[1])

            reading = asyncio.ensure_future(read_until_after())
            try:
                await second.append([new("b", "1")])  # some backends ask at their next batch
                async with asyncio.timeout(TIMEOUT_S):
                    await named.wait()
                written = (await second.append([new("a", "after")])).records
                async with asyncio.timeout(TIMEOUT_S):
                    await reading
            finally:
                reading.cancel()

        # What came before the backend asked may have been left out (the follower
        # reads it from the log); what came after it comes.
        assert records[-1:] == written
        assert records[:-1] in ([], passed_over)

    async def test_the_first_batch_comes_once_the_feed_is_open(self, store: Store):
        position = await store.feed_position()
        async with contextlib.aclosing(store.follow(position, poll_s=0.01)) as feed:
            async with asyncio.timeout(TIMEOUT_S):
                opened, records = await anext(feed)
            # Committed after the feed opened: it comes next, however soon.
            written = (await store.append([new("a", "1")])).records
            _, later = await next_batches(feed, 1)

        assert opened == position and records == []
        assert later == written

    async def test_each_instance_saves_its_own_feed_position(self, store: Store, second: Store):
        assert await store.saved_feed_position("one") is None
        await store.append([new("a", "1")])
        first = await store.feed_position()
        await store.save_feed_position("one", first)
        await store.append([new("a", "2")])
        await second.save_feed_position("two", await second.feed_position())

        assert await second.saved_feed_position("one") == first
        assert await store.saved_feed_position("two") != first

    async def test_a_saved_feed_position_is_followed_on_from_after_a_restart(
        self, store: Store, reopen: Reopen
    ):
        await store.append(news("before", 2))
        position = await store.feed_position()
        async with contextlib.aclosing(store.follow(position, poll_s=0.01)) as feed:
            await store.append([new("doc", "seen")])
            position, _ = await next_batches(feed, 1)
        await store.save_feed_position("me", position)
        await store.append([new("doc", "while away")])

        store = await reopen(store)

        saved = await store.saved_feed_position("me")
        async with contextlib.aclosing(store.follow(saved, poll_s=0.01)) as feed:
            _, missed = await next_batches(feed, 1)
            await store.append([new("doc", "after")])
            _, later = await next_batches(feed, 1)
        assert [r.data for r in missed + later] == [b"while away", b"after"]

    # -- deletions in the feed ----------------------------------------------------------------

    async def test_a_deletion_is_in_the_feed_after_its_updates_and_before_the_next_generation(
        self, store: Store, second: Store
    ):
        old = (await store.load("notes", create=True)).epoch
        position = await second.feed_position()
        async with contextlib.aclosing(
            second.follow(position, poll_s=0.01, deletions=True)
        ) as feed:
            before = (await store.append(news("notes", 2))).records
            await store.append([new("other", "1")])
            # Read before the deletion: a store may drop a deleted generation's
            # updates from its feed (SQLite's go with its rows), never the deletion.
            _, records = await next_batches(feed, 3)
            assert await store.delete_document("notes", by=Author("ann", None, "one")) is True
            after = (await store.append([new("notes", "again")])).records

            _, rest = await next_batches(feed, 2)
            records += rest

        assert [type(r).__name__ for r in records] == [
            "UpdateRecord",
            "UpdateRecord",
            "UpdateRecord",
            "DeletionRecord",
            "UpdateRecord",
        ]
        assert records[:2] == before and records[4] == after[0]
        deletion = records[3]
        assert isinstance(deletion, DeletionRecord)
        assert (deletion.doc, deletion.epoch, deletion.last_seq) == ("notes", old, 2)
        assert deletion.author == Author("ann", None, "one")
        assert deletion.time_s > 0
        assert (await store.get_document("notes")).epoch != old

    async def test_a_deletion_made_while_nobody_followed_is_read_from_a_saved_position(
        self, store: Store, second: Store
    ):
        await store.append(news("notes", 3))
        position = await store.feed_position()
        await second.delete_document("notes")
        assert await second.delete_document("notes") is False  # nothing more to record

        async with contextlib.aclosing(store.follow(position, poll_s=0.01, deletions=True)) as feed:
            _, records = await next_batches(feed, 1)
            await store.append([new("later", "1")])
            _, later = await next_batches(feed, 1)

        assert [(r.doc, r.last_seq) for r in records] == [("notes", 3)]
        assert seqs(later) == [1]

    async def test_a_document_deleted_without_updates_is_in_the_feed_with_last_seq_zero(
        self, store: Store
    ):
        position = await store.feed_position()
        await store.load("empty", create=True)
        await store.delete_document("empty")
        async with contextlib.aclosing(store.follow(position, poll_s=0.01, deletions=True)) as feed:
            _, records = await next_batches(feed, 1)
        assert [(r.doc, r.last_seq) for r in records] == [("empty", 0)]

    async def test_the_feed_without_deletions_moves_past_them_and_its_end_is_after_them(
        self, store: Store
    ):
        await store.append(news("notes", 2))
        position = await store.feed_position()
        async with contextlib.aclosing(store.follow(position, poll_s=0.01)) as feed:
            await store.delete_document("notes")
            written = (await store.append([new("notes", "again")])).records
            _, records = await next_batches(feed, 1)
        assert records == written

        await store.delete_document("notes")  # the last commit
        end = await store.feed_position()
        async with contextlib.aclosing(store.follow(end, poll_s=0.01, deletions=True)) as feed:
            written = (await store.append([new("other", "1")])).records
            _, records = await next_batches(feed, 1)
        assert records == written  # the deletion was before the end

    async def test_a_feed_of_some_documents_brings_only_their_deletions(self, store: Store):
        await store.append([new("held", "1"), new("other", "1")])
        held = frozenset({"held"})
        position = await store.feed_position()
        async with contextlib.aclosing(
            store.follow(position, poll_s=0.01, deletions=True, documents=lambda: held)
        ) as feed:
            await store.delete_document("other")
            await store.delete_document("held")
            _, records = await next_batches(feed, 1)
            written = (await store.append([new("held", "again")])).records
            _, later = await next_batches(feed, 1)
        assert [(type(r).__name__, r.doc) for r in records] == [("DeletionRecord", "held")]
        assert later == written

    async def test_a_deletion_is_followed_on_from_after_a_reopen(
        self, store: Store, reopen: Reopen
    ):
        await store.append(news("notes", 2))
        position = await store.feed_position()
        await store.delete_document("notes")

        store = await reopen(store)

        async with contextlib.aclosing(store.follow(position, poll_s=0.01, deletions=True)) as feed:
            _, records = await next_batches(feed, 1)
        assert [(type(r).__name__, r.doc, r.last_seq) for r in records] == [
            ("DeletionRecord", "notes", 2)
        ]

    # -- snapshots --------------------------------------------------------------------------

    async def test_latest_snapshot_is_the_newest_at_or_before_a_seq(self, store: Store):
        await store.append(news("notes", 9))
        for seq in (3, 6):
            await store.save_snapshot(SnapshotRecord("notes", seq, f"s{seq}".encode(), seq))

        async def latest(at: int | None = None) -> int | None:
            snapshot = await store.latest_snapshot("notes", at_or_before_seq=at)
            return snapshot.seq if snapshot else None

        assert await latest() == 6
        assert await latest(9) == 6
        assert await latest(6) == 6
        assert await latest(5) == 3
        assert await latest(3) == 3
        assert await latest(2) is None
        assert await store.latest_snapshot("notes", at_or_before_seq=4) == SnapshotRecord(
            "notes", 3, b"s3", 3
        )
        assert await store.latest_snapshot("other") is None

    async def test_saving_a_snapshot_that_exists_is_a_no_op(self, store: Store):
        await store.append(news("notes", 4))
        await store.save_snapshot(SnapshotRecord("notes", 4, b"first", 1.0))
        written = store.stats.snapshots_written

        await store.save_snapshot(SnapshotRecord("notes", 4, b"second", 2.0))

        assert await store.latest_snapshot("notes") == SnapshotRecord("notes", 4, b"first", 1.0)
        assert store.stats.snapshots_written == written

    async def test_load_reads_the_latest_snapshot_and_only_the_updates_after_it(self, store: Store):
        await store.load("notes", create=True)
        written = (await store.append(news("notes", 10))).records
        await store.save_snapshot(SnapshotRecord("notes", 4, b"old", 1.0))
        await store.save_snapshot(SnapshotRecord("notes", 7, b"new", 2.0))
        rows_before = store.stats.log_rows_read

        loaded = await store.load("notes")

        assert loaded.snapshot == SnapshotRecord("notes", 7, b"new", 2.0)
        assert loaded.updates == tuple(written[7:])
        assert loaded.head_seq == 10
        assert store.stats.log_rows_read - rows_before == 3

    async def test_a_snapshot_at_the_head_leaves_no_updates_to_load(self, store: Store):
        await store.append(news("notes", 5))
        await store.save_snapshot(SnapshotRecord("notes", 5, b"all", 1.0))
        rows_before = store.stats.log_rows_read

        loaded = await store.load("notes")

        assert loaded.updates == ()
        assert loaded.head_seq == 5
        assert store.stats.log_rows_read == rows_before

    async def test_snapshots_never_drop_updates_from_the_log(self, store: Store):
        written = (await store.append(news("notes", 6))).records
        await store.save_snapshot(SnapshotRecord("notes", 6, b"all", 1.0))

        assert await store.read_updates("notes") == written

    async def test_a_snapshot_keeps_its_authors_index_and_one_without_has_none(self, store: Store):
        await store.append(news("notes", 4))
        await store.save_snapshot(SnapshotRecord("notes", 2, b"two", 1.0))
        await store.save_snapshot(SnapshotRecord("notes", 4, b"four", 1.0, authors=b"index"))

        assert (await store.latest_snapshot("notes")).authors == b"index"
        assert (await store.latest_snapshot("notes", at_or_before_seq=3)).authors is None

    async def test_one_instance_at_a_time_holds_a_documents_snapshot_lease(
        self, store: Store, second: Store
    ):
        await store.append(news("notes", 3))

        assert await store.lease_snapshot("notes", "i-1", 60.0)
        assert await store.lease_snapshot("notes", "i-1", 60.0)  # renewed by its holder
        assert not await second.lease_snapshot("notes", "i-2", 60.0)
        await store.save_snapshot(SnapshotRecord("notes", 3, b"s", 1.0))  # releases it
        assert await second.lease_snapshot("notes", "i-2", 60.0)

    async def test_an_expired_snapshot_lease_can_be_taken(self, store: Store, second: Store):
        await store.append(news("notes", 1))
        assert await store.lease_snapshot("notes", "i-1", 0.05)

        await asyncio.sleep(0.1)

        assert await second.lease_snapshot("notes", "i-2", 60.0)

    async def test_stats_count_appended_rows_and_batches(self, store: Store):
        rows, batches = store.stats.log_rows_written, store.stats.append_batches

        await store.append(news("a", 3) + news("b", 2))
        await store.append(news("a", 1))

        assert store.stats.log_rows_written - rows == 6
        assert store.stats.append_batches - batches == 2

    # -- presence ---------------------------------------------------------------------------

    async def test_published_awareness_reaches_the_others_and_expires(
        self, store: Store, second: Store
    ):
        now = time.time()
        position = await second.awareness_position()
        latest: dict[tuple[str, int], bytes] = {}
        async with contextlib.aclosing(second.follow_awareness(position, poll_s=0.01)) as feed:
            await store.publish_awareness(
                [
                    AwarenessChange("doc", 7, "i-1", b"seven", now + 60),
                    AwarenessChange("doc", 8, "i-1", b"eight", now + 0.05),
                    AwarenessChange("other", 7, "i-1", b"elsewhere", now + 60),
                ]
            )
            await store.publish_awareness([AwarenessChange("doc", 7, "i-1", b"seven!", now + 60)])
            # A follower may skip a state replaced before it looked: it gets the latest.
            async with asyncio.timeout(TIMEOUT_S):
                while latest.get(("doc", 7)) != b"seven!" or len(latest) < 3:
                    _, changes = await anext(feed)
                    latest.update({(c.doc, c.client_id): c.update for c in changes})

        assert latest == {("doc", 7): b"seven!", ("doc", 8): b"eight", ("other", 7): b"elsewhere"}
        await asyncio.sleep(0.1)
        current = await second.awareness_of("doc")
        assert [(c.client_id, c.instance, c.update) for c in current] == [(7, "i-1", b"seven!")]

    # -- repairs ----------------------------------------------------------------------------

    async def test_snapshot_seqs_lists_a_documents_snapshots_oldest_first(self, store: Store):
        await store.append(news("notes", 9))
        for seq in (6, 3, 9):
            await store.save_snapshot(SnapshotRecord("notes", seq, b"s", 1.0))

        assert await store.snapshot_seqs("notes") == [3, 6, 9]
        assert await store.snapshot_seqs("other") == []

    async def test_a_deleted_document_is_gone_and_its_name_starts_afresh(self, store: Store):
        old = (await store.load("notes", create=True)).epoch
        await store.append(news("notes", 4))
        await store.save_snapshot(SnapshotRecord("notes", 2, b"s", 1.0))

        await store.repair("notes", {2: Repair(b"\x00\x00", "test")}, {})
        assert await store.quarantined("notes") != []

        assert await store.delete_document("notes") is True
        assert await store.delete_document("notes") is False
        assert await store.quarantined("notes") == []

        assert await store.get_document("notes") is None
        assert await store.read_updates("notes") == []
        assert await store.snapshot_seqs("notes") == []
        again = await store.load("notes")
        assert again.epoch != old and again.updates == () and again.snapshot is None
        appended = await store.append([new("notes", b"fresh")])
        assert seqs(appended.records) == [1]

    async def test_updates_made_for_a_deleted_generation_are_refused(self, store: Store):
        old = (await store.load("notes", create=True)).epoch
        await store.append([dataclasses.replace(new("notes", b"one"), epoch=old)])
        await store.delete_document("notes")

        with pytest.raises(DocumentChanged) as refused:
            await store.append([dataclasses.replace(new("notes", b"stale"), epoch=old)])
        assert refused.value.stale == {"notes": old}
        assert await store.get_document("notes") is None  # not created again by it
        current = (await store.load("notes", create=True)).epoch
        with pytest.raises(DocumentChanged):
            await store.append([dataclasses.replace(new("notes", b"stale"), epoch=old)])
        assert await store.read_updates("notes") == []
        stored = await store.append([dataclasses.replace(new("notes", b"now"), epoch=current)])
        assert seqs(stored.records) == [1]

    async def test_a_batch_of_many_documents_refuses_the_deleted_ones_then_stores_the_rest_once(
        self, store: Store
    ):
        # Many documents in one batch, two of them deleted since their updates were made.
        docs = [f"doc{i}" for i in range(40)]
        epochs = {doc: (await store.load(doc, create=True)).epoch for doc in docs}
        await store.append(
            [dataclasses.replace(new(doc, f"{doc}:1"), epoch=epochs[doc]) for doc in docs]
        )
        gone = {"doc7", "doc31"}
        for doc in gone:
            await store.delete_document(doc)
        batch = [dataclasses.replace(new(doc, f"{doc}:2"), epoch=epochs[doc]) for doc in docs]

        with pytest.raises(DocumentChanged) as refused:
            await store.append(batch)
        assert refused.value.stale == {doc: epochs[doc] for doc in gone}
        # Tried again without them, as the writer does: what the refused try may
        # have stored of the others is found, not stored twice.
        again = await store.append([u for u in batch if u.doc not in gone])

        assert seqs(again.records) == [2] * 38
        for doc in docs:
            stored = [r.data for r in await store.read_updates(doc)]
            assert stored == ([] if doc in gone else [f"{doc}:1".encode(), f"{doc}:2".encode()])

    async def test_pruned_history_starts_at_a_kept_snapshot_and_the_log_goes_on(self, store: Store):
        for _ in range(6):  # six appends: entries are per batch in some stores
            await store.append(news("notes", 2))
        for seq in (4, 8):
            await store.save_snapshot(SnapshotRecord("notes", seq, f"s{seq}".encode(), 1.0))
        with pytest.raises(StoreError):
            await store.prune_history("notes", 6)  # no snapshot there

        await store.prune_history("notes", 8)

        assert await store.snapshot_seqs("notes") == [8]
        assert await store.latest_snapshot("notes", at_or_before_seq=7) is None
        kept = seqs(await store.read_updates("notes"))
        assert kept[-4:] == [9, 10, 11, 12] and kept[0] > 4
        loaded = await store.load("notes")
        assert loaded.snapshot is not None and loaded.snapshot.seq == 8
        assert seqs(loaded.updates) == [9, 10, 11, 12]
        assert seqs((await store.append(news("notes", 1))).records) == [13]
        await store.save_snapshot(SnapshotRecord("notes", 13, b"s13", 1.0))
        await store.prune_history("notes", 13)  # everything, up to the head
        assert seqs((await store.append(news("notes", 1))).records) == [14]
        assert (await store.get_document("notes")).head_seq == 14

    async def test_checkpoints_are_kept_once_and_read_by_range(self, store: Store):
        await store.append(news("notes", 9))
        for seq, base in ((3, 0), (6, 3), (9, 6)):
            await store.save_checkpoint(
                Checkpoint("notes", seq, base, f"d{seq}".encode(), b"", f"sv{seq}".encode())
            )
        await store.save_checkpoint(Checkpoint("notes", 6, 0, b"other", b"w", b"x"))  # kept

        assert [c.seq for c in await store.checkpoints("notes")] == [3, 6, 9]
        middle = await store.checkpoints("notes", after_seq=3, until_seq=8)
        assert middle == [Checkpoint("notes", 6, 3, b"d6", b"", b"sv6")]
        await store.save_snapshot(SnapshotRecord("notes", 6, b"s6", 1.0))
        await store.prune_history("notes", 6)
        assert [c.seq for c in await store.checkpoints("notes")] == [6, 9]
        await store.delete_document("notes")
        assert await store.checkpoints("notes") == []

    async def test_deleted_snapshots_are_gone_and_the_others_and_the_log_stay(self, store: Store):
        await store.append(news("notes", 9))
        for seq in (3, 6, 9):
            await store.save_snapshot(SnapshotRecord("notes", seq, f"s{seq}".encode(), 1.0))

        await store.delete_snapshots("notes", [3, 6, 42])
        await store.delete_snapshots("other", [1])

        assert await store.snapshot_seqs("notes") == [9]
        assert await store.latest_snapshot("notes", at_or_before_seq=8) is None
        assert seqs(await store.read_updates("notes")) == list(range(1, 10))

    async def test_a_repair_replaces_entries_in_place_and_quarantines_the_originals(
        self, store: Store
    ):
        epoch = (await store.load("notes", create=True)).epoch
        await store.append(news("notes", 5))
        for seq in (2, 4):
            await store.save_snapshot(SnapshotRecord("notes", seq, f"s{seq}".encode(), 1.0))

        new_epoch = await store.repair(
            "notes",
            {3: Repair(b"kept", "stray bytes"), 5: Repair(b"\x00\x00", "too deep")},
            {4: "built over update 3"},
        )

        assert new_epoch != epoch
        assert (await store.get_document("notes")).epoch == new_epoch
        assert (await store.load("notes")).epoch == new_epoch
        log = await store.read_updates("notes")
        assert seqs(log) == [1, 2, 3, 4, 5]
        assert [u.data for u in log] == [b"notes:1", b"notes:2", b"kept", b"notes:4", b"\x00\x00"]
        assert await store.snapshot_seqs("notes") == [2]
        quarantined = await store.quarantined("notes")
        assert [(q.kind, q.seq, q.data, q.reason) for q in quarantined] == [
            ("update", 3, b"notes:3", "stray bytes"),
            ("update", 5, b"notes:5", "too deep"),
            ("snapshot", 4, b"s4", "built over update 3"),
        ]
        assert await store.quarantined("other") == []
        head = (await store.append([new("notes", "6")])).heads["notes"]
        assert head.snapshot_seq == 2

    # -- bytes ------------------------------------------------------------------------------

    async def test_update_and_snapshot_bytes_round_trip_exactly(self, store: Store):
        blobs = [
            b"\x00",
            b"\x00\x00",
            b"\x00\x00\x00\xff",
            bytes(range(256)),
            "é😀".encode() + b"\x80\xfe",  # not valid UTF-8 as a whole
            random.Random(7).randbytes(1024 * 1024),
        ]
        await store.append([new("notes", blob) for blob in blobs])
        for i, blob in enumerate(blobs):
            await store.save_snapshot(SnapshotRecord("notes", i + 1, blob, 1.0))

        stored = await store.read_updates("notes")
        assert [u.data for u in stored] == blobs
        assert all(type(u.data) is bytes for u in stored)
        for i, blob in enumerate(blobs):
            snapshot = await store.latest_snapshot("notes", at_or_before_seq=i + 1)
            assert type(snapshot.data) is bytes
            assert snapshot.data == blob

    # -- lifecycle --------------------------------------------------------------------------

    async def test_version_names_are_one_per_seq_listed_by_seq_and_gone_with_the_document(
        self, store: Store, second: Store
    ):
        await store.append(news("named", 5))
        await store.name_version(VersionName("named", 4, "Sent to legal", "ann", 10.5))
        await store.name_version(VersionName("named", 2, "Draft", None, 9.0))
        await store.name_version(VersionName("other", 1, "Elsewhere", None, 9.0))
        assert await second.version_names("named") == [
            VersionName("named", 2, "Draft", None, 9.0),
            VersionName("named", 4, "Sent to legal", "ann", 10.5),
        ]
        # A new name replaces the old one; a name goes away alone.
        await store.name_version(VersionName("named", 4, "Signed", "bob", 11.0))
        assert [(n.seq, n.name, n.user) for n in await store.version_names("named")] == [
            (2, "Draft", None),
            (4, "Signed", "bob"),
        ]
        assert await store.unname_version("named", 2) is True
        assert await store.unname_version("named", 2) is False
        assert [n.name for n in await store.version_names("named")] == ["Signed"]
        assert await store.version_names("unknown") == []
        await store.delete_document("named")
        assert await store.version_names("named") == []
        assert [n.name for n in await store.version_names("other")] == ["Elsewhere"]

    async def test_close_can_be_called_twice(self, store: Store):
        await store.load("notes", create=True)

        await store.close()
        await store.close()

    # -- webhooks ---------------------------------------------------------------------------

    async def test_a_webhook_lease_is_held_by_one_instance_until_it_expires(
        self, store: Store, second: Store
    ):
        first = await store.lease_webhook("https://a.example/hook", "one", 30.0)

        assert first is not None and first.position is None
        assert (first.lease_instance, first.delivered) == ("one", 0)
        assert await second.lease_webhook("https://a.example/hook", "two", 30.0) is None
        renewed = await store.lease_webhook("https://a.example/hook", "one", 30.0)
        assert renewed is not None and renewed.lease_until_s >= first.lease_until_s
        # An expired lease is taken over.
        await store.lease_webhook("https://a.example/hook", "one", 0.001)
        await asyncio.sleep(0.01)
        taken = await second.lease_webhook("https://a.example/hook", "two", 30.0)
        assert taken is not None and taken.lease_instance == "two"

    async def test_a_webhook_position_is_saved_only_by_the_lease_holder(
        self, store: Store, second: Store
    ):
        position = await store.feed_position()
        state = await store.lease_webhook("hook", "one", 30.0)
        assert state is not None
        saved = dataclasses.replace(
            state, position=position, delivered=3, failures=1, last_error="HTTP 500"
        )

        assert await store.save_webhook(saved, "one")
        assert not await second.save_webhook(dataclasses.replace(saved, delivered=9), "two")

        (found,) = await second.webhook_states()
        assert (found.name, found.position, found.delivered) == ("hook", position, 3)
        assert (found.failures, found.last_error, found.lease_instance) == (1, "HTTP 500", "one")
        await store.release_webhook("hook", "one")
        taken = await second.lease_webhook("hook", "two", 30.0)
        assert taken is not None and taken.position == position and taken.delivered == 3
        assert not await store.save_webhook(saved, "one")

    async def test_a_webhook_position_follows_the_feed_after_a_reopen(
        self, store: Store, reopen: Reopen
    ):
        await store.append(news("a", 2))
        position = await store.feed_position()
        state = await store.lease_webhook("hook", "one", 30.0)
        assert state is not None
        await store.save_webhook(dataclasses.replace(state, position=position), "one")
        await store.append(news("b", 1))

        store = await reopen(store)
        (found,) = await store.webhook_states()
        async with contextlib.aclosing(store.follow(found.position, poll_s=0.01)) as feed:
            _, records = await next_batches(feed, 1)
        assert [(r.doc, r.seq) for r in records] == [("b", 1)]
