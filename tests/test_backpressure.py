"""A peer that stops reading is not given unbounded memory: once it falls
``outbound_queue_bytes`` behind it is closed with 1013 and reconnects to resync,
while everyone else keeps working. A peer that writes faster than the store takes
its updates is not read further while the write queue is more than half full."""

from __future__ import annotations

import asyncio

import pycrdt
import pytest

from collab.errors import CloseCode
from collab.wire import yjs as yjs_protocol
from tests.conftest import ws_url
from tests.helpers import GatedStore, RawPeer, SilentPeer, text_update, wait_until


@pytest.mark.parametrize("path", ["/ws", "/yjs/large"])
async def test_a_large_update_that_fills_the_write_queue_holds_its_socket_until_it_drains(
    tmp_path, start_server, settings, path
):
    # An update this large is checked on a thread and joins the queue only after:
    # the socket is held by the queue as it is then, not as it was when the update
    # was read (half empty, which let the peer's next messages in).
    store = GatedStore(tmp_path / "gated.db")
    limit = 64 * 1024
    server = await start_server(
        settings.replace(max_frame_bytes=limit, write_queue_bytes=limit), store
    )
    peer = await RawPeer.connect(ws_url(server, path))
    update = text_update("x" * (limit * 2 // 3), client_id=1)
    try:
        if path == "/ws":
            await peer.hello()
            await peer.subscribe("large")
            peer.send({"type": "update", "doc": "large", "ref": 1, "update": update})
        else:
            peer.send_bytes(yjs_protocol.sync_update(update))
        await wait_until(lambda: server.rooms.writer.queued_bytes > limit // 2)
        (handler,) = server.sockets
        await asyncio.sleep(0.05)  # the loop's turn: the check's hold would end now
        assert handler._held  # not read: the queue is more than half full
        store.gate.set()
        await wait_until(lambda: not handler._held)
        if path == "/ws":
            assert (await peer.recv_type("ack"))["ref"] == 1
    finally:
        store.gate.set()
        peer.close()


async def test_a_peer_that_stops_reading_is_closed_with_1013(start_server, settings, connect):
    server = await start_server(
        settings.replace(outbound_queue_bytes=512 * 1024, sync_chunk_bytes=128 * 1024)
    )
    writer, reader = await connect(server), await connect(server)
    w, r = await writer.subscribe("flood"), await reader.subscribe("flood")

    stalled = await SilentPeer.connect(server.port)
    stalled.send({"type": "hello", "version": 1, "client": "stalled"})
    stalled.send({"type": "subscribe", "doc": "flood"})
    await wait_until(lambda: len(server.rooms.get("flood").sessions) == 3)
    handler = next(h for h in server.sockets if h.connection.client == "stalled")

    text = w.doc.get("text", type=pycrdt.Text)
    received = r.doc.get("text", type=pycrdt.Text)
    chunk = "x" * 64 * 1024
    for _ in range(400):  # up to 26 MB, far more than the socket buffers hold
        text.insert(len(text), chunk)
        # Paced by the reader that keeps up: only the stalled peer falls behind.
        await r.wait_for(lambda: len(str(received)) == len(str(text)))
        if handler.ws_connection is None or handler.ws_connection.is_closing():
            break
    await wait_until(lambda: handler.ws_connection is None or handler.ws_connection.is_closing())
    # Reading again, the peer finds the close frame after what was already queued
    # (Tornado gives it 5 s to read up before dropping the socket).
    assert await stalled.read_close_code() == CloseCode.TRY_AGAIN_LATER

    # The others are unaffected.
    text.insert(0, "still working")
    await w.flushed()
    await r.wait_for(lambda: str(received).startswith("still working"))
    stalled.close()


async def test_a_document_larger_than_the_bound_can_still_be_opened(
    start_server, settings, connect, yjs
):
    server = await start_server(
        settings.replace(outbound_queue_bytes=64 * 1024, sync_chunk_bytes=16 * 1024)
    )
    writer = await connect(server)
    w = await writer.subscribe("big")
    w.doc.get("text", type=pycrdt.Text).insert(0, "y" * 300_000)
    await w.flushed()
    # The sync answer is ~300 KB, over the bound: on /ws it comes in parts, each sent
    # once most of the one before is written.
    reader = await connect(server)
    r = await reader.subscribe("big")
    assert len(str(r.doc.get("text", type=pycrdt.Text))) == 300_000
    # On /yjs it is one message, sent since nothing is queued before it.
    peer = await yjs.connect(server, "big")
    await peer.wait_for(lambda: len(str(peer.doc.get("text", type=pycrdt.Text))) == 300_000)
