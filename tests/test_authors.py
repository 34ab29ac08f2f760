"""Who wrote what: GET /api/documents/DOC/authors cuts each text and rich-text
root into runs, each with the author of the update that inserted it, for the
latest version or any other, after a restore (the restorer's), and after
retention dropped the log the text was typed in (the index kept with the
snapshot)."""

from __future__ import annotations

import asyncio
import json
import time

import pycrdt
import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from collab.core.authors import Index, authors_at, authorship, index_sources
from collab.core.history import Sources, apply_log, gather_sources
from collab.core.limits import BudgetExceeded, ReadBudget
from collab.core.snapshots import EMPTY_STATE_VECTOR, encode
from collab.store import Author, NewUpdate, SnapshotRecord, UpdateRecord
from collab.store.memory import MemoryStore
from collab.store.sqlite import SQLiteStore
from collab.wire.replica import Replica
from tests.helpers import TIMEOUT_S, typing_updates


async def get_json(server, path: str) -> dict:
    response = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{server.port}{path}")
    return json.loads(response.body)


def who_wrote(body: dict, root: str = "text") -> list[tuple[str, str | None]]:
    names = [a["name"] for a in body["authors"]]
    return [
        (run["text"], None if run["author"] is None else names[run["author"]])
        for run in body["roots"][root]["runs"]
    ]


async def type_as(connect, doc: str, client_id: str, at: int, words: str) -> None:
    client = await connect(client_id=client_id)
    remote = await client.subscribe(doc)
    text = remote.doc.get("text", type=pycrdt.Text)
    text.insert(at, words)
    await remote.flushed()
    await client.close()


async def test_each_part_of_a_text_is_attributed_to_whoever_typed_it(server, connect):
    await type_as(connect, "two", "ann", 0, "Hello world")
    await type_as(connect, "two", "bob", 5, ", dear")
    body = await get_json(server, "/api/documents/two/authors")
    assert body["seq"] == 2
    assert who_wrote(body) == [("Hello", "ann"), (", dear", "bob"), (" world", "ann")]
    assert body["roots"]["text"]["kind"] == "text"
    first = await get_json(server, "/api/documents/two/authors?seq=1")
    assert who_wrote(first) == [("Hello world", "ann")]


async def test_rich_text_is_attributed_block_by_block(server, connect):
    client = await connect(client_id="ann")
    remote = await client.subscribe("rich")
    fragment = remote.doc.get("default", type=pycrdt.XmlFragment)
    paragraph = fragment.children.append(pycrdt.XmlElement("paragraph"))
    paragraph.children.append(pycrdt.XmlText("first"))
    await remote.flushed()
    second = await connect(client_id="bob")
    theirs = await second.subscribe("rich")
    await theirs.wait_for(lambda: theirs.seq >= remote.seq)
    other = theirs.doc.get("default", type=pycrdt.XmlFragment)
    added = other.children.append(pycrdt.XmlElement("paragraph"))
    added.children.append(pycrdt.XmlText("second"))
    await theirs.flushed()
    body = await get_json(server, "/api/documents/rich/authors")
    assert body["roots"]["default"]["kind"] == "xml"
    assert who_wrote(body, "default") == [("first", "ann"), ("\n", None), ("second", "bob")]


async def test_authors_are_the_same_whichever_instance_accepted_the_edits(
    settings, start_server, connect
):
    store = MemoryStore()
    a = await start_server(settings.replace(instance_id="a", feed_poll_s=0.01), store)
    b = await start_server(settings.replace(instance_id="b", feed_poll_s=0.01), store)
    ann = await connect(target=a, client_id="ann")
    bob = await connect(target=b, client_id="bob")
    mine = await ann.subscribe("shared")
    theirs = await bob.subscribe("shared")
    mine.doc.get("text", type=pycrdt.Text).insert(0, "from a")
    await mine.flushed()
    await theirs.wait_for(lambda: theirs.seq >= mine.seq)
    text = theirs.doc.get("text", type=pycrdt.Text)
    text.insert(len(text), ", from b")
    await theirs.flushed()
    expected = [("from a", "ann"), (", from b", "bob")]
    assert who_wrote(await get_json(a, "/api/documents/shared/authors")) == expected
    assert who_wrote(await get_json(b, "/api/documents/shared/authors")) == expected


