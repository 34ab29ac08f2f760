"""Bad input on /yjs/{document} gets its documented close code (or is ignored, for
unknown message types); the server stays up, the other peers on the document keep
working, and the document is unchanged.

The rules run in-process (tests/inprocess.py); the frame size limit, Tornado's, on
a real socket."""

from __future__ import annotations

from typing import Any

import pycrdt
import pytest
from pycrdt import YSyncMessageType, create_awareness_message, create_update_message
from pycrdt import write_message as var_bytes

from collab.core.history import state_at
from collab.errors import CloseCode
from tests.helpers import text_of, text_update
from tests.yjs_peer import YjsPeer, YjsPeers

DOC = "target"


@pytest.fixture
def server(inprocess):
    return inprocess


def text(doc: pycrdt.Doc) -> pycrdt.Text:
    return doc.get("text", type=pycrdt.Text)


def room_text(server: Any) -> str:
    room = server.rooms.get(DOC)
    assert room is not None
    return text_of(room.missing_for(b"\x00"))


async def bystanders_and_offender(server: Any, yjs: YjsPeers) -> tuple[YjsPeer, YjsPeer, YjsPeer]:
    """Two peers who agree on the text 'before', and a synced third peer that is
    about to misbehave."""
    b, c = await yjs.connect(server, DOC), await yjs.connect(server, DOC)
    text(b.doc).insert(0, "before")
    await c.wait_for(lambda: str(text(c.doc)) == "before")
    offender = await yjs.connect(server, DOC)
    await offender.synced()
    assert str(text(offender.doc)) == "before"
    return b, c, offender


async def assert_unharmed(server: Any, yjs: YjsPeers, b: YjsPeer, c: YjsPeer) -> None:
    """Nothing the offender sent reached the document, edits still flow between the
    other peers, and the server still accepts new ones."""
    assert room_text(server) == "before"
    text(b.doc).insert(6, " after")
    await c.wait_for(lambda: str(text(c.doc)) == "before after")
    newcomer = await yjs.connect(server, DOC)
    await newcomer.synced()
    assert str(text(newcomer.doc)) == "before after"
    await server.rooms.get(DOC).flushed()
    _, stored = await state_at(server.store, DOC)
    assert text_of(stored) == "before after"


async def assert_closed_with(offender: YjsPeer, code: int) -> str:
    closed_code, reason = await offender.closed()
    assert closed_code == code, f"closed with {closed_code} {reason!r}, expected {code}"
    return reason or ""


# -- malformed frames ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\x80",
        b"\x00",
        b"\x00\x00\x80",
        b"\x00\x02\x05ab",
        b"\x01\x0a{}",
    ],
    ids=[
        "empty-frame",
        "message-type-unfinished",
        "sync-type-missing",
        "length-unfinished",
        "sync-length-past-end",
        "awareness-length-past-end",
    ],
)
async def test_a_truncated_message_closes_with_4400(server, yjs, frame):
    b, c, offender = await bystanders_and_offender(server, yjs)
    offender.send(frame)
    reason = await assert_closed_with(offender, CloseCode.PROTOCOL_ERROR)
    assert "malformed" in reason
    await assert_unharmed(server, yjs, b, c)


async def test_an_unknown_sync_message_type_closes_with_4400(server, yjs):
    b, c, offender = await bystanders_and_offender(server, yjs)
    offender.send(bytes([0, 7]) + var_bytes(text_update("sneaky")))
    reason = await assert_closed_with(offender, CloseCode.PROTOCOL_ERROR)
    assert "sync message type 7" in reason
    await assert_unharmed(server, yjs, b, c)


async def test_unknown_message_types_are_ignored_and_the_connection_stays_usable(
    server, yjs, caplog
):
    b, c, offender = await bystanders_and_offender(server, yjs)
    offender.send(b"\x02\x00" + var_bytes(b"auth is server to client"))
    offender.send(b"\x07")
    offender.send(b"\xc8\x01 with a body")  # type 200, a two-byte varint
    await offender.synced()  # every frame above was handled, and none closed the socket
    assert offender.connected
    logged = [r.getMessage() for r in caplog.records if r.name == "collab.protocol"]
    for message_type in (2, 7, 200):
        assert any(f"unknown message type {message_type}" in m for m in logged)

    await assert_unharmed(server, yjs, b, c)
    text(offender.doc).insert(0, "still editing: ")
    await c.wait_for(lambda: str(text(c.doc)) == "still editing: before after")


# -- invalid content ------------------------------------------------------------------------

INVALID_UPDATES = [b"\x01\x02\x03garbage", text_update("hello", client_id=7)[:-1], b""]
INVALID_UPDATE_IDS = ["garbage", "truncated-valid-update", "empty"]


@pytest.mark.parametrize("update", INVALID_UPDATES, ids=INVALID_UPDATE_IDS)
async def test_an_invalid_update_closes_with_4400_and_changes_nothing(server, yjs, update):
    b, c, offender = await bystanders_and_offender(server, yjs)
    offender.send(create_update_message(update))
    await assert_closed_with(offender, CloseCode.PROTOCOL_ERROR)
    await assert_unharmed(server, yjs, b, c)


@pytest.mark.parametrize("update", INVALID_UPDATES, ids=INVALID_UPDATE_IDS)
async def test_an_invalid_sync_step2_closes_with_4400_and_changes_nothing(server, yjs, update):
    b, c, offender = await bystanders_and_offender(server, yjs)
    offender.send(bytes([0, YSyncMessageType.SYNC_STEP2]) + var_bytes(update))
    await assert_closed_with(offender, CloseCode.PROTOCOL_ERROR)
    await assert_unharmed(server, yjs, b, c)


@pytest.mark.parametrize(
    "update",
    [
        b"\x01\x05\x01" + var_bytes(b"not json"),
        b"\x01\x05\x01" + var_bytes(b'"a string"'),
        b"\x02\x05\x01" + var_bytes(b"{}"),  # announces two clients, carries one
    ],
    ids=["state-not-json", "state-not-an-object", "truncated"],
)
async def test_an_invalid_awareness_update_closes_with_4400(server, yjs, update):
    b, c, offender = await bystanders_and_offender(server, yjs)
    offender.send(create_awareness_message(update))
    await assert_closed_with(offender, CloseCode.PROTOCOL_ERROR)
    await assert_unharmed(server, yjs, b, c)
    assert 5 not in c.awareness.states


# -- frames the socket refuses ----------------------------------------------------------------


async def test_a_text_frame_closes_with_1003(server, yjs):
    b, c, offender = await bystanders_and_offender(server, yjs)
    offender.send('{"type": "update"}')
    reason = await assert_closed_with(offender, CloseCode.UNSUPPORTED_DATA)
    assert "binary" in reason
    await assert_unharmed(server, yjs, b, c)


async def test_a_frame_over_max_frame_bytes_closes_with_1009(settings, start_server, yjs):
    server = await start_server(settings.replace(max_frame_bytes=1024))
    b, c, offender = await bystanders_and_offender(server, yjs)
    offender.send(create_update_message(text_update("x" * 4096)))
    await assert_closed_with(offender, CloseCode.MESSAGE_TOO_BIG)
    await assert_unharmed(server, yjs, b, c)
