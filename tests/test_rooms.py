"""Room lifecycle: single-flight load, fail-closed load, unload only after the
last peer left and every write is durable.

In-process (tests/conftest.py, ``inprocess``): the rooms' rules, on a real SQLite
store, no socket; the room that lingers for a page reload over real sockets."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pycrdt
import pytest

from collab.errors import CloseCode, StoreError
from collab.store import AppendResult, LoadedDocument, NewUpdate
from collab.store.sqlite import SQLiteStore
from tests.helpers import caught_up, wait_until

DOC = "lifecycle"

pytestmark = pytest.mark.inprocess


class GatedStore(SQLiteStore):
    """A real SQLite store whose loads and appends wait for the test's go-ahead."""

    def __init__(self, path) -> None:
        super().__init__(path)
        self.load_gate = asyncio.Event()
        self.load_gate.set()
        self.append_gate = asyncio.Event()
        self.append_gate.set()
        self.load_calls = 0
        self.load_started = asyncio.Event()
        self.fail_loads = False

    async def load(self, doc: str) -> LoadedDocument:
        self.load_calls += 1
        self.load_started.set()
        await self.load_gate.wait()
        if self.fail_loads:
            raise StoreError("disk unavailable")
        return await super().load(doc)

    async def append(self, updates: Sequence[NewUpdate]) -> AppendResult:
        await self.append_gate.wait()
        return await super().append(updates)


@pytest.fixture
def gated(io_loop, tmp_path, settings, start_server):
    store = GatedStore(tmp_path / "gated.db")
    server = io_loop.run_sync(lambda: start_server(settings, store))
    return server, store


def unloading(server) -> bool:
    """The manager began unloading DOC's room (it waits for its writes first)."""
    return DOC in server.rooms._unloading


def text(remote) -> pycrdt.Text:
    return remote.doc.get("text", type=pycrdt.Text)


async def seed(connect, server, content: str) -> None:
    writer = await connect(server)
    remote = await writer.subscribe(DOC)
    text(remote).insert(0, content)
    await remote.flushed()
    await caught_up(server.rooms.get(DOC))
    await writer.unsubscribe(DOC)
    await wait_until(lambda: server.rooms.get(DOC) is None)


async def test_subscribers_arriving_during_a_load_share_it_and_see_the_content(gated, connect):
    server, store = gated
    await seed(connect, server, "stored text")
    store.load_calls = 0
    store.load_gate.clear()
    store.load_started.clear()

    clients = [await connect(server) for _ in range(3)]
    pending = [asyncio.ensure_future(c.subscribe(DOC)) for c in clients]
    await asyncio.wait_for(store.load_started.wait(), 5)
    for client in clients:  # the server read each one's subscribe (sent before the ping)
        await client.ping()
    store.load_gate.set()
    remotes = await asyncio.gather(*pending)

    assert store.load_calls == 1
    assert [str(text(r)) for r in remotes] == ["stored text"] * 3


@pytest.mark.allow_error_logs
async def test_a_failed_load_fails_closed_and_writes_nothing(gated, connect):
    server, store = gated
    await seed(connect, server, "precious")
    appended = store.stats.append_batches
    store.fail_loads = True

    client = await connect(server)
    pending = [asyncio.ensure_future(client.subscribe(DOC)) for _ in range(1)]
    other = await connect(server)
    pending.append(asyncio.ensure_future(other.subscribe(DOC)))
    results = await asyncio.gather(*pending, return_exceptions=True)
    for result in results:
        assert result.error is not None and result.error.code == "load_failed"
    assert server.rooms.get(DOC) is None
    assert store.stats.append_batches == appended

    store.fail_loads = False
    again = await (await connect(server)).subscribe(DOC)
    assert str(text(again)) == "precious"


async def test_a_room_stays_loaded_until_its_pending_write_is_durable(gated, connect):
    server, store = gated
    store.append_gate.clear()
    editor = await connect(server)
    remote = await editor.subscribe(DOC)
    text(remote).insert(0, "unsaved")
    await wait_until(lambda: server.rooms.get(DOC).pending_writes == 1)
    await editor.close()
    await wait_until(lambda: not server.rooms.get(DOC).sessions)

    # Last peer gone, write pending: the room must not unload and lose the edit.
    room = server.rooms.get(DOC)
    assert room is not None and room.pending_writes == 1

    # A peer joining now gets the same room, edit included, without a reload.
    loads = server.rooms.loads
    late = await (await connect(server)).subscribe(DOC)
    assert str(text(late)) == "unsaved"
    assert server.rooms.loads == loads and server.rooms.get(DOC) is room

    store.append_gate.set()
    await wait_until(lambda: room.pending_writes == 0)
    assert [u.seq for u in await store.read_updates(DOC)] == [1]


async def test_a_room_unloads_after_the_last_peer_leaves_and_reloads_from_the_store(gated, connect):
    server, store = gated
    store.append_gate.clear()
    editor = await connect(server)
    remote = await editor.subscribe(DOC)
    text(remote).insert(0, "kept")
    room = server.rooms.get(DOC)
    await caught_up(room)
    await wait_until(lambda: room.pending_writes == 1)
    await editor.close()
    await wait_until(lambda: not room.sessions)
    await wait_until(lambda: unloading(server))  # its unload began, and waits for the write
    assert server.rooms.get(DOC) is room, "unloaded while a write was pending"

    store.append_gate.set()
    await wait_until(lambda: server.rooms.get(DOC) is None)
    loads = server.rooms.loads
    back = await (await connect(server)).subscribe(DOC)
    assert str(text(back)) == "kept"
    assert server.rooms.loads == loads + 1


