"""Two or more native clients editing one document converge, and subscribers get
exactly what they lack.

In-process (tests/conftest.py, ``inprocess``): the rules of the protocol, no
socket; the first test runs them over real sockets end to end."""

from __future__ import annotations

import pycrdt
import pytest

from collab.core.history import state_at
from tests.helpers import text_of, text_update

pytestmark = pytest.mark.inprocess


def text(remote, name: str = "text") -> pycrdt.Text:
    return remote.doc.get(name, type=pycrdt.Text)


@pytest.mark.socket
async def test_two_clients_converge_on_concurrent_text_map_and_array_edits(connect):
    alice, bob = await connect(client_id="alice"), await connect(client_id="bob")
    a, b = await alice.subscribe("shared"), await bob.subscribe("shared")

    # Concurrent: neither side waits for the other before editing.
    with a.doc.transaction():
        text(a).insert(0, "hello from alice. ")
        a.doc.get("meta", type=pycrdt.Map)["title"] = "alice's title"
        a.doc.get("items", type=pycrdt.Array).extend(["a1", "a2"])
    with b.doc.transaction():
        text(b).insert(0, "hello from bob. ")
        b.doc.get("meta", type=pycrdt.Map)["owner"] = "bob"
        b.doc.get("items", type=pycrdt.Array).extend(["x", "y"])
    text(a).insert(0, ">> ")
    del text(b)[0:6]

    def same() -> bool:
        return a.doc.get_update() == b.doc.get_update() or (
            str(text(a)) == str(text(b))
            and a.doc.get("meta", type=pycrdt.Map).to_py()
            == b.doc.get("meta", type=pycrdt.Map).to_py()
            and a.doc.get("items", type=pycrdt.Array).to_py()
            == b.doc.get("items", type=pycrdt.Array).to_py()
        )

    await a.flushed()
    await b.flushed()
    await a.wait_for(lambda: len(a.doc.get("items", type=pycrdt.Array)) == 4)
    await b.wait_for(lambda: len(b.doc.get("items", type=pycrdt.Array)) == 4)
    await a.wait_for(same)
    await b.wait_for(same)
    assert "alice" in str(text(a)) and "bob" in str(text(a))
    assert a.doc.get("meta", type=pycrdt.Map).to_py() == {"title": "alice's title", "owner": "bob"}
    assert sorted(a.doc.get("items", type=pycrdt.Array).to_py()) == ["a1", "a2", "x", "y"]


async def test_acknowledgements_carry_increasing_seqs_and_updates_are_not_echoed(connect):
    alice, bob = await connect(), await connect()
    a, b = await alice.subscribe("seqs"), await bob.subscribe("seqs")
    for word in ("one ", "two ", "three "):
        text(a).insert(len(text(a)), word)
    await a.flushed()
    assert a.seq == 3
    await b.wait_for(lambda: b.seq == 3)
    assert b.updates_received == 3
    assert a.updates_received == 0, "the sender must not get its own updates back"


async def test_a_late_joiner_gets_the_full_state(connect):
    early = await connect()
    e = await early.subscribe("late")
    for i in range(50):
        text(e).insert(len(text(e)), f"line {i}\n")
    e.doc.get("meta", type=pycrdt.Map)["done"] = True
    await e.flushed()

    late = await connect()
    lj = await late.subscribe("late")
    assert str(text(lj)) == str(text(e))
    assert lj.doc.get("meta", type=pycrdt.Map).to_py() == {"done": True}
    assert lj.seq == e.seq == 51


async def test_resubscribing_with_a_state_vector_gets_only_what_is_missing(connect):
    writer, reader = await connect(), await connect()
    w = await writer.subscribe("resub")
    text(w).insert(0, "x" * 20_000)
    await w.flushed()

    r = await reader.subscribe("resub")
    assert r.sync_update_bytes > 20_000
    kept = r.doc
    await reader.unsubscribe("resub")

    text(w).insert(0, "new ")
    await w.flushed()
    again = await reader.subscribe("resub", doc=kept)
    assert str(text(again)) == str(text(w))
    assert again.sync_update_bytes < 100, "only the missing edit is sent, not the whole text"


async def test_edits_made_offline_reach_the_server_when_resubscribing(connect):
    first = await connect()
    f = await first.subscribe("offline")
    text(f).insert(0, "shared start. ")
    await f.flushed()
    kept = f.doc
    await first.unsubscribe("offline")
    # Edited while not subscribed: the sync answer's state vector tells the client
    # what the server lacks, and the client sends it.
    kept.get("text", type=pycrdt.Text).insert(0, "offline edit. ")

    back = await first.subscribe("offline", doc=kept)
    await back.flushed()
    other = await (await connect()).subscribe("offline")
    assert str(text(other)) == "offline edit. shared start. "


async def test_one_socket_carries_many_documents(connect):
    alice, bob = await connect(), await connect()
    names = [f"multi-{i}" for i in range(10)]
    mine = {name: await alice.subscribe(name) for name in names}
    theirs = {name: await bob.subscribe(name) for name in names}
    for name in names:
        text(mine[name]).insert(0, f"content of {name}")
    for name in names:
        await theirs[name].wait_for(
            lambda name=name: str(text(theirs[name])) == f"content of {name}"
        )


