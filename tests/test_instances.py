"""Several server instances on one store (here: in one process, on one MemoryStore,
which carries each one's commits to the others as SQLite's feed does between
processes; tests/test_processes.py runs real processes on one SQLite file).

Every peer of every instance gets every update once, with its seq, in seq order;
seqs are gap-free; documents converge; a gap in the feed is read from the log; a
room loaded while others write misses nothing; awareness crosses instances and
disappears when its owner leaves or its instance dies."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections.abc import AsyncIterator, Sequence

import pycrdt
import pytest

from collab.client import CollabClient, RemoteDocument
from collab.config import Settings
from collab.store import (
    AppendResult,
    DocumentInfo,
    FeedPosition,
    HeldDocuments,
    NewUpdate,
    UpdateRecord,
)
from collab.store.memory import MemoryStore
from collab.wire.edits import splice_text
from tests.helpers import SeqWatcher, appends, wait_until

DOC = "shared"


@pytest.fixture
def instance_settings(settings: Settings) -> Settings:
    return settings.replace(
        store_url="memory://",
        awareness_flush_s=0.01,
        awareness_ttl_s=1.0,
        awareness_refresh_s=0.3,
        feed_poll_s=0.01,
        feed_audit_s=0.2,
    )


async def two_instances(start_server, settings: Settings, store: MemoryStore | None = None):
    store = store or MemoryStore()
    a = await start_server(settings.replace(instance_id="a"), store)
    b = await start_server(settings.replace(instance_id="b"), store)
    return store, a, b


def strictly_increasing(seqs: Sequence[int]) -> bool:
    return all(b > a for a, b in itertools.pairwise(seqs))


async def test_concurrent_edits_on_two_instances_reach_every_peer_once_in_seq_order(
    start_server, instance_settings
):
    store, a, b = await two_instances(start_server, instance_settings)
    peers = [
        await SeqWatcher.join(a.port, "a1", DOC),
        await SeqWatcher.join(a.port, "a2", DOC),
        await SeqWatcher.join(b.port, "b1", DOC),
        await SeqWatcher.join(b.port, "b2", DOC),
    ]
    writers = {peers[0]: appends(1, 40), peers[2]: appends(2, 40), peers[3]: appends(3, 40)}
    try:
        # Interleaved sends on both instances, without waiting for acks.
        for i in range(40):
            for peer, updates in writers.items():
                peer.send(i, updates[i])
        total = 120
        for peer in peers:
            await peer.wait_for(lambda p=peer: p.seqs[-1] == total and len(p.text()) > 0)
        log = await store.read_updates(DOC)

        assert [r.seq for r in log] == list(range(1, total + 1))
        texts = {peer.text() for peer in peers}
        assert len(texts) == 1
        (content,) = texts
        for client in (1, 2, 3):
            for i in range(40):
                assert content.count(f"<{client}.{i}>") == 1
        for peer in peers:
            assert strictly_increasing(peer.seqs), peer.seqs
            # Each peer saw every seq once: from broadcasts or, for its own, acks.
            assert peer.seqs[1:] == list(range(1, total + 1))
        for writer in writers:
            assert len(writer.acks) == 40
        assert {r.author.instance for r in log} == {"a", "b"}
    finally:
        for peer in peers:
            await peer.close()


class LossyFeedStore(MemoryStore):
    """A memory store whose feed loses every record with an even seq, as a feed
    that was interrupted would: the rooms must read them from the log."""

    async def follow(
        self,
        after: FeedPosition,
        *,
        poll_s: float,
        exclude_instance: str | None = None,
        documents: HeldDocuments | None = None,
    ) -> AsyncIterator[tuple[FeedPosition, list[UpdateRecord]]]:
        feed = super().follow(
            after, poll_s=poll_s, exclude_instance=exclude_instance, documents=documents
        )
        async with contextlib.aclosing(feed) as feed:
            async for position, records in feed:
                yield position, [r for r in records if r.seq % 2]


async def test_records_the_feed_loses_are_read_from_the_log_in_order(
    start_server, instance_settings
):
    _, a, b = await two_instances(start_server, instance_settings, LossyFeedStore())
    writer = await SeqWatcher.join(a.port, "writer", DOC)
    reader = await SeqWatcher.join(b.port, "reader", DOC)
    try:
        for ref, update in enumerate(appends(7, 30)):
            writer.send(ref, update)
            await writer.wait_for(lambda ref=ref: ref in writer.acks)
        await reader.wait_for(lambda: reader.seqs[-1] == 30)

        assert reader.seqs == list(range(0, 31))
        assert reader.text() == writer.text() == "".join(f"<7.{i}>" for i in range(30))
    finally:
        await writer.close()
        await reader.close()


async def test_a_room_loaded_while_another_instance_writes_misses_and_doubles_nothing(
    start_server, instance_settings
):
    _, a, b = await two_instances(start_server, instance_settings)
    writer = await SeqWatcher.join(a.port, "writer", DOC)
    updates = appends(9, 200)
    late: SeqWatcher | None = None
    try:
        for ref, update in enumerate(updates):
            writer.send(ref, update)
            if ref == 60:
                late = await SeqWatcher.join(b.port, "late", DOC)  # loads on b mid-stream
        assert late is not None
        await late.wait_for(lambda: late.seqs[-1] == 200)

        assert strictly_increasing(late.seqs)
        assert late.seqs[1:] == list(range(late.seqs[0] + 1, 201))
        assert late.text() == "".join(f"<9.{i}>" for i in range(200))
    finally:
        await writer.close()
        if late is not None:
            await late.close()


async def test_awareness_crosses_instances_both_ways_and_leaves_with_its_owner(
    start_server, instance_settings, connect
):
    _, a, b = await two_instances(start_server, instance_settings)
    ann = await connect(a, client_id="ann")
    bob = await connect(b, client_id="bob")
    on_a = await ann.subscribe(DOC)
    on_b = await bob.subscribe(DOC)

    on_a.set_awareness({"user": "ann"})
    on_b.set_awareness({"user": "bob"})
    await on_b.wait_for(lambda: {"user": "ann"} in on_b.awareness.states.values())
    await on_a.wait_for(lambda: {"user": "bob"} in on_a.awareness.states.values())

    await ann.close()

    await on_b.wait_for(lambda: {"user": "ann"} not in on_b.awareness.states.values())


async def test_the_awareness_of_a_dead_instance_expires_everywhere(
    start_server, instance_settings, connect
):
    _, a, b = await two_instances(start_server, instance_settings)
    ann = await connect(a, client_id="ann")
    bob = await connect(b, client_id="bob")
    on_a = await ann.subscribe(DOC)
    on_b = await bob.subscribe(DOC)
    on_a.set_awareness({"user": "ann"})
    await on_b.wait_for(lambda: {"user": "ann"} in on_b.awareness.states.values())

    # Instance a stops renewing and never says goodbye: its presence tasks die.
    await a.rooms.presence._tasks.close()
    loop = asyncio.get_running_loop()
    started = loop.time()

    await on_b.wait_for(lambda: {"user": "ann"} not in on_b.awareness.states.values(), timeout_s=5)
    # Renewed at most awareness_refresh_s before the end, gone within the TTL after.
    assert loop.time() - started <= instance_settings.awareness_ttl_s + 1.0


class LaggingFeedStore(MemoryStore):
    """Instance b's feed brings each batch 0.3 s late (a change stream that lags),
    and brings every document's records (as a change stream does that still
    follows a document b held before, and left): b's next room of it may get them."""

    def __init__(self) -> None:
        super().__init__()
        self.lagged = 0  # records b's feed brought late, and b handled
        self.epochs_read = 0  # documents' epochs read after that (a room checking one)

    async def follow(
        self,
        after: FeedPosition,
        *,
        poll_s: float,
        exclude_instance: str | None = None,
        documents: HeldDocuments | None = None,
    ) -> AsyncIterator[tuple[FeedPosition, list[UpdateRecord]]]:
        feed = super().follow(after, poll_s=poll_s, exclude_instance=exclude_instance)
        async with contextlib.aclosing(feed) as records_of:
            async for position, records in records_of:
                lagging = bool(records) and exclude_instance == "b"
                if lagging:
                    await asyncio.sleep(0.3)  # the lag: a deliberate delay
                yield position, records
                if lagging:  # asked for the next batch: b handled this one
                    self.lagged += len(records)

    async def get_document(self, doc: str) -> DocumentInfo | None:
        info = await super().get_document(doc)
        if self.lagged:
            self.epochs_read += 1
        return info


