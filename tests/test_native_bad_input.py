"""Bad input on /ws gets its documented error or close code; the server stays up,
other peers on the same document keep working, and the document is unchanged.

The rules run in-process (tests/inprocess.py): the native connection driven as
its socket handler drives it, on a room manager over the memory store."""

from __future__ import annotations

import msgpack
import pytest

from collab.core.history import state_at
from collab.errors import CloseCode
from tests.helpers import RawPeer, SeqWatcher, text_of, text_update

DOC = "target"


@pytest.fixture
def server(inprocess):
    return inprocess


@pytest.fixture
def raw(server):
    async def open_peer(target=None):
        return (target or server).native()

    return open_peer


async def editors(server) -> tuple[SeqWatcher, SeqWatcher]:
    """Two editors on DOC who agree on the text 'before'."""
    a = await SeqWatcher.over(server.native(), "alice", DOC)
    b = await SeqWatcher.over(server.native(), "bob", DOC)
    await a.insert(0, 0, "before")
    await b.wait_for(lambda: b.text() == "before")
    return a, b


@pytest.fixture
def witnesses(server):
    async def make():
        return await editors(server)

    return make


async def assert_unharmed(server, a, b) -> None:
    """The server still serves, edits still flow, and nothing the bad peer sent
    reached the document."""
    await a.insert(1, 6, " after")
    await b.wait_for(lambda: b.text() == "before after")
    _, stored = await state_at(server.store, DOC)
    assert text_of(stored) == "before after"
    await a.close()
    await b.close()


async def test_a_text_frame_closes_the_connection_with_1003(raw, server, witnesses):
    a, b = await witnesses()
    peer = await raw()
    await peer.hello()
    peer.send_text('{"type": "subscribe", "doc": "target"}')
    error = await peer.recv()
    assert error["type"] == "error" and "binary" in error["message"]
    assert (await peer.closed())[0] == CloseCode.UNSUPPORTED_DATA
    await assert_unharmed(server, a, b)


async def test_bytes_that_are_not_messagepack_get_a_bad_message_error(raw, server, witnesses):
    a, b = await witnesses()
    peer = await raw()
    await peer.hello()
    await peer.subscribe(DOC)
    peer.send_bytes(b"\xc1\xff garbage")
    error = await peer.recv_type("error")
    assert error["code"] == "bad_message"
    assert "MessagePack" in error["message"]
    # The connection stays usable for well-formed messages.
    peer.send({"type": "ping", "id": 7})
    assert (await peer.recv_type("pong"))["id"] == 7
    await assert_unharmed(server, a, b)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ([1, 2, 3], "must be a MessagePack map"),
        ({"doc": DOC}, "'type'"),
        ({"type": "update", "doc": DOC, "ref": 1}, "missing required field 'update'"),
        ({"type": "update", "doc": DOC, "ref": "one", "update": b"\x00\x00"}, "'ref'"),
        ({"type": "update", "doc": DOC, "ref": -1, "update": b"\x00\x00"}, "'ref'"),
        ({"type": "update", "doc": 5, "ref": 1, "update": b"\x00\x00"}, "'doc'"),
        ({"type": "update", "doc": DOC, "ref": 1, "update": "text, not bin"}, "'update'"),
    ],
    ids=[
        "array",
        "no-type",
        "missing-field",
        "string-ref",
        "negative-ref",
        "int-doc",
        "str-update",
    ],
)
async def test_messagepack_of_the_wrong_shape_gets_a_bad_message_error(
    raw, server, witnesses, message, expected
):
    a, b = await witnesses()
    peer = await raw()
    await peer.hello()
    await peer.subscribe(DOC)
    peer.send_bytes(msgpack.packb(message, use_bin_type=True))
    error = await peer.recv_type("error")
    assert error["code"] == "bad_message"
    assert expected in error["message"]
    await assert_unharmed(server, a, b)


async def test_an_unknown_message_type_gets_an_unknown_type_error(raw, server, witnesses):
    a, b = await witnesses()
    peer = await raw()
    await peer.hello()
    peer.send({"type": "teleport", "doc": DOC})
    error = await peer.recv_type("error")
    assert error["code"] == "unknown_type"
    assert "teleport" in error["message"]
    await assert_unharmed(server, a, b)


async def test_an_invalid_crdt_update_is_rejected_with_its_ref(raw, server, witnesses):
    a, b = await witnesses()
    peer = await raw()
    await peer.hello()
    await peer.subscribe(DOC)
    valid = text_update(" INJECTED", client_id=99)
    for ref, update in enumerate([b"not a yjs update", valid[:-4], b"\xff" * 20]):
        peer.send({"type": "update", "doc": DOC, "ref": ref, "update": update})
        error = await peer.recv_type("error")
        assert (error["code"], error["doc"], error["ref"]) == ("invalid_update", DOC, ref)
    await assert_unharmed(server, a, b)
    assert server.rooms.get(DOC).head_seq == 2  # 'before' and ' after' only


# Y.encodeStateAsUpdateV2 of a doc with text "hello v2" (yjs 13.6.33): pycrdt reads
# these bytes as an empty v1 update, so only a strict reader notices.
YJS_V2_UPDATE = bytes.fromhex("00000105000001040f0c7465787468656c6c6f20763204080101000001010000")


async def test_a_v2_update_is_rejected_not_acknowledged(raw, server, witnesses):
    a, b = await witnesses()
    peer = await raw()
    await peer.hello()
    await peer.subscribe(DOC)
    peer.send({"type": "update", "doc": DOC, "ref": 8, "update": YJS_V2_UPDATE})
    error = await peer.recv_type("error")
    assert (error["code"], error["ref"]) == ("invalid_update", 8)
    assert "v1" in error["message"]
    await assert_unharmed(server, a, b)


