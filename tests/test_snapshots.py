"""Snapshots: loading reads the latest snapshot and a short tail, never loses an
update Yrs holds as pending, and history at any seq equals replaying the log."""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pycrdt
import pytest
from tornado.ioloop import IOLoop

from collab.app import CollabServer
from collab.client import CollabClient
from collab.config import Settings
from collab.core.history import apply_stored, rebuild, state_at
from collab.core.room import build_replica
from collab.core.snapshots import Snapshotter
from collab.store import NewUpdate, SnapshotRecord, Store, UpdateRecord
from collab.store.memory import MemoryStore
from collab.store.sqlite import SQLiteStore
from collab.wire.replica import Replica
from collab.wire.yformat import decode_state_vector
from tests.helpers import TIMEOUT_S, RawPeer, text_of, typed_text, typing_updates

SNAPSHOT_EVERY = 500
EDITS = 10_000


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.replace(snapshot_every_updates=SNAPSHOT_EVERY)


@pytest.fixture
def store(io_loop: IOLoop, tmp_path: Path) -> Iterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "history.db")
    io_loop.run_sync(store.open)
    yield store
    io_loop.run_sync(store.close)


def log(*updates: bytes, doc: str = "notes") -> list[NewUpdate]:
    return [NewUpdate(doc, data, time.time()) for data in updates]


def snapshots_of(store: Store, settings: Settings) -> Snapshotter:
    return Snapshotter(store, settings)


# -- loading a long document ---------------------------------------------------------------


@pytest.mark.slow
async def test_a_restarted_server_loads_ten_thousand_updates_from_a_snapshot(
    server: CollabServer,
    settings: Settings,
    start_server: Callable[..., Awaitable[CollabServer]],
    connect: Callable[..., Awaitable[CollabClient]],
    raw: Callable[..., Awaitable[RawPeer]],
    monkeypatch: pytest.MonkeyPatch,
):
    # Stopping the server cancels a snapshot still in progress; wait for the last
    # one due (within SNAPSHOT_EVERY of the head: where batches end decides where)
    # so that the load below is deterministic.
    head_snapshot = asyncio.Event()
    save_snapshot = server.store.save_snapshot

    async def watched_save_snapshot(snapshot: SnapshotRecord) -> None:
        await save_snapshot(snapshot)
        if snapshot.seq > EDITS - SNAPSHOT_EVERY:
            head_snapshot.set()

    monkeypatch.setattr(server.store, "save_snapshot", watched_save_snapshot)
    # A character an update, as a client typing sends them (made directly: a
    # client's pycrdt typing them cost this test a second of CPU), 250 at a time.
    writer = await raw()
    await writer.hello()
    await writer.subscribe("long")
    typed = typing_updates(EDITS, name="body")
    for start in range(0, EDITS, 250):
        refs = range(start, min(start + 250, EDITS))
        for ref in refs:
            writer.send({"type": "update", "doc": "long", "ref": ref, "update": typed[ref]})
        acks = [(await writer.recv_type("ack")) for _ in refs]
        assert [ack["ref"] for ack in acks] == list(refs)
    assert acks[-1]["seq"] == EDITS
    await asyncio.wait_for(head_snapshot.wait(), TIMEOUT_S)
    await server.rooms.writer.wait_idle(TIMEOUT_S)
    assert server.store.stats.snapshots_written >= 2
    await server.stop()

    restarted = await start_server(settings)
    reader = await connect(restarted)
    loaded = await reader.subscribe("long")

    assert str(loaded.doc.get("body", type=pycrdt.Text)) == typed_text(EDITS)
    assert loaded.seq == EDITS
    assert restarted.store.stats.log_rows_read <= SNAPSHOT_EVERY
    assert len(await restarted.store.read_updates("long")) == EDITS  # history kept whole
    snapshot = await restarted.store.latest_snapshot("long")
    assert snapshot is not None and snapshot.seq > EDITS - SNAPSHOT_EVERY
    earlier = await restarted.store.latest_snapshot("long", at_or_before_seq=snapshot.seq - 1)
    assert earlier is not None and earlier.seq >= snapshot.seq - 2 * SNAPSHOT_EVERY


