"""A room encodes each broadcast once per protocol, not once per peer."""

from __future__ import annotations

import pycrdt

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
