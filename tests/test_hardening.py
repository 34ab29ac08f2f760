"""Crafted, nearly valid input cannot lose an acknowledged edit, crash the server or
poison a document: one test per finding of the attack on open access, each of
which failed before the strict reader and the replica were in place.

In-process (tests/conftest.py, ``inprocess``): the rules of the protocols, no
socket; what reads HTTP or the access log runs on a real server."""

from __future__ import annotations

import json
import logging

import pycrdt
import pytest
from pycrdt import create_update_message
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from collab.auth import Authenticator
from collab.core.history import state_at
from collab.errors import CloseCode, DocumentDamaged
from collab.wire import crdt
from collab.wire.yformat import check_update
from tests.fuzz import fingerprint
from tests.helpers import RawPeer, appended_values, text_of, wait_until
from tests.test_long_items import deletions, insertions, long_values, scattered
from tests.yjs_peer import YjsPeers

DOC = "target"

pytestmark = pytest.mark.inprocess


def var_uint(value: int) -> bytes:
    return pycrdt.write_var_uint(value)


def deep_value_update(depth: int, client: int = 424242) -> bytes:
    """One map entry whose value is arrays nested ``depth`` levels deep."""
    item = b"\x28" + var_uint(1) + b"\x03map" + b"\x04deep" + var_uint(1)
    value = b"\x75\x01" * depth + b"\x7e"
    return var_uint(1) + var_uint(1) + var_uint(client) + var_uint(0) + item + value + b"\x00"


def two_edits(client_id: int) -> tuple[bytes, bytes]:
    """Two text edits of one client; the second depends on the first."""
    doc = pycrdt.Doc(client_id=client_id)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    text = doc.get("text", type=pycrdt.Text)
    text.insert(0, "hidden ")
    text.insert(7, "words")
    return updates[0], updates[1]


async def send_update(peer: RawPeer, update: bytes, ref: int) -> dict:
    peer.send({"type": "update", "doc": DOC, "ref": ref, "update": update})
    while True:
        message = await peer.recv()
        if message.get("ref") == ref and message["type"] in ("ack", "error"):
            return message


async def native_peer(raw, target=None) -> RawPeer:
    peer = await raw(target=target)
    await peer.hello()
    await peer.subscribe(DOC)
    return peer


async def assert_live_equals_stored(server) -> None:
    room = server.rooms.get(DOC)
    assert room is not None
    await room.flushed()
    _, stored = await state_at(server.store, DOC)
    assert fingerprint(room.encode_state()) == fingerprint(stored)


# -- finding 1: an update applied, then refused, lost acknowledged edits -----------------------


async def test_a_waiting_update_with_trailing_bytes_is_refused_before_it_touches_the_document(
    server, raw, connect
):
    first, second = two_edits(client_id=77)
    attacker = await native_peer(raw)
    honest = await connect(client_id="honest")
    remote = await honest.subscribe(DOC)

    refused = await send_update(attacker, second + b"\x00", ref=1)
    assert refused["type"] == "error" and refused["code"] == "invalid_update"
    assert "trailing bytes" in refused["message"]
    # The dependency arrives: had the refused update been applied, its text would
    # now appear in the live document, but never in the store.
    assert (await send_update(attacker, first, ref=2))["type"] == "ack"
    await remote.wait_for(lambda: str(remote.doc.get("text", type=pycrdt.Text)) == "hidden ")
    text = remote.doc.get("text", type=pycrdt.Text)
    text.insert(len(str(text)), "and more")  # an honest edit on top of what is there
    await remote.flushed()

    await assert_live_equals_stored(server)
    # Everyone leaves: the room is reloaded from the store, with the honest edit.
    await honest.close()
    attacker.close()
    await wait_until(lambda: server.rooms.get(DOC) is None)
    newcomer = await connect(client_id="newcomer")
    again = await newcomer.subscribe(DOC)
    assert str(again.doc.get("text", type=pycrdt.Text)) == "hidden and more"


async def test_on_yjs_a_waiting_update_with_trailing_bytes_closes_and_changes_nothing(
    server, raw, yjs: YjsPeers
):
    first, second = two_edits(client_id=78)
    witness = await yjs.connect(server, DOC)
    witness.doc.get("text", type=pycrdt.Text).insert(0, "kept ")
    await witness.synced()
    offender = await yjs.connect(server, DOC)
    await offender.synced()

    offender.send(create_update_message(second + b"\x01"))
    code, _ = await offender.closed()

    assert code == CloseCode.PROTOCOL_ERROR
    attacker = await native_peer(raw)
    assert (await send_update(attacker, first, ref=1))["type"] == "ack"
    await witness.wait_for(lambda: "hidden" in str(witness.doc.get("text", type=pycrdt.Text)))
    assert "words" not in str(witness.doc.get("text", type=pycrdt.Text))
    await assert_live_equals_stored(server)