async def test_an_empty_update_field_is_rejected(raw, server, witnesses):
    a, b = await witnesses()
    peer = await raw()
    await peer.hello()
    await peer.subscribe(DOC)
    peer.send({"type": "update", "doc": DOC, "ref": 5, "update": b""})
    error = await peer.recv_type("error")
    assert (error["code"], error["ref"]) == ("invalid_update", 5)
    await assert_unharmed(server, a, b)


async def test_an_invalid_state_vector_gets_an_error_and_no_subscription(raw, server, witnesses):
    a, b = await witnesses()
    peer = await raw()
    await peer.hello()
    for bad in (b"\x05\x01", b"\x00\x00\x00"):  # truncated; trailing bytes
        peer.send({"type": "subscribe", "doc": DOC, "sv": bad})
        error = await peer.recv_type("error")
        assert (error["code"], error["doc"]) == ("invalid_state_vector", DOC)
    peer.send({"type": "update", "doc": DOC, "ref": 1, "update": text_update("x")})
    assert (await peer.recv_type("error"))["code"] == "not_subscribed"
    await assert_unharmed(server, a, b)


async def test_an_invalid_awareness_update_gets_an_error(raw, server, witnesses):
    a, b = await witnesses()
    peer = await raw()
    await peer.hello()
    await peer.subscribe(DOC)
    for bad in (b"\x01\x05", b"\x01\x05\x01\x03{x}", b"\x01\x05\x01\x03[1]"):
        peer.send({"type": "awareness", "doc": DOC, "update": bad})
        error = await peer.recv_type("error")
        assert (error["code"], error["doc"]) == ("invalid_awareness", DOC)
    assert server.rooms.get(DOC).awareness.snapshot() is None  # no state was set
    await assert_unharmed(server, a, b)


async def test_a_frame_over_the_size_limit_closes_with_1009(start_server, settings):
    # The limit is Tornado's (websocket_max_message_size): a real socket.
    small = await start_server(settings.replace(max_frame_bytes=64 * 1024))
    url = f"ws://127.0.0.1:{small.port}/ws"
    a = await SeqWatcher.join(small.port, "alice", DOC)
    b = await SeqWatcher.join(small.port, "bob", DOC)
    await a.insert(0, 0, "before")
    peer = await RawPeer.connect(url)
    await peer.hello()
    await peer.subscribe(DOC)
    big = text_update("x" * 100_000, client_id=77)
    peer.send({"type": "update", "doc": DOC, "ref": 1, "update": big})
    assert (await peer.closed())[0] == CloseCode.MESSAGE_TOO_BIG
    peer.close()
    await assert_unharmed(small, a, b)


async def test_a_message_before_hello_closes_with_4400(raw, server, witnesses):
    a, b = await witnesses()
    peer = await raw()
    peer.send({"type": "subscribe", "doc": DOC})
    error = await peer.recv()
    assert (error["type"], error["code"]) == ("error", "hello_required")
    code, reason = await peer.closed()
    assert code == CloseCode.PROTOCOL_ERROR
    assert "hello" in reason
    await assert_unharmed(server, a, b)


async def test_garbage_before_hello_closes_with_4400(raw, server, witnesses):
    a, b = await witnesses()
    peer = await raw()
    peer.send_bytes(b"\x00\x01\x02")
    assert (await peer.closed())[0] == CloseCode.PROTOCOL_ERROR
    await assert_unharmed(server, a, b)


async def test_an_unsupported_protocol_version_closes_with_4400(raw, server):
    peer = await raw()
    peer.send({"type": "hello", "version": 99})
    error = await peer.recv()
    assert error["code"] == "unsupported_version"
    assert "version 1" in error["message"]
    assert (await peer.closed())[0] == CloseCode.PROTOCOL_ERROR


async def test_a_second_hello_is_refused_without_closing(raw, server):
    peer = await raw()
    await peer.hello()
    peer.send({"type": "hello", "version": 1})
    assert (await peer.recv_type("error"))["code"] == "bad_message"
    peer.send({"type": "ping"})
    assert (await peer.recv_type("pong"))["type"] == "pong"


async def test_an_update_for_a_document_not_subscribed_is_refused(raw, server, witnesses):
    a, b = await witnesses()
    peer = await raw()
    await peer.hello()
    peer.send({"type": "update", "doc": DOC, "ref": 3, "update": text_update("sneaky")})
    error = await peer.recv_type("error")
    assert (error["code"], error["doc"], error["ref"]) == ("not_subscribed", DOC, 3)
    await assert_unharmed(server, a, b)


@pytest.mark.parametrize("name", ["", "bad\nname", "x" * 600])
async def test_an_invalid_document_name_is_refused(raw, server, name):
    peer = await raw()
    await peer.hello()
    peer.send({"type": "subscribe", "doc": name})
    assert (await peer.recv_type("error"))["code"] == "invalid_document_name"


async def test_subscribing_twice_and_too_many_documents_are_refused(start_inprocess, settings):
    limited = await start_inprocess(settings.replace(max_documents_per_connection=2))
    peer = limited.native()
    await peer.hello()
    await peer.subscribe("one")
    peer.send({"type": "subscribe", "doc": "one"})
    assert (await peer.recv_type("error"))["code"] == "already_subscribed"
    await peer.subscribe("two")
    peer.send({"type": "subscribe", "doc": "three"})
    assert (await peer.recv_type("error"))["code"] == "too_many_documents"
