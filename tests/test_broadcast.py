"""A room encodes each broadcast once per protocol, not once per peer."""

from __future__ import annotations

import msgpack
import pycrdt
import tornado.websocket

from collab.wire.native import NativeFrames
from collab.wire.yjs import YjsFrames


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