# -- pending updates ---------------------------------------------------------------------------


def hello_then_world() -> tuple[bytes, bytes]:
    """Two updates of one client; the second depends on the first."""
    doc = pycrdt.Doc(client_id=1)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    text = doc.get("text", type=pycrdt.Text)
    text.insert(0, "hello")
    text.insert(5, " world")
    return updates[0], updates[1]


def test_a_plain_doc_leaves_pending_updates_out_of_its_state():
    # Why history.squash carries pending updates along: Yrs does not encode them.
    hello, world = hello_then_world()
    doc = pycrdt.Doc()
    doc.apply_update(world)

    naive = pycrdt.Doc()
    naive.apply_update(doc.get_update())
    naive.apply_update(hello)

    assert text_of(naive) == "hello"


async def test_a_snapshot_keeps_an_update_waiting_for_its_dependency(
    store: SQLiteStore, settings: Settings
):
    hello, world = hello_then_world()
    await store.append(log(world))
    await snapshots_of(store, settings).write("notes", 1)
    await store.append(log(hello))

    loaded = await store.load("notes")

    assert loaded.snapshot is not None and loaded.snapshot.seq == 1
    assert [u.seq for u in loaded.updates] == [2]
    assert text_of(build_replica(loaded, Settings()).doc) == "hello world"


async def test_a_snapshot_keeps_a_deletion_of_items_not_received_yet(
    store: SQLiteStore, settings: Settings
):
    author = pycrdt.Doc(client_id=1)
    text = author.get("text", type=pycrdt.Text)
    text.insert(0, "keep drop")
    insert = author.get_update()
    editor = pycrdt.Doc(client_id=2)
    editor.apply_update(insert)
    before = editor.get_state()
    del editor.get("text", type=pycrdt.Text)[4:]
    deletion = editor.get_update(before)

    await store.append(log(deletion))
    await snapshots_of(store, settings).write("notes", 1)
    await store.append(log(insert))

    assert text_of(build_replica(await store.load("notes"), Settings()).doc) == "keep"


async def test_a_snapshot_built_on_a_snapshot_still_carries_the_pending_update(
    store: SQLiteStore, settings: Settings
):
    hello, world = hello_then_world()
    other = pycrdt.Doc(client_id=2)
    other.get("title", type=pycrdt.Text).insert(0, "Title")
    snapshots = snapshots_of(store, settings)

    await store.append(log(world, other.get_update()))
    await snapshots.write("notes", 1)
    await snapshots.write("notes", 2)  # squashes snapshot 1 with update 2
    await store.append(log(hello))

    loaded = await store.load("notes")
    assert loaded.snapshot is not None and loaded.snapshot.seq == 2
    doc = build_replica(loaded, Settings()).doc
    assert text_of(doc) == "hello world"
    assert text_of(doc, "title") == "Title"


# -- history -----------------------------------------------------------------------------------


def random_history(count: int, seed: int = 3) -> list[bytes]:
    """Updates from three editors who see each other's edits, in causal order:
    text inserts and deletions, map sets and overwrites, array inserts and
    deletions, with one editor's consecutive edits depending on each other."""
    rng = random.Random(seed)
    docs = [pycrdt.Doc(client_id=client) for client in (11, 22, 33)]
    updates: list[bytes] = []
    for _ in range(count):
        author = rng.choice(docs)
        before = author.get_state()
        text = author.get("text", type=pycrdt.Text)
        items = author.get("items", type=pycrdt.Array)
        meta = author.get("meta", type=pycrdt.Map)
        action = rng.randrange(5)
        if action == 0 or len(text) < 3:
            text.insert(rng.randint(0, len(text)), rng.choice(["ab", "c", "xyz"]))
        elif action == 1:
            start = rng.randrange(len(text) - 1)
            del text[start : start + 2]
        elif action == 2:
            meta[rng.choice("pqr")] = rng.choice([1, "two", 3.5, None, True])
        elif action == 3 or not len(items):
            items.insert(rng.randint(0, len(items)), rng.randrange(100))
        else:
            del items[rng.randrange(len(items))]
        update = author.get_update(before)
        updates.append(update)
        for doc in docs:
            if doc is not author:
                doc.apply_update(update)
    return updates


