"""collab's WebSocket reader (collab.web.reading) on real sockets: frames cut
anywhere or packed many to a write arrive whole and in order, a handler's awaitable
holds the next message back, protocol errors close with their code, and the parts
of Tornado it relies on are still there."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
import struct
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import msgpack
import pytest
import tornado.web
import tornado.websocket
from tornado.iostream import IOStream
from tornado.util import _websocket_mask
from tornado.websocket import WebSocketProtocol13

from collab.errors import CloseCode
from collab.web.frames import FrameParser, Opcode
from collab.web.reading import READ_CHUNK_BYTES, BufferedReadProtocol, SocketReadStream
from collab.wire.native import PROTOCOL_VERSION
from tests.helpers import (
    TIMEOUT_S,
    GatedStore,
    SeqWatcher,
    text_update,
    upgraded_stream,
    wait_until,
)
from tests.test_frames import frame


class Wire:
    """A WebSocket client that writes hand-made bytes, cut where a test says."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, path: str = "/ws", first: bytes = b"") -> Wire:
        return cls(*await upgraded_stream(port, path, first))

    async def write(self, data: bytes, piece_bytes: int | None = None) -> None:
        """Write ``data`` in pieces of ``piece_bytes`` (all at once by default),
        each on its own (no delay: each goes in a segment of its own if it can)."""
        step = piece_bytes or len(data)
        for start in range(0, len(data), step):
            self.writer.write(data[start : start + step])
            await self.writer.drain()

    async def read_frame(self) -> tuple[int, bytes]:
        async with asyncio.timeout(TIMEOUT_S):
            head = await self.reader.readexactly(2)
            length = head[1] & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
            return head[0] & 0x0F, await self.reader.readexactly(length)

    async def read_message(self) -> dict[str, Any]:
        while True:
            opcode, payload = await self.read_frame()
            if opcode == Opcode.BINARY:
                return msgpack.unpackb(payload, raw=False)

    async def close_code(self) -> int:
        while True:
            opcode, payload = await self.read_frame()
            if opcode == Opcode.CLOSE:
                return struct.unpack("!H", payload[:2])[0]

    def close(self) -> None:
        self.writer.close()


def native(message: dict[str, Any], **options: Any) -> bytes:
    return frame(msgpack.packb(message, use_bin_type=True), **options)


HELLO = native({"type": "hello", "version": PROTOCOL_VERSION, "client": "wire"})


@pytest.fixture(autouse=True, params=["socket", "tornado"])
def read_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here on both ways the reader reads: the socket itself (plain TCP)
    and Tornado's reads (as a TLS stream is read)."""
    monkeypatch.setattr(BufferedReadProtocol, "reads_socket", request.param == "socket")
    return request.param


async def test_frames_written_one_byte_at_a_time_arrive_whole_and_in_order(server):
    wire = await Wire.connect(server.port)
    pings = b"".join(native({"type": "ping", "id": i}) for i in range(20))
    await wire.write(HELLO + pings, piece_bytes=1)
    assert (await wire.read_message())["type"] == "welcome"
    assert [(await wire.read_message())["id"] for _ in range(20)] == list(range(20))
    wire.close()


async def test_many_frames_in_one_write_are_all_applied_in_order(server):
    watcher = await SeqWatcher.join(server.port, "watcher", "packed")
    wire = await Wire.connect(server.port)
    doc = "packed"
    updates = [text_update(f"<{i}>", client_id=1000 + i) for i in range(200)]
    frames = [native({"type": "subscribe", "doc": doc})]
    frames += [
        native({"type": "update", "doc": doc, "ref": ref, "update": update})
        for ref, update in enumerate(updates)
    ]
    await wire.write(HELLO + b"".join(frames))
    acks = []
    while len(acks) < len(updates):
        message = await wire.read_message()
        if message["type"] == "ack":
            acks.append(message["ref"])
    assert acks == list(range(200))
    await watcher.wait_for(lambda: all(f"<{i}>" in watcher.text() for i in range(200)))
    await watcher.close()
    wire.close()


