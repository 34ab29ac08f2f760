"""Faults of the old provisional seqs, each checked: nothing is sent or counted
before the write queue admitted it, and a lost seq race (another instance took the
seq) is retried with new numbers: no waiter hangs, the room unloads, unsubscribe
answers.

In-process (tests/conftest.py, ``inprocess``): the write queue's rules, on a real
SQLite store, no socket."""

from __future__ import annotations

from collections.abc import Sequence

import pycrdt
import pytest

from collab.errors import SeqConflict, StoreError
from collab.store import AppendResult, NewUpdate
from collab.store.sqlite import SQLiteStore
from tests.helpers import caught_up, wait_until

DOC = "faults"

pytestmark = pytest.mark.inprocess


class FlakyStore(SQLiteStore):
    """Appends fail with ``error`` while ``failing`` is set, or ``fail_next`` times."""

    def __init__(self, path, error: Exception) -> None:
        super().__init__(path)
        self.failing = False
        self.fail_next = 0
        self.error = error
        self.failures = 0

    async def append(self, updates: Sequence[NewUpdate]) -> AppendResult:
        if self.failing or self.fail_next:
            self.fail_next = max(0, self.fail_next - 1)
            self.failures += 1
            raise self.error
        return await super().append(updates)


@pytest.mark.allow_error_logs
async def test_an_update_refused_by_the_write_queue_is_neither_sent_nor_counted(
    tmp_path, settings, start_server, connect
):
    store = FlakyStore(tmp_path / "flaky.db", StoreError("sqlite: disk I/O error"))
    server = await start_server(settings.replace(write_retry_max_s=0.05), store)
    writer, witness = await connect(server), await connect(server)
    w, seen = await writer.subscribe(DOC), await witness.subscribe(DOC)
    w.doc.get("text", type=pycrdt.Text).insert(0, "stored ")
    await w.flushed()
    await seen.wait_for(lambda: str(seen.doc.get("text", type=pycrdt.Text)) == "stored ")
    room = server.rooms.get(DOC)
    store.failing = True
    w.doc.get("text", type=pycrdt.Text).insert(7, "queued ")  # accepted, cannot be stored
    await wait_until(lambda: server.rooms.writer.failure is not None)
    head, pending, received = room.head_seq, room.pending_writes, seen.updates_received

    w.doc.get("text", type=pycrdt.Text).insert(0, "refused ")

    error = await writer.next_error()
    assert error.code == "overloaded" and error.ref is not None
    await witness.ping()  # what the server sent it on reading the refused update, it has
    assert (room.head_seq, room.pending_writes) == (head, pending)
    assert seen.updates_received == received  # neither the queued nor the refused one
    assert not w.refused  # refused for now: the client sends it again later
    store.failing = False
    # Once the store recovers, the client's resend lands: once, after the queued one.
    await seen.wait_for(
        lambda: str(seen.doc.get("text", type=pycrdt.Text)) == "refused stored queued "
    )
    await w.flushed()
    assert str(w.doc.get("text", type=pycrdt.Text)) == "refused stored queued "
    assert room.head_seq == head + 2 and not w.refused


async def test_a_lost_seq_race_is_retried_and_leaves_nothing_hanging(
    tmp_path, settings, start_server, connect
):
    store = FlakyStore(tmp_path / "raced.db", SeqConflict(DOC, "another instance took seq 1"))
    server = await start_server(settings.replace(write_retry_max_s=0.05), store)
    client = await connect(server)
    remote = await client.subscribe(DOC)
    await caught_up(server.rooms.get(DOC))  # its post-load read: see tests.helpers
    store.fail_next = 3  # three lost races in a row, then the store wins
    text = remote.doc.get("text", type=pycrdt.Text)
    for word in ("one ", "two ", "three"):
        text.insert(len(str(text)), word)

    await remote.flushed()
    assert store.failures == 3
    assert server.rooms.writer.failure is None  # a race is not a failing store
    await client.unsubscribe(DOC)  # answered, after every ack
    await wait_until(lambda: server.rooms.get(DOC) is None)  # unloaded, not half-way
    log = await store.read_updates(DOC)
    assert [r.seq for r in log] == [1, 2, 3]
    doc = pycrdt.Doc()
    for record in log:
        doc.apply_update(record.data)
    assert str(doc.get("text", type=pycrdt.Text)) == "one two three"
