"""Tornado WebSocket handlers: thin adapters from socket events to connections.

A handler only translates open / message / close into calls on a connection
object (collab.peers.native, collab.peers.yjs) and offers it a transport:
``send`` with a bound on unsent bytes, ``drained``, and ``close``.

Whether each peer is alive is watched by one task for all sockets
(collab.web.heartbeat), which pings them and aborts those that stay silent.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import struct
import time
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import tornado.iostream
import tornado.websocket
from tornado import httputil
from tornado.iostream import IOStream, StreamClosedError
from tornado.websocket import WebSocketProtocol, WebSocketProtocol13

from collab.errors import CloseCode, CollabError, ProtocolError
from collab.extensions import Request
from collab.names import validate_document_name
from collab.passes import EndOfPass
from collab.peers.native import NativeConnection
from collab.peers.transport import close_reason
from collab.peers.yjs import YjsConnection
from collab.web.access_log import RedactingHandlerMixin
from collab.web.gate import connection_of
from collab.web.reading import BufferedReadProtocol, SocketReadStream
from collab.web.stream_queues import release_idle_queues

if TYPE_CHECKING:
    from collab.app import CollabServer

log = logging.getLogger("collab.access")


# Streams over a plain TCP socket (not TLS), which a write may hand to the socket.
PLAIN_STREAMS = (IOStream, SocketReadStream)

# Entries live for one pass of the event loop; the outboxes hold the same bytes.
FRAME_CACHE_MAX_ENTRIES = 65_536


def _header(size: int) -> bytes:
    """The header of a final, unmasked binary WebSocket frame (RFC 6455 5.2)."""
    if size < 126:
        return struct.pack("!BB", 0x82, size)
    if size <= 0xFFFF:
        return struct.pack("!BBH", 0x82, 126, size)
    return struct.pack("!BBQ", 0x82, 127, size)


class _FrameCache:
    """Frames built in this pass of the event loop, by the identity of what they
    frame: a broadcast hands the same payload (or list of payloads) to every peer,
    and its frames are built once. Entries live until the pass ends, so an id is
    never reused while it is a key (the entry also keeps its object alive)."""

    def __init__(self) -> None:
        self._frames: dict[int, tuple[object, bytes]] = {}
        self._clearing: asyncio.Handle | None = None
        self._clearing_loop: asyncio.AbstractEventLoop | None = None

    def get(self, key: object) -> bytes | None:
        entry = self._frames.get(id(key))
        return entry[1] if entry is not None and entry[0] is key else None

    def put(self, key: object, framed: bytes) -> None:
        if self._clearing is not None and not self._clearing_loop.is_running():  # type: ignore[union-attr]
            self._clear()  # scheduled on a loop that has stopped (tests, embedding)
        if len(self._frames) >= FRAME_CACHE_MAX_ENTRIES:
            return
        if self._clearing is None:
            loop = asyncio.get_running_loop()
            self._clearing = loop.call_soon(self._clear)
            self._clearing_loop = loop
        self._frames[id(key)] = (key, framed)

    def _clear(self) -> None:
        if self._clearing is not None:
            self._clearing.cancel()
        self._frames.clear()
        self._clearing = self._clearing_loop = None


_frames = _FrameCache()


# The sockets with something in their outbox, flushed together as the pass ends (a
# commit of a busy document queues a write to each of its peers).
_flushes = EndOfPass(log)


def _frame(payload: bytes) -> bytes:
    """One binary message as a WebSocket frame, header included."""
    framed = _frames.get(payload)
    if framed is None:
        framed = _header(len(payload)) + payload
        _frames.put(payload, framed)
    return framed


def _frame_all(payloads: list[bytes]) -> bytes:
    """Several binary messages, one frame each, as one string of bytes."""
    framed = _frames.get(payloads)
    if framed is None:
        framed = b"".join([_frame(payload) for payload in payloads])
        _frames.put(payloads, framed)
    return framed


class _ReadOnlyHeaders(httputil.HTTPHeaders):
    """No headers, and none can be set: one instance for every upgraded request."""

    def add(self, name: str, value: str, *, _chars_are_bytes: bool = True) -> None:
        raise TypeError("an upgraded request's headers are gone")

    def __setitem__(self, name: str, value: str) -> None:
        raise TypeError("an upgraded request's headers are gone")

    def __delitem__(self, name: str) -> None:
        raise TypeError("an upgraded request's headers are gone")


def _http_only(name: str) -> Callable[..., Any]:
    """Tornado's ``name`` method, refused once the stream is the WebSocket's (as
    Tornado's own _detach_stream does, with an instance attribute per method)."""
    method = getattr(tornado.websocket.WebSocketHandler, name)

    @functools.wraps(method)
    def guarded(self: SocketHandler, *args: Any, **kwargs: Any) -> Any:
        if self._upgraded:
            raise RuntimeError("Method not supported for Web Sockets")
        return method(self, *args, **kwargs)

    return guarded


# What an upgraded request still shows as its headers and arguments: none, and
# none can be added (see SocketHandler._release_handshake).
_NO_HEADERS = _ReadOnlyHeaders()
_NO_ARGUMENTS: Mapping[str, list[bytes]] = MappingProxyType({})
_NO_FILES: Mapping[str, list[Any]] = MappingProxyType({})


class SocketHandler(RedactingHandlerMixin, tornado.websocket.WebSocketHandler):
    endpoint = ""  # the metrics label: "ws" or "yjs"

    # Slots, not the instance dict: with Tornado's own attributes, a dict past 30
    # keys is no longer shared with the class's and costs each connection 1.5 KiB.
    __slots__ = (
        "_bytes_in",
        "_bytes_out",
        "_closing",
        "_drain_waiters",
        "_flush_queued",
        "_heard",
        "_held",
        "_outbound_limit",
        "_outbox",
        "_paused",
        "_unsent_bytes",
        "_upgraded",
        "_writing",
        "connection",
        "counted_as",
        "server",
    )
    connection: NativeConnection | YjsConnection | None

    def initialize(self, server: CollabServer) -> None:
        self.server = server
        self.connection = None
        # The connection as the address's cap counts it (its stream), kept past
        # _release_handshake, which lets go of the request's HTTP connection.
        self.counted_as = connection_of(self.request)
        self._upgraded = False
        self._unsent_bytes = 0  # in the outbox or written to the stream and not yet sent
        self._outbox: list[bytes] = []  # framed messages not yet handed to the stream
        self._writing = False  # a write to the stream is under way
        self._flush_queued = False  # in _flushes, to be flushed as the pass ends
        self._outbound_limit = server.settings.outbound_queue_bytes
        self._bytes_in, self._bytes_out = server.metrics.socket_bytes[self.endpoint]
        self._drain_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._heard = time.monotonic()  # when the peer last sent anything
        self._held = False  # reading waits for what a message's handling returned
        self._paused: asyncio.Future[None] | None = None  # reading stopped (shutdown)
        # The protocol once the close frame is out (Tornado lets go of it then): until
        # the peer answers, abort() drops it.
        self._closing: tornado.websocket.WebSocketProtocol | None = None
        # Tornado sets these later (_execute, get). Set now, while the first
        # handler is made, they join the attribute names its class's instances
        # share; a handler made before that first one reached them (a burst of
        # connections at start) would otherwise get a dict of its own, 0.8 KiB.
        self._transforms = None
        self.path_args, self.path_kwargs = [], {}
        self.open_args, self.open_kwargs = (), {}

    write = _http_only("write")
    redirect = _http_only("redirect")
    set_header = _http_only("set_header")
    set_cookie = _http_only("set_cookie")
    set_status = _http_only("set_status")
    flush = _http_only("flush")
    finish = _http_only("finish")

    def _detach_stream(self) -> tornado.iostream.IOStream:
        """As Tornado's, which makes the HTTP methods (write, finish...) raise once the
        stream is the WebSocket's by setting seven instance attributes; the methods
        below check one flag instead."""
        self._upgraded = True
        return self.detach()

    def _stopped_meanwhile(self) -> bool:
        """The server stopped while the handshake's hook decided: the socket, never
        counted among the server's, closes as the others did (1012)."""
        if not self.server.stopping:
            return False
        self.close(CloseCode.SERVICE_RESTART, "server restarting; reconnect")
        return True

    def _release_handshake(self) -> None:
        """Once open has read what it needs (the token, the hooks' Request), let go
        of what only the HTTP upgrade used: its connection objects, its request's
        headers and arguments, the answer's headers, Tornado's template namespace
        and the arguments of the call to open, 4-5 KiB an idle connection would
        otherwise keep; and give the stream write queues that hold memory only
        while they hold something. What is read later stays: the method and URL
        (logged with an error), ``remote_ip``, the counted connection
        (``counted_as``). tests/test_idle_memory.py pins it."""
        request = self.request
        request.connection = None
        request.server_connection = None
        request.headers = _NO_HEADERS
        # The query's arguments (the token among them) were read by open.
        request.arguments = request.query_arguments = _NO_ARGUMENTS  # type: ignore[assignment]
        request.body_arguments = _NO_ARGUMENTS  # type: ignore[assignment]
        request.files = _NO_FILES  # type: ignore[assignment]
        if hasattr(request, "_cookies"):  # parsed for a hook's Request
            del request._cookies
        self._headers = _NO_HEADERS
        self._transforms = None
        self.ui = None  # Tornado's template helpers; _break_cycles sets it so too
        self.path_args = self.open_args = ()  # type: ignore[assignment]
        self.path_kwargs = self.open_kwargs = {}
        protocol = self.ws_connection
        if protocol is not None and protocol.stream is not None:
            release_idle_queues(protocol.stream)

    def get_compression_options(self) -> dict[str, Any] | None:
        """permessage-deflate when the setting offers it (Tornado's zlib level 6); the
        cost is a compressor per connection and a compression per peer and frame
        (docs/PERFORMANCE.md has the measurement)."""
        return {} if self.server.settings.websocket_compression == "deflate" else None

    def get_websocket_protocol(self) -> WebSocketProtocol | None:
        """Tornado's protocol, its parameters as Tornado chose them, with a reader
        that parses every frame already received in one pass (collab.web.reading)."""
        protocol = super().get_websocket_protocol()
        if not isinstance(protocol, WebSocketProtocol13):
            return protocol
        return BufferedReadProtocol(self, False, protocol.params)

    def check_origin(self, origin: str) -> bool:
        """Asked by Tornado about a page of another origin (collab.web.sites)."""
        return self.server.sites.origin_trusted(origin)

    # The server's settings, not the application's: the same when collab runs
    # inside another application (collab.embed).
    @property
    def ping_interval(self) -> float | None:
        return 0  # the heartbeat is collab.web.heartbeat's

    @property
    def max_message_size(self) -> int:
        return self.server.settings.max_frame_bytes

    @property
    def remote(self) -> str:
        return self.request.remote_ip or ""

    # -- transport ----------------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        self.send_many([frame])

    def send_many(self, frames: list[bytes]) -> None:
        protocol = self.ws_connection
        if protocol is None or protocol.is_closing():
            return
        if not isinstance(protocol, WebSocketProtocol13) or protocol._compressor is not None:
            self._send_compressed(frames)
            return
        framed = _frame_all(frames) if len(frames) > 1 else _frame(frames[0])
        size = len(framed)
        # The bound applies to a backlog, not to one message: a document's sync
        # answer may alone be larger than the bound and must still get through.
        if self._unsent_bytes and self._unsent_bytes + size > self._outbound_limit:
            self._too_far_behind()
            return
        self._outbox.append(framed)
        self._unsent_bytes += size
        self._bytes_out.inc(size)
        protocol._wire_bytes_out += size
        protocol._message_bytes_out += sum(map(len, frames))
        if not self._writing and not self._flush_queued:
            self._flush_queued = True
            _flushes.call(self._flush_queued_outbox)

    def _flush_queued_outbox(self) -> None:
        if self._flush_queued:  # not flushed meanwhile, nor closed
            self._flush()

    def _flush(self) -> None:
        """Hand what the outbox holds to the socket as one write. Tornado's
        ``write_message`` would wrap every message in a coroutine and a task, and
        write each on its own: with many peers and busy documents, most of the
        server's time. While a write is still under way (a slow peer), messages
        gather in the outbox and go out together when it completes."""
        self._flush_queued = False
        protocol = self.ws_connection
        if not self._outbox or protocol is None:
            return
        data = self._outbox[0] if len(self._outbox) == 1 else b"".join(self._outbox)
        self._outbox.clear()
        self._write(protocol.stream, data)  # type: ignore[attr-defined]

    def _write(self, stream: IOStream, data: bytes) -> None:
        size = len(data)
        if type(stream) in PLAIN_STREAMS and not stream._write_buffer and stream.socket is not None:
            # Nothing of Tornado's is waiting to be written: the socket takes the
            # bytes at once, and Tornado's future and callbacks for a write that is
            # already done are skipped. What the socket does not take, and any
            # error, goes to the stream, which waits for the socket or closes.
            try:
                sent = stream.socket.send(data)
            except OSError:  # full (BlockingIOError), or an error the stream's write meets
                sent = 0
            if sent == size:
                self._unsent_bytes -= size
                if self._drain_waiters:
                    self._wake_drained()
                return
            if sent:
                self._unsent_bytes -= sent
                data, size = memoryview(data)[sent:], size - sent
        try:
            written = stream.write(data)
        except StreamClosedError:
            self._sent(None, size)
            return
        self._writing = True
        written.add_done_callback(lambda future: self._sent(future, size))

    def _sent(self, future: Any, size: int) -> None:
        self._writing = False
        self._unsent_bytes -= size
        if future is not None and not future.cancelled():
            future.exception()  # a closed socket: nothing to do, but mark it seen
        if self._outbox:
            self._flush()
        if self._drain_waiters:
            self._wake_drained()

    def _too_far_behind(self) -> None:
        # A peer this far behind gets no more memory: what waits in its outbox is
        # dropped, and it reconnects and resyncs by state vector, which loses nothing.
        log.warning("%s fell %d bytes behind; closing", self.remote, self._unsent_bytes)
        self._drop_outbox()
        self.close(CloseCode.TRY_AGAIN_LATER, "too far behind; reconnect to resync")

    def _drop_outbox(self) -> None:
        self._unsent_bytes -= sum(map(len, self._outbox))
        self._outbox.clear()

    def _send_compressed(self, frames: list[bytes]) -> None:
        """With compression negotiated, Tornado frames and writes each message."""
        for frame in frames:
            if self._unsent_bytes and self._unsent_bytes + len(frame) > self._outbound_limit:
                self._too_far_behind()
                return
            try:
                written = self.write_message(frame, binary=True)
            except tornado.websocket.WebSocketClosedError:
                return
            size = len(frame)
            self._unsent_bytes += size
            self._bytes_out.inc(size)
            written.add_done_callback(lambda future, size=size: self._sent_compressed(future, size))

    def _sent_compressed(self, future: Any, size: int) -> None:
        self._unsent_bytes -= size
        if not future.cancelled():
            future.exception()
        if self._drain_waiters:
            self._wake_drained()

    async def drained(self, below: int) -> None:
        connection = self.ws_connection
        if self._unsent_bytes < below or connection is None or connection.is_closing():
            return
        future = asyncio.get_running_loop().create_future()
        self._drain_waiters.append((below, future))
        await future

    def _wake_drained(self, *, all_of_them: bool = False) -> None:
        waiting = []
        for below, future in self._drain_waiters:
            if all_of_them or self._unsent_bytes < below:
                if not future.done():
                    future.set_result(None)
            else:
                waiting.append((below, future))
        self._drain_waiters = waiting

    # -- liveness -------------------------------------------------------------------------

    def ping_now(self) -> bool:
        """Send a WebSocket ping; False when the socket is closed already."""
        try:
            self.ping()
        except tornado.websocket.WebSocketClosedError:
            return False
        return True

    def heard_since(self, moment: float) -> bool:
        """Whether anything (a pong, a message) came from the peer after ``moment``,
        or the server is not reading it (its pongs wait unread: the silence is ours)."""
        return self._held or self._heard >= moment

    def on_pong(self, data: bytes) -> None:
        self._heard = time.monotonic()

    def abort(self) -> None:
        """Drop the connection at once, without a close handshake, or without
        waiting for the peer's answer to one."""
        self._drop_outbox()
        connection = self.ws_connection or self._closing
        if connection is not None:
            # Tornado's own abort: closes the stream, then on_close runs.
            connection._abort()  # type: ignore[attr-defined]

    # -- events -------------------------------------------------------------------------

    def on_message(self, message: str | bytes) -> Awaitable[None] | None:
        # Tornado awaits what this returns before it reads the next frame: the
        # connection's backpressure when the write queue is filling up, and a
        # stop to reading while the server shuts down (the peer sends again what
        # was not acknowledged, after it reconnects).
        self._heard = time.monotonic()
        if self.server.stopping:
            return self.pause_reading()
        self._bytes_in.inc(len(message))
        if self.connection is None:
            return None
        pending = self.connection.receive(message)
        return None if pending is None else self._hold_reading(pending)

    async def _hold_reading(self, pending: Awaitable[None]) -> None:
        """Await ``pending`` (a full write queue, a large update checked on a
        thread) while the socket is not read, the peer's pongs with it: the
        heartbeat does not take that for the peer's silence."""
        self._held = True
        try:
            await pending
        finally:
            self._held = False
            self._heard = time.monotonic()

    def pause_reading(self) -> Awaitable[None] | None:
        protocol = self.ws_connection
        if protocol is None or protocol.is_closing():
            return None  # the close frame is out: read on to the peer's answer
        if self._paused is None:
            self._paused = asyncio.get_running_loop().create_future()
        return self._paused

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        connection = self.ws_connection
        if connection is not None and not connection.is_closing():
            if code is not None:
                self.server.metrics.closed(code)
            if self._outbox:
                self._flush_before_close()
            self._closing = connection
        super().close(code, reason)
        if self._paused is not None and not self._paused.done():
            # Reading stopped for a shutdown goes on once the close frame is sent:
            # the peer's answer is read and the socket closes at once, not when
            # Tornado stops waiting for it (5 s). Messages before the answer are
            # still not handled (on_message).
            self._paused.set_result(None)

    def _flush_before_close(self) -> None:
        """What was sent before the close (an error saying why) goes out before
        the close frame, even while a write is under way."""
        self._writing = False
        self._flush()

    async def open(self, *args: str, **kwargs: str) -> None:
        # Tornado reads no message until open returns. The handshake ends here:
        # its slot lets the server accept another connection (collab.web.accepting).
        try:
            await self.start(*args, **kwargs)
        finally:
            self.server.handshakes.end(self.counted_as)

    async def start(self, *args: str, **kwargs: str) -> None:
        """The WebSocket is open: authenticate, join, send the first sync."""
        raise NotImplementedError

    def on_finish(self) -> None:
        if self.get_status() != 101:  # refused before it opened (origin, version)
            self.server.handshakes.end(self.counted_as)

    def on_close(self) -> None:
        self._closing = None
        self._drop_outbox()
        self._flush_queued = False
        if self._paused is not None and not self._paused.done():
            self._paused.set_result(None)
        self._wake_drained(all_of_them=True)
        self.server.forget(self)


class NativeSocketHandler(SocketHandler):
    """``/ws``: the native MessagePack protocol."""

    endpoint = "ws"

    async def start(self, *args: str, **kwargs: str) -> None:
        # Tornado reads no message until open returns: the hello waits for the hook.
        self.set_nodelay(True)
        token = self.get_query_argument("token", None)
        identity, refusal = None, None
        if self.server.rooms.hooks.has("on_authenticate"):
            try:
                identity = await self.server.rooms.hooks.authenticate(
                    Request.of(self.request, token)
                )
            except CollabError as exc:
                refusal = exc
        if self._stopped_meanwhile():
            return
        self._release_handshake()
        self.connection = NativeConnection(
            self,
            self.server.rooms,
            self.server.auth,
            self.server.settings,
            query_token=token,
            remote=self.remote,
            identity=identity,
        )
        self.server.register(self)
        if refusal is not None:
            self.connection.refuse(refusal)


class YjsSocketHandler(SocketHandler):
    """``/yjs/{document}``: the y-websocket protocol, one document per socket."""

    endpoint = "yjs"

    async def start(self, doc: str) -> None:  # type: ignore[override]
        self.set_nodelay(True)
        try:
            doc = validate_document_name(doc, self.server.settings.max_document_name_bytes)
            token = self.get_query_argument("token", None)
            identity = None
            if self.server.rooms.hooks.has("on_authenticate"):
                identity = await self.server.rooms.hooks.authenticate(
                    Request.of(self.request, token)
                )
            identity = identity or self.server.auth.authenticate(token)
            role = identity.require(doc)
        except ProtocolError as exc:
            self.close(CloseCode.PROTOCOL_ERROR, close_reason(exc.message))
            return
        except CollabError as exc:  # refused: by the token's check, or an extension's
            self.close(exc.close_code or CloseCode.FORBIDDEN, close_reason(exc.message))
            return
        if self._stopped_meanwhile():
            return
        self._release_handshake()
        self.connection = YjsConnection(
            self,
            self.server.rooms,
            identity,
            role,
            doc,
            self.server.settings.instance_id,
            remote=self.remote,
            settings=self.server.settings,
        )
        self.server.register(self)
        await self.connection.open()