async def test_a_long_burst_is_read_in_turns_and_answered_in_order(server):
    # 600 frames count for more than YIELD_AFTER_BYTES: the reader lets the loop
    # run twice on the way, and goes on where it was.
    wire = await Wire.connect(server.port)
    await wire.write(HELLO + b"".join(native({"type": "ping", "id": i}) for i in range(600)))
    assert (await wire.read_message())["type"] == "welcome"
    assert [(await wire.read_message())["id"] for _ in range(600)] == list(range(600))
    wire.close()


@pytest.mark.allow_error_logs  # the fault is logged, with its traceback
async def test_a_fault_in_the_reader_ends_the_connection_and_is_logged(server, monkeypatch, caplog):
    wire = await Wire.connect(server.port)
    await wire.write(HELLO)
    await wire.read_message()

    def broken(self: FrameParser) -> None:
        raise RuntimeError("a bug in the reader")

    monkeypatch.setattr(FrameParser, "next_message", broken)
    await wire.write(native({"type": "ping", "id": "x"}))
    await asyncio.wait_for(wire.reader.read(), TIMEOUT_S)  # the server dropped it
    await wait_until(lambda: not server.sockets)  # and the handler was told
    faults = [r.exc_info[1] for r in caplog.records if r.exc_info]
    assert [str(fault) for fault in faults] == ["a bug in the reader"]
    wire.close()


async def test_a_cancelled_read_ends_the_connection_quietly(server, read_path):
    # As Tornado's accept_connection takes a cancellation: abort, no error logged.
    if read_path == "socket":
        pytest.skip("the socket is read without a future to cancel")
    wire = await Wire.connect(server.port)
    await wire.write(HELLO)
    await wire.read_message()
    (handler,) = server.sockets
    handler.ws_connection.stream._read_future.cancel()
    await asyncio.wait_for(wire.reader.read(), TIMEOUT_S)  # the server dropped it
    await wait_until(lambda: not server.sockets)
    wire.close()


async def test_frames_cut_at_odd_places_across_writes_arrive_in_order(server):
    wire = await Wire.connect(server.port)
    pings = b"".join(native({"type": "ping", "id": "x" * (i * 37 % 300)}) for i in range(60))
    await wire.write(HELLO + pings, piece_bytes=7)
    await wire.write(b"".join(native({"type": "ping", "id": i}) for i in range(60)), 1000)
    assert (await wire.read_message())["type"] == "welcome"
    ids = [(await wire.read_message())["id"] for _ in range(120)]
    assert ids == ["x" * (i * 37 % 300) for i in range(60)] + list(range(60))
    wire.close()


async def test_a_fragmented_message_with_a_ping_inside_is_answered_and_read(server):
    wire = await Wire.connect(server.port)
    body = msgpack.packb({"type": "ping", "id": "fragmented"})
    await wire.write(HELLO)
    assert (await wire.read_message())["type"] == "welcome"
    data = (
        frame(body[:3], fin=False)
        + frame(b"are you there", Opcode.PING)
        + frame(body[3:], Opcode.CONTINUATION)
    )
    await wire.write(data, piece_bytes=3)
    assert await wire.read_frame() == (Opcode.PONG, b"are you there")
    assert (await wire.read_message())["id"] == "fragmented"
    wire.close()


async def test_a_y_websocket_peer_is_read_the_same_way(server):
    wire = await Wire.connect(server.port, "/yjs/cut")
    sync_step1 = bytes([0, 0, 1, 0])  # sync, step 1, an empty state vector
    await wire.write(frame(sync_step1) * 3, piece_bytes=1)
    answers = []
    while len(answers) < 3:
        _, payload = await wire.read_frame()
        if payload[:2] == bytes([0, 1]):  # sync step 2
            answers.append(payload)
    wire.close()