async def test_restored_text_is_the_restorers(server, connect):
    await type_as(connect, "restored", "ann", 0, "old text")
    client = await connect(client_id="bob")
    remote = await client.subscribe("restored")
    text = remote.doc.get("text", type=pycrdt.Text)
    del text[0 : len(text)]
    await remote.flushed()
    await AsyncHTTPClient().fetch(
        f"http://127.0.0.1:{server.port}/api/documents/restored/restore",
        method="POST",
        body=json.dumps({"seq": 1}),
    )
    body = await get_json(server, "/api/documents/restored/authors")
    [(words, author)] = who_wrote(body)
    assert words == "old text" and author.startswith("api:restore:")
    # The version restored still shows who wrote it first.
    assert who_wrote(await get_json(server, "/api/documents/restored/authors?seq=1")) == [
        ("old text", "ann")
    ]


async def test_authors_survive_retention_dropping_the_log(server):
    store = server.store
    updates = []
    doc = pycrdt.Doc(client_id=11)
    text = doc.get("text", type=pycrdt.Text)
    doc.observe(lambda event: updates.append(event.update))
    for at, word in [(0, "kept "), (5, "history")]:
        text.insert(at, word)
    authors = [Author(None, "ann", "x"), Author(None, "bob", "x")]
    await store.append(
        [
            NewUpdate("pruned", data, 1.0, who, create=i == 0)
            for i, (data, who) in enumerate(zip(updates, authors, strict=True))
        ]
    )
    assert await server.rooms.snapshots.write("pruned", 2)
    await store.prune_history("pruned", 2)
    assert await store.read_updates("pruned") == []
    body = await get_json(server, "/api/documents/pruned/authors")
    assert who_wrote(body) == [("kept ", "ann"), ("history", "bob")]


async def test_a_seq_past_the_latest_version_is_refused(server, connect):
    await type_as(connect, "short", "ann", 0, "x")
    try:
        await get_json(server, "/api/documents/short/authors?seq=5")
    except HTTPClientError as exc:
        assert exc.code == 400
    else:
        raise AssertionError("seq 5 was answered")


def test_rich_text_reads_as_the_editor_reads_it_blocks_apart_line_breaks_not():
    doc = pycrdt.Doc()
    fragment = doc.get("default", type=pycrdt.XmlFragment)
    items = fragment.children.append(pycrdt.XmlElement("bulletList"))
    item = items.children.append(pycrdt.XmlElement("listItem"))
    first = item.children.append(pycrdt.XmlElement("paragraph"))
    first.children.append(pycrdt.XmlText("one"))
    first.children.append(pycrdt.XmlElement("hardBreak"))
    first.children.append(pycrdt.XmlText("two"))
    fragment.children.append(pycrdt.XmlElement("paragraph"))  # empty
    fragment.children.append(pycrdt.XmlElement("horizontalRule"))
    last = fragment.children.append(pycrdt.XmlElement("heading"))
    last.children.append(pycrdt.XmlText("end"))
    record = UpdateRecord("d", 1, doc.get_update(), 1.0, Author(None, "ann", None))
    found = authorship(Sources(None, (), [record]), None, [record])
    assert [(r["text"], r["author"]) for r in found.roots["default"]["runs"]] == [
        ("onetwo", 0),
        ("\n\n", None),
        ("end", 0),
    ]


def test_the_index_keeps_the_first_author_of_a_range():
    index = Index()
    doc = pycrdt.Doc(client_id=3)
    updates = []
    doc.observe(lambda event: updates.append(event.update))
    doc.get("text", type=pycrdt.Text).insert(0, "abc")
    index.add(UpdateRecord("d", 1, updates[0], 1.0, Author("ann", None, None)))
    index.add(UpdateRecord("d", 2, updates[0], 2.0, Author("bob", None, None)))  # sent again
    again = Index(index.encode())
    assert again.runs(3, 0, 3) == [(3, '["ann",null]')]


