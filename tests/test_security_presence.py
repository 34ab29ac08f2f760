"""Trusted presence: an awareness client id belongs to the session that set it, the
server stamps each state with the token's user, and one socket cannot flood it.
In-process (tests/inprocess.py): the rules of the protocols, no socket."""

from __future__ import annotations

from typing import Any

import pytest
from pycrdt import create_awareness_message

from collab.auth import Authenticator
from collab.wire.yformat import AwarenessEntry, decode_awareness_update, encode_awareness_update

SECRET = "presence-test-secret-of-32-bytes-or-more"


def token(user: str, **kwargs) -> str:
    return Authenticator(SECRET).issue(user, {"*": "write"}, **kwargs)


@pytest.fixture
def raw(inprocess_raw):
    return inprocess_raw


@pytest.fixture
def secured(io_loop, settings, start_inprocess):
    return io_loop.run_sync(lambda: start_inprocess(settings.replace(auth_secret=SECRET)))


def awareness(*entries: tuple[int, int, dict | None]) -> bytes:
    return encode_awareness_update([AwarenessEntry(c, clock, state) for c, clock, state in entries])


async def peer_on(raw, server, user: str, doc: str = "room", **kwargs) -> Any:
    peer = await raw(target=server)
    assert (await peer.hello(token=token(user, **kwargs)))["type"] == "welcome"
    await peer.subscribe(doc)
    return peer


async def states_seen(peer: Any, client_id: int) -> dict | None:
    """The state of ``client_id`` in the next awareness message that names it."""
    while True:
        message = await peer.recv_type("awareness")
        for entry in decode_awareness_update(message["update"]):
            if entry.client_id == client_id:
                return entry.state


async def test_the_server_stamps_the_token_s_user_on_presence(raw, secured):
    alice = await peer_on(raw, secured, "alice", name="Alice", color="#e91e63")
    bob = await peer_on(raw, secured, "bob", name="Bob")
    forged = {"user": {"id": "bob", "name": "Bob", "color": "#000", "role": "admin"}, "cursor": 4}
    alice.send({"type": "awareness", "doc": "room", "update": awareness((11, 1, forged))})
    seen = await states_seen(bob, 11)
    assert seen == {"user": {"id": "alice", "name": "Alice", "color": "#e91e63"}, "cursor": 4}
    room = secured.rooms.get("room")
    assert room.awareness.states[11]["user"]["id"] == "alice"


async def test_another_session_cannot_overwrite_or_remove_a_client_s_state(raw, secured):
    alice = await peer_on(raw, secured, "alice")
    mallory = await peer_on(raw, secured, "mallory")
    alice.send({"type": "awareness", "doc": "room", "update": awareness((11, 1, {"c": 1}))})
    assert (await states_seen(mallory, 11))["c"] == 1

    for attack in ((11, 5, {"c": "hijacked"}), (11, 6, None)):
        mallory.send({"type": "awareness", "doc": "room", "update": awareness(attack)})
        error = await mallory.recv_type("error")
        assert error["code"] == "awareness_denied"
    room = secured.rooms.get("room")
    assert room.awareness.states[11] == {"c": 1, "user": {"id": "alice", "name": "alice"}}

    # The same user on a new socket (a reconnect) takes it over.
    again = await peer_on(raw, secured, "alice")
    again.send({"type": "awareness", "doc": "room", "update": awareness((11, 7, {"c": 2}))})
    assert (await states_seen(mallory, 11))["c"] == 2
    alice.close()
    again.send({"type": "awareness", "doc": "room", "update": awareness((11, 8, {"c": 3}))})
    assert (await states_seen(mallory, 11))["c"] == 3  # the old socket's close removed nothing


async def test_a_y_websocket_peer_cannot_overwrite_another_s_state(raw, secured):
    alice = await peer_on(raw, secured, "alice")
    alice.send({"type": "awareness", "doc": "room", "update": awareness((11, 1, {"c": 1}))})
    await states_seen(alice, 11)
    mallory = await raw(f"/yjs/room?token={token('mallory')}", target=secured)
    await mallory.recv_bytes()
    mallory.send_bytes(create_awareness_message(awareness((11, 9, {"c": "hijacked"}))))
    mallory.send_bytes(create_awareness_message(awareness((12, 1, {"me": True}))))
    assert (await states_seen(alice, 12))["user"]["id"] == "mallory"
    assert secured.rooms.get("room").awareness.states[11]["c"] == 1


async def test_twenty_thousand_client_ids_from_one_socket_are_capped(raw, secured):
    cap = secured.settings.awareness_max_clients
    flood = await peer_on(raw, secured, "flood")
    watcher = await peer_on(raw, secured, "watcher")
    flood.send(
        {
            "type": "awareness",
            "doc": "room",
            "update": awareness(*((1000 + i, 1, {"i": i}) for i in range(20_000))),
        }
    )
    assert (await flood.recv_type("error"))["code"] == "awareness_limit"
    for i in range(cap + 5):  # one by one: the first ``cap`` pass
        flood.send({"type": "awareness", "doc": "room", "update": awareness((i + 1, 1, {}))})
    errors = [await flood.recv_type("error") for _ in range(5)]
    assert {e["code"] for e in errors} == {"awareness_limit"}
    room = secured.rooms.get("room")
    assert len(room.awareness.states) == cap
    big = {"blob": "x" * (secured.settings.awareness_max_state_bytes + 1)}
    watcher.send({"type": "awareness", "doc": "room", "update": awareness((5000, 1, big))})
    assert (await watcher.recv_type("error"))["code"] == "awareness_limit"
    assert 5000 not in room.awareness.states


async def test_awareness_updates_past_the_rate_are_dropped(raw, settings, start_inprocess):
    server = await start_inprocess(settings.replace(auth_secret=SECRET, awareness_updates_per_s=5))
    peer = await peer_on(raw, server, "fast")
    for clock in range(1, 31):
        peer.send({"type": "awareness", "doc": "room", "update": awareness((7, clock, {}))})
    error = await peer.recv_type("error")
    assert error["code"] == "awareness_limit"


async def test_an_awareness_update_too_large_for_its_caps_is_refused_before_it_is_parsed(
    raw, secured, monkeypatch
):
    from collab.core import awareness as awareness_module

    parsed = []
    decode = awareness_module.decode_awareness_update
    monkeypatch.setattr(
        awareness_module, "decode_awareness_update", lambda u: parsed.append(len(u)) or decode(u)
    )
    alice = await peer_on(raw, secured, "alice")
    huge = awareness((11, 1, {"note": "x" * 4_000_000}))  # one state, 4 MB of JSON
    alice.send({"type": "awareness", "doc": "room", "update": huge})
    assert (await alice.recv_type("error"))["code"] == "awareness_limit"
    assert parsed == []  # refused by its size alone
    alice.send({"type": "awareness", "doc": "room", "update": awareness((11, 2, {"ok": 1}))})
    assert (await states_seen(alice, 11)) is not None