async def test_an_empty_update_is_acknowledged_but_not_logged(raw, server):
    peer = await raw()
    await peer.hello()
    await peer.subscribe("empty")
    peer.send({"type": "update", "doc": "empty", "ref": 1, "update": text_update("a")})
    peer.send({"type": "update", "doc": "empty", "ref": 2, "update": b"\x00\x00"})
    assert await peer.recv_type("ack") == {"type": "ack", "doc": "empty", "ref": 1, "seq": 1}
    assert await peer.recv_type("ack") == {"type": "ack", "doc": "empty", "ref": 2, "seq": 1}
    assert [u.seq for u in await server.store.read_updates("empty")] == [1]


async def test_a_replayed_update_is_acknowledged_without_a_second_history_entry(raw, server):
    peer = await raw()
    await peer.hello()
    await peer.subscribe("replay")
    update = text_update("only once", client_id=4242)
    peer.send({"type": "update", "doc": "replay", "ref": 1, "update": update})
    peer.send({"type": "update", "doc": "replay", "ref": 2, "update": update})
    assert (await peer.recv_type("ack"))["seq"] == 1
    assert (await peer.recv_type("ack"))["seq"] == 1
    assert len(await server.store.read_updates("replay")) == 1


async def test_an_update_waiting_for_its_dependency_is_logged_not_dropped(raw, server):
    source = pycrdt.Doc(client_id=7)
    updates: list[bytes] = []
    source.observe(lambda event: updates.append(event.update))
    source.get("text", type=pycrdt.Text).insert(0, "first ")
    source.get("text", type=pycrdt.Text).insert(6, "second")

    peer = await raw()
    await peer.hello()
    await peer.subscribe("pending")
    # The second edit arrives before the first: Yrs holds it as pending and the
    # document does not change, yet it must be stored (it is not a duplicate).
    peer.send({"type": "update", "doc": "pending", "ref": 1, "update": updates[1]})
    assert (await peer.recv_type("ack"))["seq"] == 1
    peer.send({"type": "update", "doc": "pending", "ref": 2, "update": updates[0]})
    assert (await peer.recv_type("ack"))["seq"] == 2
    stored = pycrdt.Doc()
    for record in await server.store.read_updates("pending"):
        stored.apply_update(record.data)
    assert str(stored.get("text", type=pycrdt.Text)) == "first second"


async def test_a_deletion_is_logged_once_and_its_replay_is_not(raw, server):
    source = pycrdt.Doc(client_id=3)
    updates: list[bytes] = []
    source.observe(lambda event: updates.append(event.update))
    source.get("text", type=pycrdt.Text).insert(0, "keep drop")
    del source.get("text", type=pycrdt.Text)[4:9]
    insert, deletion = updates
    assert deletion[0] == 0, "a deletion-only update carries no structs"

    peer = await raw()
    await peer.hello()
    await peer.subscribe("deletes")
    for ref, update in enumerate([insert, deletion, deletion, insert]):
        peer.send({"type": "update", "doc": "deletes", "ref": ref, "update": update})
    seqs = [(await peer.recv_type("ack"))["seq"] for _ in range(4)]
    assert seqs == [1, 2, 2, 2]
    assert [u.seq for u in await server.store.read_updates("deletes")] == [1, 2]
    _, state = await state_at(server.store, "deletes")
    assert text_of(state) == "keep"


async def test_reconnecting_y_websocket_clients_with_deletions_add_no_history(server, yjs):
    peer = await yjs.connect(server, "reconnects")
    text = peer.doc.get("text", type=pycrdt.Text)
    text.insert(0, "abcdef")
    del text[0:3]
    await peer.synced()
    await server.rooms.get("reconnects").flushed()
    logged = len(await server.store.read_updates("reconnects"))
    for _ in range(3):
        # Each connect answers the server's step 1 with step 2: the whole delete
        # set, nothing new. It must not become a history entry.
        await peer.disconnect()
        await peer.reconnect()
        await peer.synced()
    room = server.rooms.get("reconnects")
    await room.flushed()
    assert len(await server.store.read_updates("reconnects")) == logged
    assert text_of(room.missing_for(b"\x00")) == "def"


async def test_a_replayed_edit_that_also_deleted_adds_no_history_entry(raw, server):
    source = pycrdt.Doc(client_id=9)
    updates: list[bytes] = []
    source.observe(lambda event: updates.append(event.update))
    text = source.get("text", type=pycrdt.Text)
    text.insert(0, "old text")
    with source.transaction():  # replace a selection: insert and delete at once
        del text[0:3]
        text.insert(0, "new")
    first, replace = updates

    peer = await raw()
    await peer.hello()
    await peer.subscribe("replace")
    for ref, update in enumerate([first, replace, replace]):
        peer.send({"type": "update", "doc": "replace", "ref": ref, "update": update})
    assert [(await peer.recv_type("ack"))["seq"] for _ in range(3)] == [1, 2, 2]
    assert len(await server.store.read_updates("replace")) == 2