def contents(doc: pycrdt.Doc) -> dict[str, Any]:
    return {
        "text": str(doc.get("text", type=pycrdt.Text)),
        "items": doc.get("items", type=pycrdt.Array).to_py(),
        "meta": doc.get("meta", type=pycrdt.Map).to_py(),
        "sv": decode_state_vector(doc.get_state()),
    }


def doc_of(*updates: bytes) -> pycrdt.Doc:
    doc = pycrdt.Doc()
    for update in updates:
        doc.apply_update(update)
    return doc


async def test_state_at_any_seq_equals_replaying_the_log_up_to_it(
    store: SQLiteStore, settings: Settings
):
    updates = random_history(30)
    await store.append(log(*updates))
    written = (10, 20)
    snapshots = snapshots_of(store, settings)
    for seq in written:
        await snapshots.write("notes", seq)

    for seq in (0, 1, 5, 9, 10, 11, 15, 20, 21, 29, 30):
        rows_before = store.stats.log_rows_read
        at, state = await state_at(store, "notes", seq)

        assert at == seq
        assert contents(doc_of(state)) == contents(doc_of(*updates[:seq])), f"seq {seq}"
        # Read from the nearest snapshot on, not from the start of the log.
        nearest = max([s for s in written if s <= seq], default=0)
        assert store.stats.log_rows_read - rows_before == seq - nearest

    assert contents(doc_of(*updates)) != contents(doc_of(*updates[:29]))


async def test_state_at_is_clamped_to_the_head_and_latest_by_default(store: SQLiteStore):
    updates = random_history(12)
    await store.append(log(*updates))

    latest = await state_at(store, "notes")
    beyond = await state_at(store, "notes", 99)

    assert latest[0] == beyond[0] == 12
    assert contents(doc_of(latest[1])) == contents(doc_of(*updates))
    assert contents(doc_of(beyond[1])) == contents(doc_of(*updates))


async def test_state_at_of_an_empty_document_is_the_empty_update(store: SQLiteStore):
    assert await state_at(store, "nothing") == (0, b"\x00\x00")
    assert await state_at(store, "nothing", 5) == (0, b"\x00\x00")


async def test_thinned_snapshots_stay_within_a_log_bound_and_every_version_stays_reachable(
    store: SQLiteStore, settings: Settings
):
    # A document that only grows, snapshotted every 10 updates: 40 snapshots
    # unthinned, each as large as the document was then.
    editor = pycrdt.Doc(client_id=5)
    updates: list[bytes] = []
    editor.observe(lambda event: updates.append(event.update))
    text = editor.get("text", type=pycrdt.Text)
    keep = 3
    snapshots = snapshots_of(store, settings.replace(snapshot_keep_recent=keep))
    for i in range(400):
        text.insert(len(text), f"line {i:04d} " + "x" * 40)
        await store.append(log(updates[-1]))
        if (i + 1) % 10 == 0:
            await snapshots.write("notes", i + 1)

    seqs = await store.snapshot_seqs("notes")
    size = len(editor.get_update())
    total = 0
    for seq in seqs:
        snapshot = await store.latest_snapshot("notes", at_or_before_seq=seq)
        assert snapshot is not None and snapshot.seq == seq
        total += len(snapshot.data)
    bound = keep + math.log2(400) + 1
    assert len(seqs) <= bound, seqs
    # Checkpoints are kept whole: together about what the document holds.
    checkpoints = await store.checkpoints("notes")
    assert [c.seq for c in checkpoints] == list(range(10, 401, 10))
    total += sum(len(c.data) + len(c.waiting) + len(c.state_vector) for c in checkpoints)
    assert total <= size * bound
    assert seqs[-1] == 400 and seqs[0] == 10  # the newest, and the oldest is kept
    for seq in range(0, 401, 7):  # every version: from an older snapshot plus the log
        at, state = await state_at(store, "notes", seq)
        assert at == seq
        assert str(doc_of(state).get("text", type=pycrdt.Text)) == str(
            doc_of(*updates[:seq]).get("text", type=pycrdt.Text)
        ), f"seq {seq}"