@pytest.mark.allow_error_logs
@pytest.mark.parametrize(
    "bad",
    [
        frame(b"abc", masked=False),
        frame(b"abc", rsv=0x40),
        frame(b"abc", 0x3),
        frame(b"abc", Opcode.CONTINUATION),
        frame(b"abc", Opcode.PING, fin=False),
    ],
    ids=["unmasked", "reserved bit", "reserved opcode", "lone continuation", "fragmented ping"],
)
async def test_a_frame_breaking_rfc_6455_closes_with_1002(server, bad):
    wire = await Wire.connect(server.port)
    await wire.write(HELLO + bad)
    assert (await wire.read_message())["type"] == "welcome"
    assert await wire.close_code() == CloseCode.BAD_FRAME
    wire.close()


async def test_a_message_over_the_limit_closes_with_1009_before_its_payload_is_sent(
    start_server, settings
):
    small = await start_server(settings.replace(max_frame_bytes=64 * 1024))
    wire = await Wire.connect(small.port)
    header = frame(b"", length=64 * 1024 + 1)  # the header alone
    await wire.write(HELLO + header)
    assert (await wire.read_message())["type"] == "welcome"
    assert await wire.close_code() == CloseCode.MESSAGE_TOO_BIG
    wire.close()


async def test_a_close_frame_is_answered_and_what_follows_it_is_not_read(server):
    wire = await Wire.connect(server.port)
    close = frame(struct.pack("!H", 1000) + b"bye", Opcode.CLOSE)
    await wire.write(HELLO)
    assert (await wire.read_message())["type"] == "welcome"
    await wire.write(close + native({"type": "ping", "id": "after"}))
    assert await wire.read_frame() == (Opcode.CLOSE, struct.pack("!H", 1000))
    assert await wire.reader.read() == b""  # closed, and no pong for the ping after
    wire.close()


# -- a handler's awaitable holds the next message back -----------------------------------


class Holding(tornado.websocket.WebSocketHandler):
    """Records messages; the first one's handling waits for ``release``; says
    ``all N`` once ``expected`` messages came."""

    def initialize(
        self,
        seen: list[bytes],
        first: asyncio.Event,
        release: asyncio.Future[None],
        expected: int = 3,
        handlers: list[Holding] | None = None,
    ) -> None:
        self.seen, self.first, self.release = seen, first, release
        self.expected = expected
        if handlers is not None:
            handlers.append(self)

    def get_websocket_protocol(self) -> Any:
        protocol = super().get_websocket_protocol()
        return BufferedReadProtocol(self, False, protocol.params)  # type: ignore[union-attr]

    def on_message(self, message: str | bytes) -> Any:
        self.seen.append(message)  # type: ignore[arg-type]
        if len(self.seen) == 1:
            self.first.set()
            return self.release
        if len(self.seen) == self.expected:
            self.write_message(b"all %d" % self.expected, binary=True)
        return None


async def test_no_message_is_dispatched_while_the_previous_ones_handling_is_awaited():
    seen: list[bytes] = []
    first = asyncio.Event()
    release: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    options = {"seen": seen, "first": first, "release": release}
    app = tornado.web.Application([(r"/", Holding, options)])
    server = app.listen(0, "127.0.0.1")
    try:
        port = next(iter(server._sockets.values())).getsockname()[1]
        wire = await Wire.connect(port, "/")
        await wire.write(frame(b"one") + frame(b"two") + frame(b"three"))  # one write
        await wire.write(frame(b"ping", Opcode.PING))
        await asyncio.wait_for(first.wait(), TIMEOUT_S)
        # Nothing after the first message is read, pings included, until it is handled.
        for _ in range(20):
            await asyncio.sleep(0)
        assert seen == [b"one"]
        release.set_result(None)
        assert await wire.read_frame() == (Opcode.BINARY, b"all 3")
        assert await wire.read_frame() == (Opcode.PONG, b"ping")
        assert seen == [b"one", b"two", b"three"]
        wire.close()
    finally:
        server.stop()


