"""The MongoDB store keeps the store contract on a replica set (SecantusDB here, or
COLLAB_TEST_MONGODB_URL), and its feed survives what change streams meet: a
restart, a resume token the oplog no longer reaches, a server that goes away."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import DuplicateKeyError
from tornado.ioloop import IOLoop

from collab.errors import FeedLost, StoreError
from collab.store import NewUpdate, SnapshotRecord, Store, create_store
from collab.store.mongodb import MongoStore, database_from_url
from collab.store.mongodb import feed as mongodb_feed
from collab.store.mongodb import log as mongodb_log
from collab.store.mongodb import snapshots as mongodb_snapshots
from tests.mongodb import MongoServer, collect_cancelled_connects, start_secantus
from tests.proxy import Proxy
from tests.store_contract import TIMEOUT_S, Reopen, StoreContract, new, news, next_batches, seqs


class TestMongoStore(StoreContract):
    @pytest.fixture
    def store(self, io_loop: IOLoop, mongodb_url: str) -> Iterator[MongoStore]:
        store = MongoStore(mongodb_url)
        io_loop.run_sync(store.open)
        yield store
        io_loop.run_sync(store.close)

    @pytest.fixture
    def second(self, io_loop: IOLoop, mongodb_url: str) -> Iterator[MongoStore]:
        """Another instance: its own client on the same database."""
        other = MongoStore(mongodb_url)
        io_loop.run_sync(other.open)
        yield other
        io_loop.run_sync(other.close)

    @pytest.fixture
    def reopen(self, io_loop: IOLoop, mongodb_url: str) -> Iterator[Reopen]:
        opened: list[Store] = []

        async def reopen(store: Store) -> Store:
            await store.close()
            again = MongoStore(mongodb_url)
            await again.open()
            opened.append(again)
            return again

        yield reopen
        for store in opened:
            io_loop.run_sync(store.close)


@pytest.fixture
def store(io_loop: IOLoop, mongodb_url: str) -> Iterator[MongoStore]:
    store = MongoStore(mongodb_url)
    io_loop.run_sync(store.open)
    yield store
    io_loop.run_sync(store.close)


def test_the_database_is_the_urls_path() -> None:
    assert database_from_url("mongodb://h:1,h:2/notes?replicaSet=rs0") == "notes"
    assert isinstance(create_store("mongodb://localhost/notes"), MongoStore)
    assert isinstance(create_store("mongodb+srv://cluster.example.com/notes"), MongoStore)


@pytest.mark.parametrize("url", ["mongodb://localhost", "mongodb://localhost/?w=1"])
def test_a_url_without_a_database_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="names no database"):
        create_store(url)


async def test_an_append_tried_again_after_an_unknown_outcome_stores_nothing_twice(
    store: MongoStore,
):
    # The writer sends the same batch again when it could not learn whether the
    # first try committed; the batch may have grown meanwhile.
    batch = [NewUpdate("doc", b"one", 1.0), NewUpdate("doc", b"two", 2.0)]
    first = await store.append(batch)
    third = NewUpdate("doc", b"three", 3.0)

    again = await store.append([*batch, third])

    assert again.records[:2] == first.records
    assert seqs(again.records) == [1, 2, 3]
    assert [r.data for r in await store.read_updates("doc")] == [b"one", b"two", b"three"]
    assert again.heads["doc"].head_seq == 3


@pytest.mark.slow  # waits for PyMongo's monitor to give up on the member (about 7 s)
async def test_a_stalled_connection_fails_the_append_and_the_feed_and_nothing_is_lost(
    mongo_server: MongoServer,
):
    # The network holds every byte and the connections stay open (a member gone without
    # a word). The append and the change stream waiting on it fail once PyMongo's
    # monitor finds the member unreachable (its check times out, and it interrupts the
    # connections in use: about 35 s at PyMongo's defaults, a few seconds at this URL's),
    # instead of holding the writer and the feed until the sockets die. The insert the
    # append sent arrives after the resume, beside the writer's retry of the same
    # batch: stored once; the feed follows on from its position.
    if mongo_server.external:
        pytest.skip("the proxy stands in front of the SecantusDB the tests start")
    proxy = await Proxy(mongo_server.port).start()
    database = mongo_server.new_database()
    stalling = MongoStore(
        f"mongodb://127.0.0.1:{proxy.port}/{database}"
        "?directConnection=true&heartbeatFrequencyMS=500&connectTimeoutMS=1000"
    )
    direct = MongoStore(mongo_server.url(database))
    await stalling.open()
    await direct.open()
    try:
        position = await stalling.feed_position()
        async with contextlib.aclosing(stalling.follow(position, poll_s=0.01)) as feed:
            before = (await direct.append(news("doc", 1))).records
            position, seen = await next_batches(feed, 1)
            proxy.stall()
            during = (await direct.append([new("doc", "beside the stall")])).records
            stalled = [new("doc", "sent into the stall")]

            async def follow_on() -> None:
                while True:
                    await anext(feed)

            async with asyncio.timeout(TIMEOUT_S * 2):
                appending, following = await asyncio.gather(
                    stalling.append(stalled), follow_on(), return_exceptions=True
                )
        assert isinstance(appending, StoreError), appending
        assert isinstance(following, StoreError), following
        proxy.resume()
        again = await stalling.append(stalled)
        async with contextlib.aclosing(stalling.follow(position, poll_s=0.01)) as feed:
            _, rest = await next_batches(feed, 1)
        stored = await direct.read_updates("doc")
    finally:
        proxy.resume()
        await stalling.close()
        await direct.close()
        await proxy.close()
    assert seen == before
    assert rest == during
    assert seqs(again.records) == [3]
    assert [r.data for r in stored] == [b"doc:1", b"beside the stall", b"sent into the stall"]


async def test_equal_bytes_from_two_submissions_are_two_updates(store: MongoStore):
    # The same bytes, accepted twice (two clients), are two entries: only the very
    # same submission is recognised as a retry.
    await store.append([NewUpdate("doc", b"same", 1.0)])
    await store.append([NewUpdate("doc", b"same", 2.0)])

    assert seqs(await store.read_updates("doc")) == [1, 2]


async def test_a_snapshot_larger_than_a_mongodb_document_is_stored_in_parts(
    store: MongoStore, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(mongodb_snapshots, "SNAPSHOT_PART_BYTES", 1000)
    await store.append(news("doc", 2))
    state = bytes(range(256)) * 20  # 5,120 bytes: six parts
    await store.save_snapshot(SnapshotRecord("doc", 2, state, 1.0, b"waits"))

    loaded = await store.load("doc")

    assert loaded.snapshot == SnapshotRecord("doc", 2, state, 1.0, b"waits")
    assert await store.snapshot_seqs("doc") == [2]


async def test_parts_of_two_encodings_of_one_version_are_never_joined(
    store: MongoStore, monkeypatch: pytest.MonkeyPatch
):
    # Two instances snapshot seq 2 in different bytes; the first died after its first
    # part. Its part must not be joined with the second's.
    monkeypatch.setattr(mongodb_snapshots, "SNAPSHOT_PART_BYTES", 1000)
    await store.append(news("doc", 2))
    first, second = b"a" * 2500, b"b" * 2500
    await store.save_snapshot(SnapshotRecord("doc", 2, first, 1.0))
    await store._snapshots.delete_many({"doc": "doc", "data": b"a" * 500})  # its last part

    assert await store.latest_snapshot("doc") is None  # incomplete: it does not count
    await store.save_snapshot(SnapshotRecord("doc", 2, second, 2.0))

    assert (await store.load("doc")).snapshot == SnapshotRecord("doc", 2, second, 2.0)
    assert await store.snapshot_seqs("doc") == [2]


@pytest.mark.parametrize(
    ("details", "index"),
    [
        ({"code": 11000, "keyPattern": {"_id": 1}, "errmsg": "dup"}, "_id"),
        ({"code": 11000, "keyPattern": {"doc": 1, "seq": 1}, "errmsg": "dup"}, "doc_seq"),
        # Without a key pattern, the index the message names; a document name that
        # looks like an index name does not mislead it.
        (
            {"code": 11000, "errmsg": 'index: doc_seq dup key: { doc: "index: _id_ ", seq: 1 }'},
            "doc_seq",
        ),
        ({"code": 11000, "errmsg": "index: _id_ dup key: { _id: BinData(0, 01) }"}, "_id"),
    ],
)
def test_a_duplicate_key_is_told_by_its_index(details: dict[str, Any], index: str) -> None:
    error = DuplicateKeyError(details["errmsg"], 11000, details)
    other = "_id" if index == "doc_seq" else "doc_seq"
    assert mongodb_log._is_duplicate(error, index)
    assert not mongodb_log._is_duplicate(error, other)


async def test_two_instances_racing_on_a_document_named_like_an_index_both_store(
    store: MongoStore, mongodb_url: str
):
    other = MongoStore(mongodb_url)
    await other.open()
    try:
        doc = 'index: _id_ dup key: { _id: "x" }'
        results = await asyncio.gather(
            *(s.append([new(doc, f"{s is store}-{i}")]) for i in range(10) for s in (store, other))
        )
    finally:
        await other.close()
    assert sorted(r.records[0].seq for r in results) == list(range(1, 21))
    assert seqs(await store.read_updates(doc)) == list(range(1, 21))


async def test_a_dropped_log_ends_the_feed_with_feed_lost(store: MongoStore):
    await store.append([new("doc", "one")])
    async with contextlib.aclosing(store.follow(await store.feed_position(), poll_s=0.01)) as feed:
        await anext(feed)  # open
        await store._log.drop()
        with pytest.raises(FeedLost):
            async with asyncio.timeout(TIMEOUT_S):
                while True:
                    await anext(feed)


async def test_a_position_saved_long_ago_is_not_followed_from(
    store: MongoStore, monkeypatch: pytest.MonkeyPatch
):
    await store.save_feed_position("instance-1", await store.feed_position())
    assert await store.saved_feed_position("instance-1") is not None

    monkeypatch.setattr(mongodb_feed, "FEED_POSITION_KEPT_S", -1.0)  # saved "long ago"
    assert await store.saved_feed_position("instance-1") is None


async def test_an_update_too_large_for_one_mongodb_document_is_a_store_error(
    store: MongoStore, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(mongodb_log, "MAX_UPDATE_BYTES", 100)

    with pytest.raises(StoreError, match="exceeds what one MongoDB document holds"):
        await store.append([new("doc", b"x" * 101)])
    assert await store.get_document("doc") is None


@pytest.mark.slow  # a SecantusDB of its own, started (and killed) for it
async def test_a_standalone_server_is_refused_with_what_to_do(tmp_path: Path):
    server = start_secantus("--standalone", storage=tmp_path / "standalone")
    try:
        store = MongoStore(server.url("notes"))
        with pytest.raises(StoreError, match="replica set"):
            await store.open()
        await store.close()
    finally:
        server.stop()


async def test_an_unreachable_server_is_a_store_error_within_the_timeout():
    store = MongoStore("mongodb://127.0.0.1:9/notes?serverSelectionTimeoutMS=300")
    with pytest.raises(StoreError, match="connecting"):
        await store.open()
    await store.close()
    collect_cancelled_connects()


# -- the feed across failures -------------------------------------------------------------------


@contextlib.asynccontextmanager
async def own_server(tmp_path: Path, *extra: str) -> Any:
    """A SecantusDB of this test's own (the test kills or starves it)."""
    server = start_secantus(*extra, storage=tmp_path / "mongo")
    try:
        yield server
    finally:
        server.stop()


