"""A room encodes each broadcast once per protocol, not once per peer, and the
socket handler writes what it is given whole and in few writes (real sockets)."""

from __future__ import annotations

import msgpack
import pycrdt
import pytest
import tornado.websocket

from collab.wire.native import NativeFrames
from collab.wire.yjs import YjsFrames
from tests.helpers import SeqWatcher, appends


@pytest.mark.inprocess  # the room's rule: no socket needed
async def test_an_update_is_encoded_once_per_protocol_whatever_the_number_of_peers(
    server, connect, yjs, monkeypatch
):
    encoded: list[str] = []
    for codec, name in ((NativeFrames, "native"), (YjsFrames, "yjs")):
        original = codec.update_frame

        def counting(self, doc, seq, update, original=original, name=name):
            encoded.append(name)
            return original(self, doc, seq, update)

        monkeypatch.setattr(codec, "update_frame", counting)

    writer = await (await connect()).subscribe("fanout")
    natives = [await (await connect()).subscribe("fanout") for _ in range(5)]
    peers = [await yjs.connect(server, "fanout") for _ in range(5)]

    writer.doc.get("text", type=pycrdt.Text).insert(0, "once")
    for remote in natives:
        await remote.wait_for(
            lambda remote=remote: str(remote.doc.get("text", type=pycrdt.Text)) == "once"
        )
    for peer in peers:
        await peer.wait_for(lambda peer=peer: str(peer.doc.get("text", type=pycrdt.Text)) == "once")
    assert sorted(encoded) == ["native", "yjs"]


async def test_frames_written_past_tornado_reach_peers_whole(server, raw):
    # collab.web.sockets writes binary frames to the stream itself, reading Tornado
    # attributes that are not public API: this fails when Tornado changes them.
    peers = [await raw() for _ in range(3)]
    for peer in peers:
        await peer.hello()
    handlers = list(server.sockets)
    assert handlers
    for handler in handlers:
        protocol = handler.ws_connection
        assert isinstance(protocol, tornado.websocket.WebSocketProtocol13)
        assert protocol._compressor is None
        assert isinstance(protocol._wire_bytes_out, int)
        assert isinstance(protocol._message_bytes_out, int)
        assert protocol.stream is not None
    for size in (10, 125, 126, 65535, 65536, 200_000):  # each length encoding
        payload = msgpack.packb({"type": "pong", "id": "x" * size}, use_bin_type=True)
        for handler in handlers:
            handler.send(payload)
        for peer in peers:
            assert await peer.recv_bytes() == payload


def count_stream_writes(handler, monkeypatch) -> list[int]:
    """Record the size of every write the handler makes to its socket."""
    sizes: list[int] = []
    original = handler._write

    def write(stream, data):
        sizes.append(len(data))
        return original(stream, data)

    monkeypatch.setattr(handler, "_write", write)
    return sizes


async def test_a_commit_of_many_updates_reaches_each_peer_in_a_few_writes_in_seq_order(
    server, monkeypatch
):
    # 200 updates sent at once are stored in a few commits; each commit's updates
    # (and acks) go to a peer as one socket write, not one write per update.
    writer = await SeqWatcher.join(server.port, "writer", "batched")
    reader = await SeqWatcher.join(server.port, "reader", "batched")
    other = await SeqWatcher.join(server.port, "other", "batched")
    try:
        reader_handler = next(h for h in server.sockets if h.connection.client == "reader")
        writer_handler = next(h for h in server.sockets if h.connection.client == "writer")
        reader_writes = count_stream_writes(reader_handler, monkeypatch)
        writer_writes = count_stream_writes(writer_handler, monkeypatch)
        for i, update in enumerate(appends(1, 200)):
            writer.send(i, update)
        for i, update in enumerate(appends(2, 20)):
            other.send(i, update)
        for peer in (writer, reader, other):
            await peer.wait_for(lambda p=peer: p.seqs[-1] == 220)
        # Every seq once, in order, acks and updates alike.
        for peer in (writer, reader, other):
            assert peer.seqs == list(range(221)), peer.seqs
        assert reader.text() == writer.text() == other.text()
        assert len(reader_writes) < 220 / 4, reader_writes
        assert len(writer_writes) < 220 / 4, writer_writes  # its 200 acks, the other's 20
    finally:
        for peer in (writer, reader, other):
            await peer.close()


async def test_messages_for_a_peer_that_reads_slowly_gather_into_few_writes(
    server, raw, monkeypatch
):
    peer = await raw()
    await peer.hello()
    (handler,) = server.sockets
    writes = count_stream_writes(handler, monkeypatch)
    payloads = [
        msgpack.packb({"type": "pong", "id": f"{i}:" + "x" * 40_000}, use_bin_type=True)
        for i in range(300)
    ]
    for payload in payloads:  # 12 MB, far more than the socket buffers take at once
        handler.send(payload)
    received = [await peer.recv_bytes() for _ in payloads]
    assert received == payloads  # whole, in order
    # Once the socket was full, later messages waited in the outbox and went out
    # together when the write before them completed.
    assert len(writes) < len(payloads) / 2, len(writes)
    assert sum(writes) == sum(len(p) + 4 for p in payloads)  # 4-byte headers (126..65535)
    assert handler._unsent_bytes == 0