async def test_while_a_message_is_held_a_fast_writer_is_held_back_by_its_own_socket():
    # Nothing is dispatched meanwhile, and the socket is read no further than one
    # chunk into the stream's buffer: the rest waits in the peer's socket.
    seen: list[bytes] = []
    first = asyncio.Event()
    release: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    handlers: list[Holding] = []
    count = 2000
    options = {
        "seen": seen,
        "first": first,
        "release": release,
        "expected": 1 + count,
        "handlers": handlers,
    }
    app = tornado.web.Application([(r"/", Holding, options)])
    server = app.listen(0, "127.0.0.1")
    try:
        port = next(iter(server._sockets.values())).getsockname()[1]
        wire = await Wire.connect(port, "/")
        await wire.write(frame(b"first"))
        await asyncio.wait_for(first.wait(), TIMEOUT_S)
        protocol = handlers[0].ws_connection
        payloads = [b"%08d" % i + b"." * 992 for i in range(count)]
        wire.writer.write(b"".join(frame(payload) for payload in payloads))  # 2 MB
        await wait_until(lambda: protocol.stream._read_buffer_size > 0)
        for _ in range(100):  # time enough to read on, were it to
            await asyncio.sleep(0)
        taken = protocol._wire_bytes_in + protocol.stream._read_buffer_size
        assert taken <= len(frame(b"first")) + READ_CHUNK_BYTES
        assert seen == [b"first"]
        release.set_result(None)  # the held message is done: the rest arrives, in order
        assert await wire.read_frame() == (Opcode.BINARY, b"all %d" % (1 + count))
        assert seen == [b"first", *payloads]
        wire.close()
    finally:
        server.stop()


# -- how a connection ends while the reader waits -----------------------------------------


@pytest.mark.parametrize("path", ["/ws", "/yjs/flood"])
async def test_a_flooding_socket_closed_for_its_rate_leaves_the_server_once_it_is_gone(
    settings, start_server, path
):
    # Nothing more is read from a flood (its connection's _stop_reading) until the
    # handler is told that the socket closed.
    server = await start_server(settings.replace(rate_messages_per_s=50, rate_messages_burst=100))
    if path == "/ws":
        wire = await Wire.connect(server.port)
        await wire.write(HELLO)
        assert (await wire.read_message())["type"] == "welcome"
        flood = [native({"type": "ping", "id": i}) for i in range(500)]
    else:
        wire = await Wire.connect(server.port, path)
        flood = [frame(b"\x64")] * 500  # a message type y-websocket ignores
    await wire.write(b"".join(flood))
    assert await wire.close_code() == CloseCode.POLICY_VIOLATION
    wire.close()
    await wait_until(lambda: not server.sockets)


class Stopping(NamedTuple):
    """A server shutting down, held back by an update its store has not taken,
    and the peer that sent it (its handler, and the gate that lets the store on)."""

    server: Any
    wire: Wire
    handler: Any
    store: GatedStore


@contextlib.asynccontextmanager
async def shutting_down(tmp_path, settings, start_server) -> AsyncIterator[Stopping]:
    store = GatedStore(tmp_path / "gated.db")
    server = await start_server(settings, store)
    wire = await Wire.connect(server.port)
    await wire.write(HELLO + native({"type": "subscribe", "doc": "d"}))
    await wire.write(native({"type": "update", "doc": "d", "ref": 1, "update": text_update("a")}))
    await wait_until(lambda: server.rooms.writer.queued > 0)
    stop = asyncio.ensure_future(server.stop())  # waits for the gated append
    try:
        await wait_until(lambda: server.stopping)
        (handler,) = server.sockets
        yield Stopping(server, wire, handler, store)
    finally:
        store.gate.set()
        await stop
        wire.close()


async def test_a_socket_paused_by_a_shutdown_leaves_the_server_when_its_peer_goes(
    tmp_path, settings, start_server
):
    async with shutting_down(tmp_path, settings, start_server) as stopping:
        await stopping.wire.write(native({"type": "ping", "id": "late"}))
        await wait_until(lambda: stopping.handler._paused is not None)  # read; reading stopped
        stopping.wire.close()  # the peer goes while its socket is paused
        await wait_until(lambda: not stopping.server.sockets)