async def opened(server: MongoServer, *options: str) -> MongoStore:
    """A store on ``server``; ``options``: more of the URL's query (``key=value``)."""
    store = MongoStore("&".join([server.url("collab"), *options]))
    await store.open()
    return store


@pytest.mark.slow  # a SecantusDB of its own, started (and killed) for it
async def test_a_position_the_oplog_no_longer_reaches_raises_feed_lost(tmp_path: Path):
    # An oplog of 50 entries (pruned after every 1,000 writes): mongod prunes by size.
    async with own_server(tmp_path, "--oplog-max-entries", "50") as server:
        store = await opened(server)
        try:
            old = await store.feed_position()
            for start in range(0, 1200, 100):
                await store.append([new("doc", f"{i}") for i in range(start, start + 100)])
            client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(server.base_url)
            try:
                # Enough writes for the server to prune its oplog (one command: an
                # oplog entry per document all the same).
                await client.scratch.filler.insert_many([{"i": i} for i in range(1100)])
            finally:
                await client.close()

            with pytest.raises(FeedLost):
                async with contextlib.aclosing(store.follow(old, poll_s=0.01)) as feed:
                    async with asyncio.timeout(TIMEOUT_S):
                        await anext(feed)
            # From the end it follows again.
            async with contextlib.aclosing(
                store.follow(await store.feed_position(), poll_s=0.01)
            ) as feed:
                written = (await store.append([new("doc", "next")])).records
                _, records = await next_batches(feed, 1)
            assert records == written
        finally:
            await store.close()


