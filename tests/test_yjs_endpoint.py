"""/yjs/{document} speaks y-websocket: peers driven by pycrdt's own y-protocols helpers
sync, share awareness, meet native clients in the same rooms, and respect grants.

The same scenarios run against the real Node.js y-websocket client in test_yjs_node.py.

In-process (tests/conftest.py, ``inprocess``): the rules of the protocol, no
socket; over real sockets: one sync end to end, what reads HTTP, a restart, and
the document names a URL carries.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pycrdt
import pytest
from pycrdt import Array, Map, Text, YMessageType, read_message
from tornado.httpclient import AsyncHTTPClient
from tornado.ioloop import IOLoop

from collab.app import CollabServer
from collab.auth import Authenticator
from collab.config import Settings
from collab.core.history import state_at
from collab.errors import CloseCode
from collab.wire.yformat import decode_awareness_update
from tests.helpers import text_of, wait_until
from tests.yjs_peer import YjsPeer, converge

SECRET = "yjs-endpoint-secret-of-at-least-32-bytes"

pytestmark = pytest.mark.inprocess


def text(doc: pycrdt.Doc) -> Text:
    return doc.get("text", type=Text)


def content(doc: pycrdt.Doc) -> dict[str, Any]:
    return {
        "text": str(doc.get("text", type=Text)),
        "map": doc.get("map", type=Map).to_py(),
        "array": doc.get("array", type=Array).to_py(),
    }


def room_text(server: CollabServer, name: str) -> str:
    room = server.rooms.get(name)
    assert room is not None, f"no room {name!r}"
    return text_of(room.missing_for(b"\x00"))


async def stored_text(server: CollabServer, name: str) -> str:
    room = server.rooms.get(name)
    if room is not None:
        await room.flushed()
    _, state = await state_at(server.store, name)
    return text_of(state)


async def get_json(url: str) -> Any:
    client = AsyncHTTPClient(force_instance=True)
    try:
        response = await client.fetch(url)
    finally:
        client.close()
    return json.loads(response.body)


# -- sync -------------------------------------------------------------------------------


@pytest.mark.socket
async def test_two_peers_converge_on_concurrent_text_map_and_array_edits(server, yjs):
    a = await yjs.connect(server, "shared")
    b = await yjs.connect(server, "shared")
    await a.synced()
    await b.synced()

    # Both edit before hearing from the other, so every edit is concurrent,
    # including two writes to the same map key.
    for peer, name in ((a, "alpha"), (b, "beta")):
        with peer.doc.transaction():
            text(peer.doc).insert(0, f"{name} ")
            peer.doc.get("map", type=Map)[name] = len(name)
            peer.doc.get("map", type=Map)["winner"] = name
            peer.doc.get("array", type=Array).append(name)
    await converge(a, b)

    assert content(a.doc) == content(b.doc)
    merged = content(a.doc)
    assert merged["text"] in ("alpha beta ", "beta alpha ")
    assert merged["map"] == {"alpha": 5, "beta": 4, "winner": merged["map"]["winner"]}
    assert merged["map"]["winner"] in ("alpha", "beta")
    assert sorted(merged["array"]) == ["alpha", "beta"]
    assert room_text(server, "shared") == merged["text"]


async def test_a_late_joiner_gets_the_full_state(server, yjs):
    a = await yjs.connect(server, "late")
    b = await yjs.connect(server, "late")
    text(a.doc).insert(0, "from a")
    b.doc.get("map", type=Map)["b"] = "from b"
    b.doc.get("array", type=Array).extend([1, 2, 3])
    await converge(a, b)

    late = await yjs.connect(server, "late")
    await converge(a, b, late)
    assert content(late.doc) == {"text": "from a", "map": {"b": "from b"}, "array": [1, 2, 3]}
    assert content(a.doc) == content(late.doc)


async def test_a_peer_that_reconnects_converges_with_edits_made_on_both_sides(server, yjs):
    a = await yjs.connect(server, "offline")
    b = await yjs.connect(server, "offline")
    text(a.doc).insert(0, "hello")
    await converge(a, b)

    await a.disconnect()
    text(a.doc).insert(5, " from a offline")  # sent nowhere: the socket is closed
    b.doc.get("map", type=Map)["b"] = "edited while a was away"
    await b.synced()
    assert room_text(server, "offline") == "hello"

    await a.reconnect()
    await converge(a, b)
    assert content(a.doc) == content(b.doc)
    assert content(b.doc)["text"] == "hello from a offline"
    assert content(a.doc)["map"] == {"b": "edited while a was away"}
    assert await stored_text(server, "offline") == "hello from a offline"


# -- awareness ------------------------------------------------------------------------------


async def test_awareness_is_shared_and_removed_for_everyone_when_its_socket_closes(server, yjs):
    a = await yjs.connect(server, "presence")
    b = await yjs.connect(server, "presence")
    alice, bob = {"user": {"name": "alice", "color": "#f00"}}, {"user": {"name": "bob"}}
    a.awareness.set_local_state(alice)
    b.awareness.set_local_state(bob)
    a_id, b_id = a.awareness.client_id, b.awareness.client_id
    await b.wait_for(lambda: b.awareness.states.get(a_id) == alice)
    await a.wait_for(lambda: a.awareness.states.get(b_id) == bob)

    late = await yjs.connect(server, "presence")
    await late.wait_for(lambda: late.awareness.states.get(a_id) == alice)
    assert late.awareness.states.get(b_id) == bob

    # A closes its socket without announcing it: the server removes A's state.
    await a.disconnect()
    for peer in (b, late):
        await peer.wait_for(lambda peer=peer: a_id not in peer.awareness.states)
    assert late.awareness.states.get(b_id) == bob


async def test_query_awareness_is_answered_with_every_known_state(server, yjs):
    a = await yjs.connect(server, "query")
    b = await yjs.connect(server, "query")
    a.awareness.set_local_state({"user": "a"})
    b.awareness.set_local_state({"user": "b"})
    a_id, b_id = a.awareness.client_id, b.awareness.client_id
    await b.wait_for(lambda: b.awareness.states.keys() == {a_id, b_id})

    def answered() -> bool:
        # Broadcasts carry the one client that changed; only the answer carries both.
        frame = b.last_frame.get(YMessageType.AWARENESS, b"")
        states = {e.client_id: e.state for e in decode_awareness_update(read_message(frame[1:]))}
        return states.keys() == {a_id, b_id} and states[a_id] == {"user": "a"}

    b.query_awareness()
    await b.wait_for(answered)


# -- with the native protocol -------------------------------------------------------------


@pytest.mark.socket
async def test_a_yjs_peer_and_a_native_client_edit_together_and_both_are_in_history(
    server, yjs, connect
):
    peer = await yjs.connect(server, "mixed")
    client = await connect(client_id="native-1")
    remote = await client.subscribe("mixed")
    native_text = remote.doc.get("text", type=Text)

    # Take turns, each edit made after seeing the previous one, so the log order is known.
    for i, letter in enumerate("abcd"):
        if i % 2 == 0:
            text(peer.doc).insert(i, letter)
            await remote.wait_for(lambda n=i + 1: len(str(native_text)) == n)
        else:
            native_text.insert(i, letter)
            await peer.wait_for(lambda n=i + 1: len(str(text(peer.doc))) == n)
    assert str(text(peer.doc)) == str(native_text) == "abcd"
    await remote.flushed()
    await server.rooms.get("mixed").flushed()

    body = await get_json(f"{server.url}/api/documents/mixed/history")
    updates = body["updates"]
    assert [u["seq"] for u in updates] == [1, 2, 3, 4]
    clients = [u["origin"]["client"] for u in updates]
    assert clients[1] == clients[3] == "native-1"
    assert clients[0] == clients[2] and clients[0].startswith("yjs:")
    assert {u["origin"]["instance"] for u in updates} == {"test"}
    assert body["next_after"] is None


# -- size and scale ---------------------------------------------------------------------------


async def test_awareness_crosses_between_a_yjs_peer_and_a_native_client(server, yjs, connect):
    peer = await yjs.connect(server, "presence")
    native = await (await connect()).subscribe("presence")

    native.set_awareness({"user": "native"})
    await peer.wait_for(
        lambda: peer.awareness.states.get(native.awareness.client_id) == {"user": "native"}
    )
    peer.awareness.set_local_state({"user": "yjs"})
    await native.wait_for(
        lambda: native.awareness.states.get(peer.awareness.client_id) == {"user": "yjs"}
    )
    await peer.disconnect()
    await native.wait_for(lambda: peer.awareness.client_id not in native.awareness.states)


async def test_a_one_megabyte_update_is_delivered(server, yjs):
    a = await yjs.connect(server, "big")
    b = await yjs.connect(server, "big")
    big = "".join(chr(ord("a") + i % 26) for i in range(1024 * 1024))
    text(a.doc).insert(0, big)
    await b.wait_for(lambda: len(str(text(b.doc))) == len(big))
    assert str(text(b.doc)) == big
    assert await stored_text(server, "big") == big


async def test_twenty_documents_with_two_peers_each_all_converge(server, yjs):
    names = [f"many-{i}" for i in range(20)]
    peers: list[YjsPeer] = await asyncio.gather(
        *(yjs.connect(server, name) for name in names for _ in range(2))
    )
    pairs = list(zip(peers[::2], peers[1::2], strict=True))
    for name, (a, b) in zip(names, pairs, strict=True):
        text(a.doc).insert(0, f"{name}/a ")
        b.doc.get("map", type=Map)["who"] = f"{name}/b"
    await asyncio.gather(*(converge(a, b) for a, b in pairs))

    for name, (a, b) in zip(names, pairs, strict=True):
        assert content(a.doc) == content(b.doc)
        assert content(a.doc)["text"] == f"{name}/a "
        assert content(b.doc)["map"] == {"who": f"{name}/b"}


# -- restart ---------------------------------------------------------------------------------


@pytest.mark.socket
async def test_peers_reconnect_after_a_server_restart_and_find_the_document_intact(
    settings, server, start_server, yjs
):
    a = await yjs.connect(server, "durable")
    b = await yjs.connect(server, "durable")
    text(a.doc).insert(0, "survives")
    b.doc.get("array", type=Array).append("restarts")
    await converge(a, b)
    await a.synced()
    await b.synced()

    await server.stop()
    assert (await a.closed())[0] == CloseCode.SERVICE_RESTART
    assert (await b.closed())[0] == CloseCode.SERVICE_RESTART
    text(a.doc).insert(8, " a restart")  # made while the server is down

    restarted = await start_server(settings.replace(port=server.port))
    fresh = await yjs.connect(restarted, "durable")
    await fresh.synced()
    assert content(fresh.doc) == {"text": "survives", "map": {}, "array": ["restarts"]}

    await a.reconnect()
    await b.reconnect()
    await converge(a, b, fresh)
    for peer in (a, b, fresh):
        assert content(peer.doc) == {"text": "survives a restart", "map": {}, "array": ["restarts"]}


# -- document names --------------------------------------------------------------------------


@pytest.mark.socket
async def test_query_parameters_are_never_part_of_the_document_name(server, yjs, connect):
    peer = await yjs.connect(server, "notes?token=x&foo=bar")
    text(peer.doc).insert(0, "from yjs")
    await peer.synced()

    remote = await (await connect()).subscribe("notes")
    assert str(remote.doc.get("text", type=Text)) == "from yjs"
    assert list(server.rooms.rooms) == ["notes"]
    await server.rooms.get("notes").flushed()
    assert [d.name for d in await server.store.list_documents()] == ["notes"]


@pytest.mark.socket
async def test_a_percent_encoded_slash_names_the_same_room_as_the_native_client(
    server, yjs, connect
):
    encoded = await yjs.connect(server, "team%2Fnotes")
    plain = await yjs.connect(server, "team/notes")
    remote = await (await connect()).subscribe("team/notes")

    text(encoded.doc).insert(0, "yjs ")
    await remote.wait_for(lambda: str(remote.doc.get("text", type=Text)) == "yjs ")
    remote.doc.get("text", type=Text).insert(4, "native")
    for peer in (encoded, plain):
        await peer.wait_for(lambda peer=peer: str(text(peer.doc)) == "yjs native")
    assert list(server.rooms.rooms) == ["team/notes"]


# -- grants ------------------------------------------------------------------------------------


@pytest.fixture
def auth_server(io_loop: IOLoop, start_server, settings: Settings) -> CollabServer:
    return io_loop.run_sync(lambda: start_server(settings.replace(auth_secret=SECRET)))


def token_for(user: str, docs: dict[str, str]) -> str:
    return Authenticator(SECRET).issue(user, docs)


async def test_a_read_only_peer_s_edits_are_ignored_and_it_is_told_once(auth_server, yjs):
    writer = await yjs.connect(auth_server, f"notes?token={token_for('w', {'notes': 'write'})}")
    text(writer.doc).insert(0, "by writer")
    await writer.synced()

    # The reader arrives with an edit of its own: its sync step 2 carries it.
    offline = pycrdt.Doc()
    text(offline).insert(0, "by reader ")
    reader_token = token_for("r", {"notes": "read"})
    reader = await yjs.connect(auth_server, f"notes?token={reader_token}", doc=offline)
    await reader.synced()
    assert len(reader.permission_denied) == 1
    assert "read-only" in reader.permission_denied[0]

    text(reader.doc).insert(0, "more by reader ")  # a sync update this time
    await reader.synced()
    assert len(reader.permission_denied) == 1, "told once, not once per update"
    assert reader.connected

    await writer.synced()  # anything relayed from the reader would have arrived by now
    assert room_text(auth_server, "notes") == "by writer"
    assert await stored_text(auth_server, "notes") == "by writer"
    history = await auth_server.store.read_updates("notes")
    assert {u.author.user for u in history} == {"w"}
    assert str(text(writer.doc)) == "by writer"


async def test_a_read_only_peer_with_nothing_to_send_is_not_told_off(auth_server, yjs):
    writer = await yjs.connect(auth_server, f"notes?token={token_for('w', {'notes': 'write'})}")
    text(writer.doc).insert(0, "by writer")
    await writer.synced()
    # Its sync step 2 is the empty update: nothing was refused, so nothing to say.
    reader = await yjs.connect(auth_server, f"notes?token={token_for('r', {'notes': 'read'})}")
    await reader.synced()
    await reader.wait_for(lambda: str(text(reader.doc)) == "by writer")
    assert reader.permission_denied == []

    # After deletions its step 2 always carries the delete set, which the room
    # already has: reconnecting must not earn a warning either.
    del text(writer.doc)[0:3]
    await reader.wait_for(lambda: str(text(reader.doc)) == "writer")
    await reader.disconnect()
    await reader.reconnect()
    await reader.synced()
    assert reader.permission_denied == []


async def test_a_read_only_peer_receives_edits_and_its_awareness_reaches_others(auth_server, yjs):
    writer = await yjs.connect(auth_server, f"notes?token={token_for('w', {'*': 'write'})}")
    text(writer.doc).insert(0, "draft ")
    await wait_until(lambda: (room := auth_server.rooms.get("notes")) is not None and room.stored)
    reader = await yjs.connect(auth_server, f"notes?token={token_for('r', {'notes': 'read'})}")

    text(writer.doc).insert(6, "news")
    await reader.wait_for(lambda: str(text(reader.doc)) == "draft news")

    reader.awareness.set_local_state({"user": "reader", "cursor": 2})
    reader_id = reader.awareness.client_id
    stamped = {"user": {"id": "r", "name": "r"}, "cursor": 2}  # the token's user
    await writer.wait_for(lambda: writer.awareness.states.get(reader_id) == stamped)


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?token=not-a-jwt",
        "?token="
        + Authenticator("another-secret-of-at-least-32-bytes").issue("r", {"notes": "write"}),
        "?token=" + Authenticator(SECRET).issue("r", {"notes": "write"}, expires_in_s=-60),
    ],
    ids=["missing", "malformed", "wrong-secret", "expired"],
)
async def test_a_missing_or_invalid_token_closes_with_4401(auth_server, yjs, query):
    peer = await yjs.connect(auth_server, f"notes{query}")
    assert (await peer.closed())[0] == CloseCode.UNAUTHORIZED
    assert auth_server.rooms.get("notes") is None


async def test_a_document_not_granted_closes_with_4403(auth_server, yjs):
    peer = await yjs.connect(auth_server, f"secret?token={token_for('r', {'notes': 'write'})}")
    code, reason = await peer.closed()
    assert code == CloseCode.FORBIDDEN
    assert "secret" in (reason or "")
    assert auth_server.rooms.get("secret") is None