async def test_a_socket_paused_by_a_shutdown_reads_the_answer_to_its_close_and_closes(
    tmp_path, settings, start_server
):
    async with shutting_down(tmp_path, settings, start_server) as stopping:
        # Not when Tornado gives up waiting for the answer (5 s): clients reconnect at once.
        wire, handler = stopping.wire, stopping.handler
        await wire.write(native({"type": "ping", "id": "late"}))
        await wait_until(lambda: handler._paused is not None)  # read; reading stopped
        stopping.store.gate.set()
        assert await wire.close_code() == CloseCode.SERVICE_RESTART
        await wire.write(frame(struct.pack("!H", 1000), Opcode.CLOSE))  # the answer
        assert await asyncio.wait_for(wire.reader.read(), TIMEOUT_S) == b""
        assert handler.close_code == 1000  # the answer was read: no abort


async def test_a_message_after_a_shutdowns_close_frame_does_not_hold_back_its_answer(
    tmp_path, settings, start_server
):
    async with shutting_down(tmp_path, settings, start_server) as stopping:
        wire = stopping.wire
        stopping.store.gate.set()
        assert await wire.close_code() == CloseCode.SERVICE_RESTART
        # Sent before the peer saw the close, as an editor's next keystroke is.
        await wire.write(native({"type": "ping", "id": "late"}))
        await wire.write(frame(struct.pack("!H", 1000), Opcode.CLOSE))  # the answer
        assert await asyncio.wait_for(wire.reader.read(), TIMEOUT_S) == b""
        assert stopping.handler.close_code == 1000  # the answer was read: no abort after 5 s