# -- finding 2: a deeply nested value crashed the process --------------------------------------


@pytest.mark.parametrize("depth", [65, 10_000, 40_000])
async def test_a_deeply_nested_value_is_refused_on_ws_and_the_server_lives(server, raw, depth):
    attacker = await native_peer(raw)

    refused = await send_update(attacker, deep_value_update(depth), ref=1)

    assert refused["type"] == "error" and refused["code"] == "invalid_update"
    assert "nests deeper than 64 levels" in refused["message"]
    assert (await send_update(attacker, deep_value_update(64), ref=2))["type"] == "ack"
    await assert_live_equals_stored(server)


async def test_a_deeply_nested_value_closes_a_yjs_peer_and_the_server_lives(server, yjs):
    offender = await yjs.connect(server, DOC)
    await offender.synced()

    offender.send(create_update_message(deep_value_update(40_000)))

    assert (await offender.closed())[0] == CloseCode.PROTOCOL_ERROR
    witness = await yjs.connect(server, DOC)
    await witness.synced()


# -- finding 3: a value Yjs cannot read was stored ---------------------------------------------


@pytest.mark.socket
async def test_nothing_deeper_than_yjs_reads_is_stored(server, raw):
    attacker = await native_peer(raw)
    await send_update(attacker, deep_value_update(10_000), ref=1)
    await send_update(attacker, deep_value_update(64, client=5), ref=2)

    log = await server.store.read_updates(DOC)

    assert len(log) == 1  # the 64-level value only
    check_update(log[0].data)
    response = await AsyncHTTPClient().fetch(f"{server.url}/api/documents/{DOC}/state")
    assert response.code == 200


# -- finding 4: an update with trailing bytes poisoned every later snapshot --------------------


async def test_a_changing_update_with_trailing_bytes_is_refused_and_snapshots_keep_working(
    settings, start_server, connect, raw
):
    server = await start_server(settings.replace(snapshot_every_updates=3))
    attacker = await native_peer(raw, server)
    edit = pycrdt.Doc(client_id=99)
    edit.get("text", type=pycrdt.Text).insert(0, "poison")

    refused = await send_update(attacker, edit.get_update() + b"\x00\x07", ref=1)

    assert refused["code"] == "invalid_update"
    writer = await connect(server, client_id="writer")
    remote = await writer.subscribe(DOC)
    for word in ("a", "b", "c", "d"):
        remote.doc.get("text", type=pycrdt.Text).insert(0, word)
    await remote.flushed()
    await server.rooms.writer.stop()
    await server.rooms.snapshots.stop(10)  # writes the snapshot that is due
    snapshot = await server.store.latest_snapshot(DOC)
    assert snapshot is not None and snapshot.seq >= 3
    assert text_of(snapshot.data) == "dcba"[4 - snapshot.seq :]  # the state at its seq


# -- finding 5: a pycrdt panic escaped the connection's error handling -------------------------


def panicking_pair() -> tuple[bytes, bytes]:
    """A document whose client 2 has an item, and an update that makes pycrdt panic
    (an empty ANY item after it)."""
    doc = pycrdt.Doc(client_id=2)
    doc.get("arr", type=pycrdt.Array).append(1)
    empty_any = b"\x08" + var_uint(1) + b"\x03arr" + var_uint(0)
    return doc.get_update(), var_uint(1) + var_uint(1) + var_uint(2) + var_uint(
        1
    ) + empty_any + b"\x00"


def test_a_pycrdt_panic_is_turned_into_an_error():
    base, panic = panicking_pair()
    doc = pycrdt.Doc()
    doc.apply_update(base)

    with pytest.raises(DocumentDamaged):
        crdt.apply_update(doc, panic)


async def test_the_update_that_made_pycrdt_panic_is_harmless_on_both_endpoints(server, raw, yjs):
    base, panic = panicking_pair()
    attacker = await native_peer(raw)
    assert (await send_update(attacker, base, ref=1))["type"] == "ack"

    answer = await send_update(attacker, panic, ref=2)  # nothing in it: a no-op

    assert answer["type"] == "ack"
    peer = await yjs.connect(server, DOC)
    await peer.synced()
    peer.send(create_update_message(panic))
    await peer.synced()  # still connected: the update was read and was empty
    await assert_live_equals_stored(server)


# -- finding 7: tokens in URLs reached the access log ------------------------------------------


