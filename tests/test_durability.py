"""Every acknowledged update survives the server process being killed."""

from __future__ import annotations

import signal
from pathlib import Path

import msgpack
import pycrdt

from tests.helpers import RawPeer
from tests.processes import server_process


async def test_every_acknowledged_update_survives_sigkill(tmp_path: Path):
    store_url = f"sqlite:///{tmp_path}/durable.db"
    source = pycrdt.Doc(client_id=1)
    text = source.get("text", type=pycrdt.Text)
    updates: list[bytes] = []
    source.observe(lambda event: updates.append(event.update))
    for i in range(400):
        text.insert(len(text), f"<{i}>")

    acked: set[int] = set()
    async with server_process(store_url) as server:
        process, port = server.process, server.port
        peer = await RawPeer.connect(f"ws://127.0.0.1:{port}/ws")
        await peer.hello()
        await peer.subscribe("durable")
        for ref, update in enumerate(updates):
            peer.send({"type": "update", "doc": "durable", "ref": ref, "update": update})
        # Kill the server in the middle of the stream: some updates are durable and
        # acknowledged, later ones may be in flight.
        while len(acked) < 150:
            message = await peer.recv()
            if message["type"] == "ack":
                acked.add(message["ref"])
        process.send_signal(signal.SIGKILL)
        await process.wait()
        assert process.returncode == -signal.SIGKILL
        while (frame := await peer.recv_bytes()) is not None:  # acks sent before the kill
            message = msgpack.unpackb(frame)
            if message["type"] == "ack":
                acked.add(message["ref"])
        peer.close()

    async with server_process(store_url) as server:
        port = server.port
        peer = await RawPeer.connect(f"ws://127.0.0.1:{port}/ws")
        await peer.hello()
        sync = await peer.subscribe("durable")
        peer.close()

    restored = pycrdt.Doc()
    restored.apply_update(sync["update"])
    content = str(restored.get("text", type=pycrdt.Text))
    lost = [ref for ref in sorted(acked) if f"<{ref}>" not in content]
    assert not lost, f"acknowledged updates lost after SIGKILL: {lost[:10]}"
    assert sync["seq"] >= len(acked)
    # Updates apply in order here, so what survived is a prefix of what was sent.
    survived = sync["seq"]
    assert content == "".join(f"<{i}>" for i in range(survived))