@pytest.mark.parametrize(
    ("length", "piece"),
    [(1024 * 1024, b"x"), (60 * 1024, b"xy")],
    ids=["1-MiB-frame-by-the-byte", "60-KiB-frame-by-two-bytes"],
)
async def test_a_large_frame_dripped_byte_by_byte_costs_the_server_about_its_size(
    server, length, piece
):
    # Slowloris: each piece of a frame under way arrives, and is read, alone (a frame
    # under 64 KiB is read through Tornado's partial reads, piece by piece, too).
    wire = await Wire.connect(server.port)
    await wire.write(HELLO)
    assert (await wire.read_message())["type"] == "welcome"
    await wire.write(frame(b"", length=length))  # the header: its payload is awaited
    dripped = 8192
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(dripped // len(piece)):
            wire.writer.write(piece)  # sent at once: nothing is queued before it
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 2 * dripped + 32 * 1024
    wire.close()


async def test_frames_sent_with_the_upgrade_request_are_read_after_it(server):
    # A client that does not wait for the answer: what follows its request is read
    # with it, before the stream is the WebSocket's.
    pings = b"".join(native({"type": "ping", "id": i}) for i in range(50))
    wire = await Wire.connect(server.port, first=HELLO + pings)
    assert (await wire.read_message())["type"] == "welcome"
    assert [(await wire.read_message())["id"] for _ in range(50)] == list(range(50))
    wire.close()


class EachWaits(tornado.websocket.WebSocketHandler):
    """Every message's handling waits for a future of its own; ``closed`` is set
    once the handler is told the connection ended."""

    def initialize(self, waits: list[asyncio.Future[None]], closed: asyncio.Event) -> None:
        self.waits, self.closed = waits, closed

    def get_websocket_protocol(self) -> Any:
        protocol = super().get_websocket_protocol()
        return BufferedReadProtocol(self, False, protocol.params)  # type: ignore[union-attr]

    def on_message(self, message: str | bytes) -> Any:
        self.waits.append(asyncio.get_running_loop().create_future())
        EachWaits.last = self
        return self.waits[-1]

    def on_close(self) -> None:
        self.closed.set()

    last: EachWaits | None = None


async def test_a_peer_gone_while_a_message_read_during_a_wait_is_handled_is_noticed():
    waits: list[asyncio.Future[None]] = []
    closed = asyncio.Event()
    app = tornado.web.Application([(r"/", EachWaits, {"waits": waits, "closed": closed})])
    server = app.listen(0, "127.0.0.1")
    try:
        port = next(iter(server._sockets.values())).getsockname()[1]
        wire = await Wire.connect(port, "/")
        await wire.write(frame(b"one"))
        await wait_until(lambda: len(waits) == 1)
        await wire.write(frame(b"two"))
        stream = EachWaits.last.ws_connection.stream  # type: ignore[union-attr]
        await wait_until(lambda: stream._read_buffer_size > 0)  # read while "one" waits
        waits[0].set_result(None)  # "two" is taken from the buffer and waits in turn
        await wait_until(lambda: len(waits) == 2)
        wire.close()  # the peer goes while "two" is still being handled
        await asyncio.wait_for(closed.wait(), TIMEOUT_S)
        assert not waits[1].done()
    finally:
        server.stop()


# -- what is relied on in Tornado -------------------------------------------------------


def test_the_parts_of_tornado_the_reader_relies_on_are_still_there():
    """collab.web.reading overrides WebSocketProtocol13._receive_frame_loop and calls
    these; if this fails, Tornado changed under it: read its new reader first."""
    assert list(inspect.signature(WebSocketProtocol13.__init__).parameters) == [
        "self",
        "handler",
        "mask_outgoing",
        "params",
    ]
    assert inspect.iscoroutinefunction(WebSocketProtocol13._receive_frame_loop)
    assert list(inspect.signature(WebSocketProtocol13._handle_message).parameters) == [
        "self",
        "opcode",
        "data",
    ]
    for name in ("_abort", "close", "_run_callback"):
        assert callable(getattr(WebSocketProtocol13, name))
    protocol = WebSocketProtocol13(
        None,  # type: ignore[arg-type]
        False,
        tornado.websocket._WebSocketParams(max_message_size=10),
    )
    assert protocol.params.max_message_size == 10
    for name in ("_decompressor", "_wire_bytes_in", "client_terminated", "close_code"):
        assert hasattr(protocol, name), name
    assert _websocket_mask(b"\x01\x02\x03\x04", b"\x01\x02\x03\x04\x05") == b"\0\0\0\0\x04"
    # The read loop's entry, and its end: on_ws_connection_close after the loop.
    source = inspect.getsource(WebSocketProtocol13._accept_connection)
    assert "await self._receive_frame_loop()" in source
    source = inspect.getsource(WebSocketProtocol13._receive_frame_loop)
    assert "on_ws_connection_close" in source
    # The reader waits on the futures reads return (callbacks, not awaits).
    assert not inspect.iscoroutinefunction(IOStream.read_bytes)
    # SocketReadStream: the event handler reads through _handle_read and keeps
    # watching while reading() says so; an idle stream reads once into its buffer.
    source = inspect.getsource(IOStream._handle_events)
    assert "self._handle_read()" in source and "if self.reading():" in source
    assert "self._read_buffer_size == 0" in source
    source = inspect.getsource(IOStream._read_to_buffer_loop)
    assert "elif self.reading():" in source and "target_bytes = 0" in source
    for name in ("_add_io_state", "_consume", "set_close_callback", "reading", "_handle_read"):
        assert callable(getattr(IOStream, name)), name


async def test_collabs_handlers_read_with_the_buffered_reader(server, read_path):
    wire = await Wire.connect(server.port)
    await wire.write(HELLO)
    await wire.read_message()
    (handler,) = server.sockets
    assert type(handler.ws_connection) is BufferedReadProtocol
    stream_type = SocketReadStream if read_path == "socket" else IOStream
    assert type(handler.ws_connection.stream) is stream_type
    wire.close()


async def test_a_stream_closed_under_the_reader_ends_the_connection(server):
    wire = await Wire.connect(server.port)
    await wire.write(HELLO)
    await wire.read_message()
    (handler,) = server.sockets
    handler.ws_connection.stream.close()  # as a failed write closes it
    await wait_until(lambda: not server.sockets)  # the handler was told
    assert await asyncio.wait_for(wire.reader.read(), TIMEOUT_S) == b""
    wire.close()


async def test_a_reset_connection_ends_quietly(server):
    wire = await Wire.connect(server.port)
    await wire.write(HELLO)
    await wire.read_message()
    sock = wire.writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    wire.writer.transport.abort()  # an RST, not a FIN
    await wait_until(lambda: not server.sockets)
