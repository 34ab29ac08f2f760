"""An abusive client, run as its own process by tests/test_security_fair_use.py (so
that making the flood costs the server's event loop nothing): for ``seconds`` it
opens sockets to a document and floods each, as fast as it can write, with
garbage frames, awareness updates and valid updates in turn, reconnecting after
every close. Prints what happened as one JSON line.

    python -m tests.flooder ws://127.0.0.1:PORT DOC SECONDS

``FLOOD_KINDS=garbage,awareness`` (say) floods with those kinds only.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time

import msgpack
import pycrdt
from tornado.httpclient import HTTPClientError
from tornado.iostream import StreamClosedError
from tornado.websocket import websocket_connect

from collab.wire.yformat import AwarenessEntry, encode_awareness_update

FRAMES_PER_SOCKET = 5000
UPDATES = 30_000  # valid updates in all (each socket sends the next ones)


def _appends(client_id: int, count: int) -> list[bytes]:
    """``count`` one-character appends by one Yjs client, each after the one before."""
    doc = pycrdt.Doc(client_id=client_id)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    text = doc.get("text", type=pycrdt.Text)
    for i in range(count):
        text.insert(i, "x")
    return updates


class Frames:
    """Every kind of flood, made once (making them must not cost the server's
    machine more than sending them): ``take(kind)`` gives the next socket's worth."""

    def __init__(self, doc: str) -> None:
        junk = [os.urandom(random.randint(1, 64)) for _ in range(100)]
        junk.append(msgpack.packb({"type": "nonsense", "doc": doc}))
        self.garbage = [junk[i % len(junk)] for i in range(FRAMES_PER_SOCKET)]
        client = random.randint(1, 2**31)
        self.awareness = [
            msgpack.packb(
                {
                    "type": "awareness",
                    "doc": doc,
                    "update": encode_awareness_update([AwarenessEntry(client, i + 1, {"i": i})]),
                }
            )
            for i in range(FRAMES_PER_SOCKET)
        ]
        # Valid updates, new to the document each time: one client's appends, in order.
        self.updates = [
            msgpack.packb({"type": "update", "doc": doc, "ref": i + 1, "update": u})
            for i, u in enumerate(_appends(random.randint(1, 2**31), UPDATES))
        ]
        self._next_update = 0

    def take(self, kind: str) -> list[bytes]:
        if kind == "garbage":
            return self.garbage
        if kind == "awareness":
            return self.awareness
        start = self._next_update
        self._next_update = min(len(self.updates), start + FRAMES_PER_SOCKET)
        return self.updates[start : self._next_update]


async def flood(url: str, doc: str, seconds: float) -> dict[str, object]:
    made = Frames(doc)
    deadline = time.monotonic() + seconds
    closes: dict[str, int] = {}
    sent = 0
    kinds = tuple(os.environ.get("FLOOD_KINDS", "garbage,awareness,updates").split(","))
    turn = 0
    while time.monotonic() < deadline:
        kind = kinds[turn % len(kinds)]
        turn += 1
        batch = made.take(kind)
        try:
            ws = await websocket_connect(url)
        except (OSError, HTTPClientError, StreamClosedError) as exc:
            key = f"{kind}:refused {type(exc).__name__}"
            closes[key] = closes.get(key, 0) + 1
            await asyncio.sleep(0.05)
            continue
        ws.write_message(msgpack.packb({"type": "hello", "version": 1}), binary=True)
        ws.write_message(msgpack.packb({"type": "subscribe", "doc": doc}), binary=True)
        for frame in batch:
            if ws.protocol is None or ws.protocol.is_closing():
                break
            ws.write_message(frame, binary=True)
            sent += 1
        # Read whatever comes back until the server closes (or the time is up).
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = await asyncio.wait_for(ws.read_message(), left)
            except TimeoutError:
                break
            if message is None:
                break
        key = f"{kind}:{ws.close_code}"
        closes[key] = closes.get(key, 0) + 1
        ws.close()
    return {"sent": sent, "closes": closes}


def main() -> None:
    url, doc, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    print("ready", flush=True)  # (after the imports; the frames are made next)
    print(json.dumps(asyncio.run(flood(url, doc, seconds))), flush=True)


if __name__ == "__main__":
    main()