@pytest.mark.parametrize("order", ["causal", "dependency later"])
def test_a_run_of_logged_updates_applies_as_one_only_when_that_changes_nothing(order: str):
    updates = random_history(60, seed=5)
    hello, world = hello_then_world()
    logged = [*updates, hello, world] if order == "causal" else [*updates, world, hello]
    records = [UpdateRecord("notes", seq, data, 1.0) for seq, data in enumerate(logged, 1)]
    one_by_one = Replica()
    for record in records:
        apply_stored(one_by_one, record)

    rebuilt = rebuild(None, records)

    assert contents(rebuilt.doc) == contents(one_by_one.doc)
    assert rebuilt.waiting == one_by_one.waiting
    assert decode_state_vector(rebuilt.doc.get_state()) == decode_state_vector(
        one_by_one.doc.get_state()
    )


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
async def test_a_snapshot_of_a_document_deleted_meanwhile_is_not_kept(
    kind: str, tmp_path: Path, settings: Settings
):
    store = SQLiteStore(tmp_path / "deleted.db") if kind == "sqlite" else MemoryStore()
    await store.open()
    try:
        epoch = (await store.load("notes", create=True)).epoch
        secret = pycrdt.Doc()
        secret.get("text", type=pycrdt.Text).insert(0, "deleted content")
        await store.append([NewUpdate("notes", secret.get_update(), 1.0, epoch=epoch)])
        snapshots = snapshots_of(store, settings.replace(snapshot_every_updates=1))
        read_updates = store.read_updates

        async def read_then_delete(*args: Any, **kwargs: Any) -> Any:
            rows = await read_updates(*args, **kwargs)
            store.read_updates = read_updates  # type: ignore[method-assign]
            await store.delete_document("notes")  # a DELETE lands while it is built
            return rows

        store.read_updates = read_then_delete  # type: ignore[method-assign]
        await snapshots.write("notes", 1)

        assert await store.get_document("notes") is None  # not created again
        loaded = await store.load("notes")  # the next document of that name
        assert loaded.snapshot is None and loaded.updates == ()
        assert await store.checkpoints("notes") == []
    finally:
        await store.close()


async def test_commits_made_while_a_snapshot_is_written_make_the_next_one_due(
    store: SQLiteStore, settings: Settings
):
    # The document's writes stop while its snapshot is being written: the updates
    # committed meanwhile get their snapshot all the same, without another write.
    every = 5
    snapshots = snapshots_of(store, settings.replace(snapshot_every_updates=every))
    snapshots.start()
    doc = pycrdt.Doc()
    text = doc.get("text", type=pycrdt.Text)
    saving = asyncio.Event()
    release = asyncio.Event()
    save_snapshot = store.save_snapshot

    async def held_save(snapshot: SnapshotRecord) -> None:
        saving.set()
        await release.wait()
        await save_snapshot(snapshot)

    store.save_snapshot = held_save  # type: ignore[method-assign]
    try:

        async def append(count: int) -> None:
            for _ in range(count):
                before = doc.get_state()
                text.insert(len(text), "x")
                result = await store.append(log(doc.get_update(before)))
                snapshots.committed(result.heads)

        await append(every)  # due: its snapshot starts and is held
        await asyncio.wait_for(saving.wait(), TIMEOUT_S)
        await append(2 * every)  # due again meanwhile, and nothing more comes
        store.save_snapshot = save_snapshot  # type: ignore[method-assign]
        release.set()
        deadline = time.monotonic() + TIMEOUT_S
        while (await store.snapshot_seqs("notes"))[-1:] != [3 * every]:
            assert time.monotonic() < deadline, await store.snapshot_seqs("notes")
            await asyncio.sleep(0.02)
    finally:
        release.set()
        await snapshots.stop(TIMEOUT_S)
