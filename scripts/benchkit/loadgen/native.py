"""A minimal client of collab's native protocol (``/ws``, docs/PROTOCOL.md §1):
hello, subscribe, update, and the acks, updates and errors that come back.

MessagePack frames are built with ``msgpack`` directly and incoming ones decoded
only as far as their type; nothing keeps a CRDT document."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import msgpack

from .. import HOST
from .connection import Connection, connect

# (ref, seq, arrival time) of an ack; (seq, update, arrival time) of another's update.
OnAck = Callable[[int, int, float], None]
OnUpdate = Callable[[int, bytes, float], None]
ERRORS_KEPT = 20  # the first errors are kept for the report; the rest only counted


def native_url(port: int) -> str:
    return f"ws://{HOST}:{port}/ws"


class NativeClient(Connection):
    """One native connection: ``open`` says hello and waits for the welcome;
    ``subscribe`` waits for the document's (last) ``sync`` part. Every ack goes to
    ``on_ack``, every update from another peer to ``on_update``; errors are counted."""

    def __init__(self, ws: Any, on_ack: OnAck, on_update: OnUpdate | None) -> None:
        super().__init__(ws)
        self.on_ack = on_ack
        self.on_update = on_update
        self.errors = 0
        self.first_errors: list[dict[str, Any]] = []
        self._synced: dict[str, asyncio.Event] = {}

    @classmethod
    async def open(
        cls, port: int, label: str, on_ack: OnAck, on_update: OnUpdate | None = None
    ) -> NativeClient:
        ws = await connect(native_url(port))
        await ws.send(msgpack.packb({"type": "hello", "version": 1, "client": label}))
        welcome = msgpack.unpackb(await asyncio.wait_for(ws.recv(), 30))
        if welcome.get("type") != "welcome":
            await ws.close()
            raise RuntimeError(f"bench: no welcome from the server: {welcome}")
        client = cls(ws, on_ack, on_update)
        client.start_reading()
        return client

    async def subscribe(self, doc: str, timeout_s: float = 60.0) -> None:
        synced = self._synced[doc] = asyncio.Event()
        await self.send(msgpack.packb({"type": "subscribe", "doc": doc}))
        await asyncio.wait_for(synced.wait(), timeout_s)

    @staticmethod
    def update_message(doc: str, ref: int, update: bytes) -> bytes:
        return msgpack.packb({"type": "update", "doc": doc, "ref": ref, "update": update})

    async def on_frame(self, frame: bytes, arrived: float) -> None:
        try:
            self._handle(msgpack.unpackb(frame), arrived)
        except msgpack.ExtraData:
            # Several messages in one frame (a server that coalesces them).
            unpacker = msgpack.Unpacker()
            unpacker.feed(frame)
            for message in unpacker:
                self._handle(message, arrived)

    def _handle(self, message: dict[str, Any], arrived: float) -> None:
        kind = message.get("type")
        if kind == "ack":
            self.on_ack(message["ref"], message["seq"], arrived)
        elif kind == "update":
            if self.on_update is not None:
                self.on_update(message["seq"], message["update"], arrived)
        elif kind == "sync":
            if message.get("part", 0) + 1 >= message.get("parts", 1):
                self._synced[message["doc"]].set()
        elif kind == "error":
            self.errors += 1
            if len(self.first_errors) < ERRORS_KEPT:
                self.first_errors.append(message)
