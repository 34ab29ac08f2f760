"""Awareness (cursors, names) is relayed between peers and removed for everyone
when the peer that set it goes away.

In-process (tests/conftest.py, ``inprocess``): the rules of the protocol, no
socket; a connection that dies without a close frame, and one test of the relay,
over real sockets."""

from __future__ import annotations

import pytest

from tests.helpers import wait_until

pytestmark = pytest.mark.inprocess


def others(remote) -> dict[int, dict]:
    return {c: s for c, s in remote.awareness.states.items() if c != remote.awareness.client_id}


@pytest.mark.socket
async def test_awareness_set_by_one_peer_reaches_the_others(connect):
    alice, bob = await connect(), await connect()
    a, b = await alice.subscribe("aw"), await bob.subscribe("aw")
    a.set_awareness({"user": "alice", "cursor": 3})
    await b.wait_for(lambda: others(b) == {a.awareness.client_id: {"user": "alice", "cursor": 3}})
    a.set_awareness({"user": "alice", "cursor": 9})
    await b.wait_for(lambda: others(b)[a.awareness.client_id]["cursor"] == 9)


async def test_a_late_joiner_receives_the_current_awareness_states(connect):
    alice = await connect()
    a = await alice.subscribe("aw-late")
    a.set_awareness({"user": "alice"})
    await a.wait_for(lambda: a.awareness.client_id in a.awareness.states)
    bob = await connect()
    b = await bob.subscribe("aw-late")
    await b.wait_for(lambda: others(b) == {a.awareness.client_id: {"user": "alice"}})


async def test_awareness_is_removed_for_everyone_when_the_socket_closes(connect):
    alice, bob, carol = await connect(), await connect(), await connect()
    a, b, c = [await x.subscribe("aw-close") for x in (alice, bob, carol)]
    a.set_awareness({"user": "alice"})
    await b.wait_for(lambda: a.awareness.client_id in others(b))
    await c.wait_for(lambda: a.awareness.client_id in others(c))
    await alice.close()
    await b.wait_for(lambda: a.awareness.client_id not in b.awareness.states)
    await c.wait_for(lambda: a.awareness.client_id not in c.awareness.states)


@pytest.mark.socket
async def test_awareness_is_removed_when_the_connection_drops_without_a_close_frame(
    connect, server
):
    alice, bob = await connect(), await connect()
    a, b = await alice.subscribe("aw-drop"), await bob.subscribe("aw-drop")
    a.set_awareness({"user": "alice"})
    await b.wait_for(lambda: a.awareness.client_id in others(b))
    alice.ws.protocol.stream.close()  # the TCP connection dies, no close handshake
    await b.wait_for(lambda: a.awareness.client_id not in b.awareness.states)
    await wait_until(lambda: len(server.sockets) == 1)


async def test_awareness_is_removed_when_the_peer_unsubscribes(connect):
    alice, bob = await connect(), await connect()
    a, b = await alice.subscribe("aw-unsub"), await bob.subscribe("aw-unsub")
    a.set_awareness({"user": "alice"})
    await b.wait_for(lambda: a.awareness.client_id in others(b))
    await alice.unsubscribe("aw-unsub")
    await b.wait_for(lambda: a.awareness.client_id not in b.awareness.states)


async def test_a_reconnected_client_keeps_its_awareness_when_the_old_socket_closes(connect, server):
    old, bob = await connect(), await connect()
    a_old, b = await old.subscribe("aw-re"), await bob.subscribe("aw-re")
    a_old.set_awareness({"user": "alice", "tab": "old"})
    await b.wait_for(lambda: a_old.awareness.client_id in others(b))

    # The same client (same awareness client id) comes back on a new socket
    # before the old one is found dead.
    new = await connect()
    a_new = await new.subscribe("aw-re", doc=a_old.doc)
    a_new.awareness.apply_awareness_update(
        a_old.awareness.encode_awareness_update([a_old.awareness.client_id]), "local"
    )
    a_new.set_awareness({"user": "alice", "tab": "new"})
    client_id = a_new.awareness.client_id
    await b.wait_for(lambda: others(b).get(client_id, {}).get("tab") == "new")

    await old.close()
    room = server.rooms.get("aw-re")
    await wait_until(lambda: len(room.sessions) == 2)  # the old socket's session left
    await bob.ping()  # whatever its leaving sent bob, he has now
    assert others(b).get(client_id) == {"user": "alice", "tab": "new"}