async def test_a_snapshot_made_by_a_load_that_replayed_a_long_log_keeps_the_authors(
    settings, start_server, connect, monkeypatch
):
    count = 3 * settings.snapshot_every_updates
    store = SQLiteStore(settings.store_url.removeprefix("sqlite:///"))
    await store.open()
    people = [Author(None, "ann", "old"), Author(None, "bob", "old")]
    await store.append(
        [
            NewUpdate("old", data, time.time(), people[seq * 2 // count])
            for seq, data in enumerate(typing_updates(count))
        ]
    )
    await store.close()
    server = await start_server(settings)
    saved: list[SnapshotRecord] = []
    snapshotted = asyncio.Event()
    save_snapshot = server.store.save_snapshot

    async def watched_save_snapshot(snapshot: SnapshotRecord) -> None:
        await save_snapshot(snapshot)
        saved.append(snapshot)
        snapshotted.set()

    monkeypatch.setattr(server.store, "save_snapshot", watched_save_snapshot)
    client = await connect(server)
    await client.subscribe("old")
    await asyncio.wait_for(snapshotted.wait(), TIMEOUT_S)
    assert saved[0].seq == count and saved[0].authors is not None
    half = count // 2
    # typing_updates' Yjs client is 7, one clock a character.
    assert Index(saved[0].authors).runs(7, 0, count) == [
        (half, '[null,"ann"]'),
        (count - half, '[null,"bob"]'),
    ]


async def test_the_index_of_a_version_takes_the_log_it_was_built_from_and_reads_what_lies_before():
    # An index at 20, a snapshot without one at 40 (an older server's), checkpoints
    # 20 <- 0, 40 <- 20 and 50 <- 40: the versions past 50 are built from the log after
    # 50, and their authors need the log after 20 as well. What the version read is
    # not read again; what it did not read is.
    store = MemoryStore()
    await store.open()
    typed = typing_updates(60)
    news = [
        NewUpdate("doc", data, float(seq), Author(user=f"user{seq // 7}"))
        for seq, data in enumerate(typed, 1)
    ]
    records = (await store.append(news)).records
    replica = Replica(name="doc")
    vectors = {0: EMPTY_STATE_VECTOR}
    for at, base in {20: 0, 40: 20, 50: 40}.items():
        apply_log(replica, records[base:at])
        index = Index()
        index.extend(records[:at])
        encoded = encode(
            replica,
            "doc",
            at,
            None,
            snapshot=at != 50,
            checkpoint_base=(base, vectors[base]),
            authors=index.encode() if at == 20 else None,
        )
        if encoded.snapshot is not None:
            await store.save_snapshot(encoded.snapshot)
        assert encoded.checkpoint is not None
        await store.save_checkpoint(encoded.checkpoint)
        vectors[at] = encoded.checkpoint.state_vector

    for seq in range(1, 61):
        sources = await gather_sources(store, "doc", seq)
        read = await index_sources(store, "doc", sources.seq, nearest=sources.snapshot)
        taken = await index_sources(
            store, "doc", sources.seq, nearest=sources.snapshot, known=sources.updates
        )
        assert taken[0] == read[0]
        assert [r.seq for r in taken[1]] == [r.seq for r in read[1]], seq
        assert all(any(r is u for u in sources.updates) for r in taken[1] if r.seq > 50)
    # Entries at or before the index's own are not its log, however they are given.
    base, log = await index_sources(store, "doc", 45, known=records[9:45])
    assert [r.seq for r in log] == list(range(21, 46))
    with pytest.raises(ValueError, match="end at seq 44"):
        await index_sources(store, "doc", 45, known=records[9:44])


async def test_the_snapshots_walked_to_find_an_index_are_charged_to_the_read():
    # Snapshots of an older server have no index: finding one reads each snapshot
    # before it, whole. Those reads are the request's, like its log's.
    store = MemoryStore()
    await store.open()
    news = [NewUpdate("doc", data, float(seq)) for seq, data in enumerate(typing_updates(60), 1)]
    records = (await store.append(news)).records
    index = Index()
    index.extend(records[:20])
    kept = [
        SnapshotRecord("doc", 20, b"s" * 3000, 20.0, b"", authors=index.encode()),
        SnapshotRecord("doc", 40, b"s" * 5000, 40.0, b"w" * 100),
        SnapshotRecord("doc", 50, b"s" * 7000, 50.0, b""),
    ]
    for snapshot in kept:
        await store.save_snapshot(snapshot)
    snapshots = sum(len(s.data) + len(s.waiting or b"") + len(s.authors or b"") for s in kept)
    log = sum(len(r.data) for r in records[20:60])

    budget = ReadBudget(updates=1000, bytes_=10**6, cpu_s=10)
    base, found = await index_sources(store, "doc", 60, budget)
    assert base == kept[0].authors and [r.seq for r in found] == list(range(21, 61))
    assert budget.max_bytes - budget.bytes_left == snapshots + log
    # The snapshot the caller read and charged is not charged again.
    budget = ReadBudget(updates=1000, bytes_=10**6, cpu_s=10)
    await index_sources(store, "doc", 60, budget, nearest=kept[2])
    assert budget.max_bytes - budget.bytes_left == snapshots - 7000 + log

    # Too little for the snapshots: refused before the log is read.
    budget = ReadBudget(updates=1000, bytes_=snapshots - 1, cpu_s=10)
    rows = store.stats.log_rows_read
    with pytest.raises(BudgetExceeded, match="finding the authors at seq 60"):
        await index_sources(store, "doc", 60, budget)
    assert store.stats.log_rows_read == rows


async def test_a_snapshot_passed_over_by_a_chain_from_the_empty_document_is_read_once():
    # A snapshot at 20 (with its index) and a checkpoint at 40 built from the empty
    # document: the version at 50 is the checkpoint and the log after it, its
    # authors the index at 20 and the log after it. The snapshot is read, and
    # charged, once.
    store = MemoryStore()
    await store.open()
    news = [
        NewUpdate("doc", data, float(seq), Author(user=f"user{seq // 7}"))
        for seq, data in enumerate(typing_updates(60), 1)
    ]
    records = (await store.append(news)).records
    index = Index()
    index.extend(records[:20])
    snapshot = SnapshotRecord("doc", 20, b"s" * 3000, 20.0, b"", authors=index.encode())
    await store.save_snapshot(snapshot)
    replica = Replica(name="doc")
    apply_log(replica, records[:40])
    encoded = encode(
        replica, "doc", 40, None, snapshot=False, checkpoint_base=(0, EMPTY_STATE_VECTOR)
    )
    assert encoded.checkpoint is not None
    await store.save_checkpoint(encoded.checkpoint)
    reads = []
    latest_snapshot = store.latest_snapshot

    async def counted(doc, *, at_or_before_seq=None):
        reads.append(at_or_before_seq)
        return await latest_snapshot(doc, at_or_before_seq=at_or_before_seq)

    store.latest_snapshot = counted
    budget = ReadBudget(updates=1000, bytes_=10**6, cpu_s=10)
    found = await authors_at(store, "doc", 50, budget=budget)

    assert reads == [50]
    checkpoint = len(encoded.checkpoint.data) + len(encoded.checkpoint.waiting)
    held = len(snapshot.data) + len(snapshot.authors or b"")
    log = sum(len(r.data) for r in records[20:50])
    assert budget.max_bytes - budget.bytes_left == held + checkpoint + log
    # The same authors as the whole log's, no snapshot or checkpoint taken.
    plain = MemoryStore()
    await plain.open()
    await plain.append(news[:50])
    assert found == await authors_at(plain, "doc", 50)
    assert {a["user"] for a in found.authors} == {f"user{n}" for n in range(8)}