async def test_unsubscribed_is_sent_after_the_sessions_updates_are_acknowledged(gated, connect):
    server, store = gated
    store.append_gate.clear()
    client = await connect(server)
    remote = await client.subscribe(DOC)
    text(remote).insert(0, "in flight")
    room = server.rooms.get(DOC)
    leaving = asyncio.ensure_future(client.unsubscribe(DOC))
    await wait_until(lambda: not room.sessions)  # the server read the unsubscribe
    await client.ping()  # and whatever it answered at once has reached the client
    assert not leaving.done(), "unsubscribed before the update was durable"
    store.append_gate.set()
    await asyncio.wait_for(leaving, 5)
    assert not remote.unacked


async def test_a_peer_that_leaves_while_the_document_loads_never_joins_the_room(
    gated, raw, connect
):
    server, store = gated
    store.load_gate.clear()
    store.load_started.clear()
    peer = await raw(target=server)
    await peer.hello()
    peer.send({"type": "subscribe", "doc": DOC})
    await asyncio.wait_for(store.load_started.wait(), 5)
    peer.send({"type": "unsubscribe", "doc": DOC})
    assert await peer.recv() == {"type": "unsubscribed", "doc": DOC}

    store.load_gate.set()
    other = await (await connect(server)).subscribe(DOC)
    room = server.rooms.get(DOC)
    assert len(room.sessions) == 1, "only the peer still subscribed is in the room"
    assert str(text(other)) == ""


async def test_too_much_data_for_a_loading_document_closes_with_1013(
    io_loop, tmp_path, settings, start_server, raw
):
    store = GatedStore(tmp_path / "slow-load.db")
    server = await start_server(settings.replace(inbound_buffer_bytes=10_000), store)
    store.load_gate.clear()
    peer = await raw(target=server)
    await peer.hello()
    peer.send({"type": "subscribe", "doc": DOC})
    await asyncio.wait_for(store.load_started.wait(), 5)
    for ref in range(3):
        peer.send({"type": "update", "doc": DOC, "ref": ref, "update": b"\x00" * 4000})
    error = await peer.recv_type("error")
    assert error["code"] == "overloaded"
    assert (await peer.closed())[0] == CloseCode.TRY_AGAIN_LATER
    store.load_gate.set()


@pytest.mark.socket
async def test_a_room_lingers_after_its_last_peer_so_a_reload_does_not_load_it_again(
    settings, start_server, connect
):
    server = await start_server(settings.replace(room_linger_s=0.4))
    editor = await connect(server)
    remote = await editor.subscribe(DOC)
    text(remote).insert(0, "kept")
    await remote.flushed()
    await editor.close()
    loads = server.rooms.loads

    await asyncio.sleep(0.1)  # a page reload: lingering is a matter of real time
    again = await (await connect(server)).subscribe(DOC)

    assert str(text(again)) == "kept"
    assert server.rooms.loads == loads  # still in memory


async def test_a_lingering_room_unloads_once_nobody_comes_back(settings, start_server, connect):
    server = await start_server(settings.replace(room_linger_s=0.2))
    editor = await connect(server)
    remote = await editor.subscribe(DOC)
    text(remote).insert(0, "kept")
    await remote.flushed()
    await caught_up(server.rooms.get(DOC))
    await editor.close()

    # Lingering is a matter of real time: a room that did not linger would have
    # unloaded by now (its write is flushed), this one stays the 0.2 s.
    await asyncio.sleep(0.1)
    assert server.rooms.get(DOC) is not None  # lingering
    await wait_until(lambda: server.rooms.get(DOC) is None)


async def test_a_room_dropped_before_a_waiting_subscriber_joins_it_is_not_joined(
    server, connect, monkeypatch
):
    # The room is dropped (a reload, a deletion elsewhere) between its load and the
    # moment the subscriber that waited for it resumes: its peers were told, the
    # subscriber would never be. It joins the document as it is loaded again.
    writer = await connect()
    w = await writer.subscribe("dropped")
    w.doc.get("text", type=pycrdt.Text).insert(0, "before")
    await w.flushed()
    await caught_up(server.rooms.get("dropped"))
    await writer.close()
    await wait_until(lambda: server.rooms.get("dropped") is None)

    manager = server.rooms
    load = manager._load
    dropped = []

    async def load_then_drop(name: str):
        room = await load(name)
        if not dropped:
            dropped.append(room)
            manager._drop(room, "reload (test)")
        return room

    monkeypatch.setattr(manager, "_load", load_then_drop)
    reader = await connect()
    r = await reader.subscribe("dropped")
    assert dropped and manager.get("dropped") is not dropped[0]
    assert str(r.doc.get("text", type=pycrdt.Text)) == "before"

    writer = await connect()
    w = await writer.subscribe("dropped")
    w.doc.get("text", type=pycrdt.Text).insert(6, " and after")
    await r.wait_for(lambda: str(r.doc.get("text", type=pycrdt.Text)) == "before and after")
