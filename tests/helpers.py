"""Test helpers: a bare WebSocket peer for hand-made frames, and doc utilities."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import socket
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import msgpack
import pycrdt
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from tornado.websocket import WebSocketClientConnection, websocket_connect

from collab.store import AppendResult, NewUpdate
from collab.store.sqlite import SQLiteStore
from collab.wire.native import PROTOCOL_VERSION

TIMEOUT_S = 10.0


class NativePeer:
    """A native-protocol client that sends exactly the frames a test gives it; its
    transport (a socket, or in-process: tests/inprocess.py) is the subclass's."""

    def send_bytes(self, data: bytes) -> None:
        raise NotImplementedError

    def send_text(self, text: str) -> None:
        raise NotImplementedError

    async def recv_bytes(self, timeout_s: float = TIMEOUT_S) -> bytes | None:
        """The next frame, or None once the server closed the connection."""
        raise NotImplementedError

    @property
    def close_state(self) -> tuple[int | None, str | None]:
        """The close code and reason (None, None while open)."""
        raise NotImplementedError

    def send(self, message: dict[str, Any]) -> None:
        self.send_bytes(msgpack.packb(message, use_bin_type=True))

    async def recv(self, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
        frame = await self.recv_bytes(timeout_s)
        assert frame is not None, "connection closed: {} {}".format(*self.close_state)
        return msgpack.unpackb(frame, raw=False)

    async def recv_type(self, kind: str, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
        """Skip messages until one of type ``kind`` arrives."""
        while True:
            message = await self.recv(timeout_s)
            if message["type"] == kind:
                return message

    async def hello(self, **fields: Any) -> dict[str, Any]:
        self.send({"type": "hello", "version": PROTOCOL_VERSION, **fields})
        return await self.recv()

    async def subscribe(self, doc: str, sv: bytes | None = None, **fields: Any) -> dict[str, Any]:
        """Subscribe and return the sync answer; one sent in parts is put back
        together (``update`` whole, the other fields of the last part)."""
        message: dict[str, Any] = {"type": "subscribe", "doc": doc, **fields}
        if sv is not None:
            message["sv"] = sv
        self.send(message)
        sync = await self.recv_type("sync")
        if sync.get("parts", 1) > 1:
            parts = [sync["update"]]
            while len(parts) < sync["parts"]:
                sync = await self.recv_type("sync")
                parts.append(sync["update"])
            sync = {**sync, "update": b"".join(parts)}
        return sync

    async def barrier(self, timeout_s: float = TIMEOUT_S) -> list[dict[str, Any]]:
        """Send a ping and read up to its pong; return the messages read before it.
        The server handles a peer's messages in order and answers a ping as it
        reads it, so by then it has sent whatever it sends as it handles what was
        sent before (not what a task sends later, nor what waits for the store):
        ``assert await peer.barrier() == []`` says that nothing more came, without
        a sleep. For state that tasks change, wait for the state first."""
        return await barrier(self, timeout_s)

    async def closed(self, timeout_s: float = TIMEOUT_S) -> tuple[int | None, str | None]:
        """Read until the server closes; return (close code, reason)."""
        while await self.recv_bytes(timeout_s) is not None:
            pass
        return self.close_state


class RawPeer(NativePeer):
    """A native peer on a real WebSocket."""

    def __init__(self, ws: WebSocketClientConnection) -> None:
        self.ws = ws

    @classmethod
    async def connect(cls, url: str) -> RawPeer:
        ws = await asyncio.wait_for(
            websocket_connect(url, max_message_size=64 * 1024 * 1024), TIMEOUT_S
        )
        return cls(ws)

    def send_bytes(self, data: bytes) -> None:
        self.ws.write_message(data, binary=True)

    def send_text(self, text: str) -> None:
        self.ws.write_message(text)

    async def recv_bytes(self, timeout_s: float = TIMEOUT_S) -> bytes | None:
        frame = await asyncio.wait_for(self.ws.read_message(), timeout_s)
        assert frame is None or isinstance(frame, bytes), f"unexpected text frame {frame!r}"
        return frame

    @property
    def close_state(self) -> tuple[int | None, str | None]:
        return self.ws.close_code, self.ws.close_reason

    def close(self) -> None:
        self.ws.close()


def started_servers(io_loop: Any, make: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """For a fixture: ``yield from started_servers(io_loop, make)`` gives the test
    ``await start(settings, store=None, **options)``, a started ``make(...)``; every
    server started so is stopped after the test, the last first."""
    servers: list[Any] = []

    async def start(settings: Any, store: Any = None, **options: Any) -> Any:
        server = make(settings, store, **options)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in reversed(servers):
        io_loop.run_sync(server.stop)


_barriers = itertools.count(1)


async def barrier(peer: Any, timeout_s: float = TIMEOUT_S) -> list[dict[str, Any]]:
    """A native peer's barrier (RawPeer.barrier): the messages before the pong."""
    ping_id = f"barrier-{next(_barriers)}"
    peer.send({"type": "ping", "id": ping_id})
    before: list[dict[str, Any]] = []
    while True:
        message = await peer.recv(timeout_s)
        if message["type"] == "pong" and message.get("id") == ping_id:
            return before
        before.append(message)


def appended_values(count: int, client_id: int) -> tuple[pycrdt.Doc, bytes]:
    """A writer that appended ``count`` values to the Array "values", one transaction
    each, and their updates merged into one (as offline clients and merges send
    them): a run of one-value items, which pycrdt merges at a cost that grows with
    the square of its length."""
    author = pycrdt.Doc(client_id=client_id)
    parts: list[bytes] = []
    author.observe(lambda event: parts.append(event.update))
    values = author.get("values", type=pycrdt.Array)
    for i in range(count):
        values.append(i)
    return author, pycrdt.merge_updates(*parts)


def text_update(content: str, client_id: int | None = None, name: str = "text") -> bytes:
    """A standalone update inserting ``content`` into a root Text."""
    doc: pycrdt.Doc = pycrdt.Doc(client_id=client_id)
    doc.get(name, type=pycrdt.Text).insert(0, content)
    return doc.get_update()


def text_of(update_or_doc: bytes | pycrdt.Doc, name: str = "text") -> str:
    doc = update_or_doc if isinstance(update_or_doc, pycrdt.Doc) else pycrdt.Doc()
    if isinstance(update_or_doc, bytes):
        doc.apply_update(update_or_doc)
    return str(doc.get(name, type=pycrdt.Text))


async def wait_until(predicate: Callable[[], bool], timeout_s: float = TIMEOUT_S) -> None:
    """Poll a condition the server exposes no event for (e.g. a room unloading)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.01)


class Clock:
    """Unix seconds that move only when a test moves them: a server's ``clock``
    (CollabServer), so that a test of time passing does not wait for it."""

    def __init__(self, now_s: float | None = None) -> None:
        self.now_s = time.time() if now_s is None else now_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


async def upgraded_stream(
    port: int, path: str = "/ws", first: bytes = b""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A bare TCP stream (no Nagle delay) upgraded to a WebSocket on ``path``; what
    is written and read on it from then on is up to the caller. ``first`` goes in
    the request's write, before the answer (a client that does not wait for it)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        + first
    )
    response = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT_S)
    assert response.startswith(b"HTTP/1.1 101"), response
    return reader, writer


class SilentPeer:
    """A WebSocket client over a bare TCP stream that never answers pings:
    a browser tab whose machine went to sleep."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, path: str = "/ws") -> SilentPeer:
        return cls(*await upgraded_stream(port, path))

    def send(self, message: dict) -> None:
        self.send_frame(msgpack.packb(message, use_bin_type=True))

    def send_frame(self, payload: bytes) -> None:
        """One masked binary frame, as a client must send it."""
        mask = os.urandom(4)
        header = bytes([0x82])  # FIN + binary
        if len(payload) < 126:
            header += bytes([0x80 | len(payload)])
        else:
            header += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(header + mask + masked)

    async def read_close_code(self, timeout_s: float = TIMEOUT_S) -> int:
        """Read (unmasked server) frames until the close frame; return its code."""
        while True:
            head = await asyncio.wait_for(self.reader.readexactly(2), timeout_s)
            length = head[1] & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
            payload = await asyncio.wait_for(self.reader.readexactly(length), timeout_s)
            if head[0] & 0x0F == 0x8:
                return struct.unpack("!H", payload[:2])[0]

    def close(self) -> None:
        self.writer.close()


class SeqWatcher:
    """A raw native peer on one document that notes every seq it is shown (sync,
    updates, acks), in order, and keeps a doc of its own and received updates."""

    def __init__(self, peer: RawPeer, doc: str) -> None:
        self.peer = peer
        self.name = doc
        self.seqs: list[int] = []
        self.doc = pycrdt.Doc()
        self.acks: dict[int, int] = {}
        self.pongs: set[Any] = set()  # ids of the pongs read
        self._reader: asyncio.Task[None] | None = None
        self.changed = asyncio.Event()

    @classmethod
    async def join(cls, port: int, name: str, doc: str) -> SeqWatcher:
        return await cls.over(await RawPeer.connect(f"ws://127.0.0.1:{port}/ws"), name, doc)

    @classmethod
    async def over(cls, peer: Any, name: str, doc: str) -> SeqWatcher:
        """Say hello and subscribe on ``peer`` (a RawPeer, or an in-process one)."""
        await peer.hello(client=name)
        watcher = cls(peer, doc)
        sync = await peer.subscribe(doc)
        watcher.seqs.append(sync["seq"])
        watcher.doc.apply_update(sync["update"])
        watcher._reader = asyncio.ensure_future(watcher._read())
        return watcher

    async def _read(self) -> None:
        while (frame := await self.peer.recv_bytes(3600)) is not None:  # until closed
            message = msgpack.unpackb(frame, raw=False)
            if message["type"] == "update":
                self.seqs.append(message["seq"])
                self.doc.apply_update(message["update"])
            elif message["type"] == "ack":
                self.seqs.append(message["seq"])
                self.acks[message["ref"]] = message["seq"]
            elif message["type"] == "pong":
                self.pongs.add(message.get("id"))
            self.changed.set()

    def send(self, ref: int, update: bytes) -> None:
        self.doc.apply_update(update)  # a client's own edits are in its doc
        self.peer.send({"type": "update", "doc": self.name, "ref": ref, "update": update})

    async def insert(self, ref: int, index: int, text: str) -> int:
        """Insert into the doc's text, send it and return its seq once acknowledged."""
        before = self.doc.get_state()
        self.doc.get("text", type=pycrdt.Text).insert(index, text)
        self.peer.send(
            {"type": "update", "doc": self.name, "ref": ref, "update": self.doc.get_update(before)}
        )
        await self.wait_for(lambda: ref in self.acks)
        return self.acks[ref]

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = TIMEOUT_S) -> None:
        async with asyncio.timeout(timeout_s):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    async def barrier(self, timeout_s: float = TIMEOUT_S) -> None:
        """Ping and wait for the pong: what the server sent before it is read (as
        RawPeer.barrier, whose contract this has)."""
        ping_id = f"barrier-{next(_barriers)}"
        self.peer.send({"type": "ping", "id": ping_id})
        await self.wait_for(lambda: ping_id in self.pongs, timeout_s)

    def text(self) -> str:
        return str(self.doc.get("text", type=pycrdt.Text))

    async def close(self) -> None:
        self.peer.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader


def appends(client_id: int, count: int, start: int = 0) -> list[bytes]:
    """``count`` appends by one Yjs client, each after its previous one; the text
    of append i is ``<client.i>``."""
    doc = pycrdt.Doc(client_id=client_id)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    text = doc.get("text", type=pycrdt.Text)
    for i in range(start + count):
        text.insert(len(str(text)), f"<{client_id}.{i}>")
    return updates[start:]


async def http_get(server: Any, path: str) -> tuple[int, bytes]:
    """``(status, body)`` of a GET on a server of this process, errors included."""
    try:
        response = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{server.port}{path}")
    except HTTPClientError as exc:
        assert exc.response is not None
        return exc.code, exc.response.body
    return response.code, response.body


def _var_uint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def typing_updates(count: int, client_id: int = 7, name: str = "text") -> list[bytes]:
    """``count`` updates of one Yjs client typing into a root Text, one character
    each (``abcdefghij`` over and over), byte for byte what pycrdt makes of it
    (tests check that), written directly: pycrdt takes seconds for 100,000 of them."""
    client = _var_uint(client_id)
    key = name.encode()
    updates = [b"\x01\x01" + client + b"\x00\x04\x01" + _var_uint(len(key)) + key + b"\x01a\x00"]
    for clock in range(1, count):
        char = TYPED[clock % len(TYPED)].encode()
        origin = client + _var_uint(clock - 1)
        updates.append(
            b"\x01\x01" + client + _var_uint(clock) + b"\x84" + origin + b"\x01" + char + b"\x00"
        )
    return updates[:count]


def typing_updates_at(
    places: list[tuple[int, str]], client_id: int = 7, name: str = "text"
) -> list[bytes]:
    """The updates of one Yjs client typing into an empty root Text one character
    per update, at each ``(index, character)`` of ``places`` in turn, byte for byte
    what pycrdt makes of it (tests check that), written directly: pycrdt walks the
    text to each index, 1.6 s of CPU for 20,000 characters typed at random places."""
    client = _var_uint(client_id)
    key = name.encode()
    parent = b"\x01" + _var_uint(len(key)) + key
    order: list[int] = []  # the characters' clocks, in the text's order
    updates = []
    for clock, (index, char) in enumerate(places):
        info = 0x04  # content: a string
        ids = b""
        if index > 0:  # the origin: the character on the left
            info |= 0x80
            ids += client + _var_uint(order[index - 1])
        if index < len(order):  # the right origin: the character on the right
            info |= 0x40
            ids += client + _var_uint(order[index])
        if not ids:
            ids = parent  # no neighbour: the item names its parent
        data = char.encode()
        updates.append(
            b"\x01\x01"
            + client
            + _var_uint(clock)
            + bytes([info])
            + ids
            + _var_uint(len(data))
            + data
            + b"\x00"
        )
        order.insert(index, clock)
    return updates


TYPED = "abcdefghij"


def typed_text(count: int) -> str:
    """The text ``typing_updates(count)`` makes."""
    return (TYPED * (count // len(TYPED) + 1))[:count]


class GatedStore(SQLiteStore):
    """A real SQLite store whose appends wait for ``gate``: a store that has stopped
    taking writes until the test lets it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Event()

    async def append(self, updates: Sequence[NewUpdate]) -> AppendResult:
        await self.gate.wait()
        return await super().append(updates)