@pytest.mark.slow  # a SecantusDB of its own, started (and killed) for it
async def test_the_feed_fails_with_its_server_and_resumes_after_it_without_loss(tmp_path: Path):
    # --sync-on-commit: SecantusDB honours j:true only so (docs/MONGODB.md), and this
    # test kills it.
    async with own_server(tmp_path, "--sync-on-commit") as server:
        # Found gone within 2 s, not the default 5: the feed fails sooner.
        store = await opened(server, "serverSelectionTimeoutMS=2000")
        try:
            position = await store.feed_position()
            async with contextlib.aclosing(store.follow(position, poll_s=0.01)) as feed:
                before = (await store.append(news("doc", 2))).records
                position, seen = await next_batches(feed, 2)
                server.kill()
                with pytest.raises(StoreError):
                    async with asyncio.timeout(TIMEOUT_S):
                        while True:
                            await anext(feed)
            restarted = start_secantus(
                "--sync-on-commit", storage=server.storage_path, port=server.port
            )
            try:
                after = (await store.append([new("doc", "after the restart")])).records
                async with contextlib.aclosing(store.follow(position, poll_s=0.01)) as feed:
                    _, rest = await next_batches(feed, 1)
            finally:
                await store.close()
                restarted.stop()
        finally:
            await store.close()
            collect_cancelled_connects()
    assert seen == before
    assert rest == after
    assert seqs(rest) == [3]


async def test_opening_without_create_refuses_a_database_with_no_store_and_makes_none(
    mongodb_url: str,
) -> None:
    reader = MongoStore(mongodb_url, create=False)
    with pytest.raises(StoreError, match="no store in MongoDB database"):
        await reader.open()
    made = MongoStore(mongodb_url)
    await made.open()
    try:
        assert await made.list_documents() == []  # nothing was created by the refused open
    finally:
        await made.close()
    reader = MongoStore(mongodb_url, create=False)
    await reader.open()  # now there is a store to read
    await reader.close()