async def test_a_deleted_generation_never_reaches_the_next_one_through_a_lagging_feed(
    start_server, instance_settings
):
    store = LaggingFeedStore()
    a = await start_server(instance_settings.replace(instance_id="a"), store)
    b = await start_server(instance_settings.replace(instance_id="b"), store)
    writer = await SeqWatcher.join(a.port, "w", DOC)
    for ref, update in enumerate(appends(5, 3)):
        writer.send(ref, update)
    await writer.wait_for(lambda: len(writer.acks) == 3)
    assert await a.rooms.delete(DOC)
    await writer.close()

    reader = await SeqWatcher.join(b.port, "r", DOC)  # the next, empty document
    # The lagging feed brings the deleted records; b's room asks the store whose
    # they are (the document's epoch), and whatever it sent the reader then, the
    # reader has after a ping.
    await wait_until(lambda: store.lagged == 3 and store.epochs_read > 0)
    await reader.barrier()

    assert reader.text() == "" and reader.seqs == [0]
    assert await store.read_updates(DOC) == []
    await reader.close()


class SlowReportStore(MemoryStore):
    """Commits at once, but reports instance a's commits back 0.3 s late: its
    rooms see their own updates in the log (reading a gap) before the writer
    says they are stored."""

    def __init__(self) -> None:
        super().__init__()
        self.committed_for_a = asyncio.Event()

    async def append(self, updates: Sequence[NewUpdate]) -> AppendResult:
        result = await super().append(updates)
        if any(u.author.instance == "a" for u in updates):
            self.committed_for_a.set()
            await asyncio.sleep(0.3)  # the late report: a deliberate delay
        return result