@pytest.mark.socket
async def test_tokens_in_urls_are_redacted_in_every_log_line(
    settings, start_server, yjs, caplog: pytest.LogCaptureFixture
):
    secret = "s" * 40
    server = await start_server(settings.replace(auth_secret=secret))
    token = Authenticator(secret).issue("ann", {"*": "write"})
    caplog.set_level(logging.DEBUG)

    peer = await yjs.connect(server, f"{DOC}?token={token}")
    await peer.synced()
    await AsyncHTTPClient().fetch(f"{server.url}/api/documents?token={token}")
    with pytest.raises(HTTPClientError):
        await AsyncHTTPClient().fetch(
            f"{server.url}/api/documents/{DOC}/history?token={token}&limit=0"
        )
    await peer.disconnect()

    lines = [record.getMessage() for record in caplog.records]
    assert any("token=%5Bredacted%5D" in line or "token=[redacted]" in line for line in lines)
    assert not [line for line in lines if token in line]


# -- finding 8: numbers past 2**63 answered 500 ------------------------------------------------


@pytest.mark.parametrize(
    "query", ["state?seq=9223372036854775808", "history?after=99999999999999999999"]
)
@pytest.mark.socket
async def test_numbers_past_the_seq_range_get_400(server, connect, query):
    client = await connect()
    remote = await client.subscribe(DOC)
    remote.doc.get("text", type=pycrdt.Text).insert(0, "x")
    await remote.flushed()

    with pytest.raises(HTTPClientError) as raised:
        await AsyncHTTPClient().fetch(f"{server.url}/api/documents/{DOC}/{query}")

    assert raised.value.code == 400
    assert "between 0 and 9223372036854775807" in json.loads(raised.value.response.body)["error"]


# -- finding 9: a run of one-value items cost pycrdt the square of its length --------------------


async def test_an_update_of_many_one_value_items_is_stored_as_two_items(server, yjs: YjsPeers):
    # Appends merged into one update (an offline client's, or a crafted one) are a
    # run of items pycrdt merges at a cost that grows with the square of its length:
    # 20,000 of them, what one update may carry, took several GiB of memory. It is
    # stored, and sent, as two items (all but the last joined, then the last).
    _, merged = appended_values(2000, client_id=79)
    watcher = await yjs.connect(server, DOC)
    sender = await yjs.connect(server, DOC)
    await watcher.synced()
    await sender.synced()

    sender.send(create_update_message(merged))

    await watcher.wait_for(
        lambda: len(watcher.doc.get("values", type=pycrdt.Array)) == 2000, timeout_s=30
    )
    assert watcher.doc.get("values", type=pycrdt.Array).to_py() == list(range(2000))
    stored = await server.store.read_updates(DOC)
    assert [sum(map(len, check_update(r.data).groups)) for r in stored] == [2]
    await assert_live_equals_stored(server)


async def test_an_update_cutting_a_long_list_thousands_of_times_closes_a_yjs_peer(
    server, raw, yjs: YjsPeers
):
    # Each cut copies the item it cuts: 20,000 one-value insertions into the middle
    # of a 200,000-value list held pycrdt, and every document of the instance, 5 s.
    watcher = await yjs.connect(server, DOC)
    offender = await yjs.connect(server, DOC)
    await watcher.synced()
    await offender.synced()
    offender.send(create_update_message(long_values(200_000)))
    await watcher.wait_for(lambda: len(watcher.doc.get("values", type=pycrdt.Array)) == 200_000)

    offender.send(create_update_message(insertions(scattered(20_000, 200_000))))
    code, reason = await offender.closed()

    assert code == CloseCode.PROTOCOL_ERROR and "max_cut_values" in (reason or "")
    writer = await native_peer(raw)
    assert (await send_update(writer, insertions([1_000, 2_000]), ref=1))["type"] == "ack"
    await watcher.wait_for(lambda: len(watcher.doc.get("values", type=pycrdt.Array)) == 200_002)
    await assert_live_equals_stored(server)


async def test_many_deletions_in_a_long_list_are_applied_and_too_many_cuts_refused(server, raw):
    writer = await native_peer(raw)
    assert (await send_update(writer, long_values(50_000), ref=1))["type"] == "ack"

    # 5,000 scattered deletions: applied level by level (20,000 over 200,000 values
    # took 10 s as one, 0.14 s level by level, most of it moving blocks: refused).
    removed = await send_update(writer, deletions(scattered(5_000, 50_000)), ref=2)
    # A new long list, and 2,000 insertions into it, in one update.
    cuts = insertions(scattered(2_000, 50_000), client=10, into=9)
    refused = await send_update(writer, pycrdt.merge_updates(long_values(50_000, 9), cuts), 3)

    assert removed["type"] == "ack"
    assert refused["type"] == "error" and refused["code"] == "too_large"
    await assert_live_equals_stored(server)
    live = pycrdt.Doc()
    live.apply_update(server.rooms.get(DOC).encode_state())
    assert len(live.get("values", type=pycrdt.Array)) == 45_000