async def test_an_own_update_read_from_the_log_first_is_acknowledged_not_echoed(
    start_server, instance_settings
):
    store, a, b = await two_instances(start_server, instance_settings, SlowReportStore())
    sender = await SeqWatcher.join(a.port, "sender", DOC)
    other = await SeqWatcher.join(b.port, "other", DOC)
    first, second = appends(1, 1)[0], appends(2, 1)[0]

    sender.send(0, first)  # seq 1, reported to a 0.3 s late
    await asyncio.wait_for(store.committed_for_a.wait(), 10)
    other.send(0, second)  # seq 2 reaches a through the feed: a reads seq 1 from the log

    await sender.wait_for(lambda: len(sender.acks) == 1 and sender.seqs[-1] == 2)
    assert sender.seqs == [0, 1, 2]  # its ack (1), then the other's update (2): no echo
    assert sender.acks == {0: 1}
    await other.wait_for(lambda: other.seqs[-1] == 2)
    assert sender.text() == other.text()
    await sender.close()
    await other.close()


@pytest.mark.allow_error_logs
async def test_rooms_dropped_and_reloaded_during_concurrent_edits_still_converge(
    start_server, instance_settings
):
    # Two editors on each instance type at random places while both instances drop
    # the document's room every few tens of milliseconds (as a fault or a deletion
    # elsewhere would): the editors resubscribe, resend what was not acknowledged,
    # and every copy ends equal to the log, every character stored once.
    store, a, b = await two_instances(start_server, instance_settings)
    clients = [
        await CollabClient.connect(f"ws://127.0.0.1:{server.port}/ws") for server in (a, b, a, b)
    ]
    remotes = [await client.subscribe(DOC) for client in clients]
    rng = random.Random(3)
    typing = asyncio.Event()
    drops = 0

    async def drop_rooms() -> None:  # at random moments of real time, as faults come
        nonlocal drops
        while not typing.is_set():
            await asyncio.sleep(rng.uniform(0.02, 0.08))
            for server in (a, b):
                room = server.rooms.get(DOC)
                if room is not None:
                    server.rooms._drop(room, "reload (test)")
                    drops += 1

    async def type_into(number: int, remote: RemoteDocument) -> None:
        text = remote.doc.get("text", type=pycrdt.Text)
        for k in range(60):
            current = str(text)
            at = rng.randint(0, len(current))
            splice_text(text, current, at, at, f"<{number}.{k}>")
            await asyncio.sleep(rng.uniform(0, 0.01))  # a typist's pace

    dropping = asyncio.ensure_future(drop_rooms())
    try:
        await asyncio.gather(*(type_into(n, r) for n, r in enumerate(remotes)))
    finally:
        typing.set()
        await dropping
    for remote in remotes:
        await remote.flushed(30)

    replayed = pycrdt.Doc()
    for record in await store.read_updates(DOC):
        replayed.apply_update(record.data)
    content = str(replayed.get("text", type=pycrdt.Text))
    assert drops >= 5
    assert len(content) == sum(len(f"<{n}.{k}>") for n in range(4) for k in range(60))
    for remote in remotes:
        await remote.wait_for(
            lambda r=remote: str(r.doc.get("text", type=pycrdt.Text)) == content, timeout_s=20
        )
    for client in clients:
        await client.close()
