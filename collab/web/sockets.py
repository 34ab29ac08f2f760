"""Tornado WebSocket handlers: thin adapters from socket events to connections.

A handler only translates open / message / close into calls on a connection
object (collab.peers.native, collab.peers.yjs) and offers it a transport:
``send`` with a bound on unsent bytes, ``drained``, and ``close``.

Each handler also watches that its peer is alive: every ``ping_interval_s`` it
sends a WebSocket ping, and when nothing at all (no pong, no message) has come
``ping_timeout_s`` later, it aborts the socket at once. (Tornado's own ping would
start a close handshake with a peer that is gone, and wait 5 s for the answer.)
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import tornado.websocket
from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketProtocol13

from collab.errors import AccessDenied, CloseCode, ProtocolError
from collab.peers.native import NativeConnection
from collab.peers.transport import close_reason
from collab.peers.yjs import YjsConnection
from collab.web.access_log import RedactingHandlerMixin
from collab.wire.native import validate_document_name

if TYPE_CHECKING:
    from collab.app import CollabServer

log = logging.getLogger("collab.access")


FRAME_CACHE_MAX_BYTES = 64 * 1024
_last_payload: bytes | None = None  # the payload _frame framed last, and its frame
_last_frame = b""


def _frame(payload: bytes) -> bytes:
    """A final, unmasked binary WebSocket frame (RFC 6455 5.2) holding ``payload``;
    the same payload object twice in a row (a broadcast) is framed once."""
    global _last_payload, _last_frame
    if payload is _last_payload:
        return _last_frame
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x82, size)
    elif size <= 0xFFFF:
        header = struct.pack("!BBH", 0x82, 126, size)
    else:
        header = struct.pack("!BBQ", 0x82, 127, size)
    framed = header + payload
    if size <= FRAME_CACHE_MAX_BYTES:  # a large one is not kept alive after its send
        _last_payload, _last_frame = payload, framed
    return framed


class SocketHandler(RedactingHandlerMixin, tornado.websocket.WebSocketHandler):
    connection: NativeConnection | YjsConnection | None
    endpoint = ""  # the metrics label: "ws" or "yjs"

    def initialize(self, server: CollabServer) -> None:
        self.server = server
        self.connection = None
        self._unsent_bytes = 0
        self._drain_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._heard = time.monotonic()  # when the peer last sent anything
        self._heartbeat: asyncio.Task[None] | None = None
        self._paused: asyncio.Future[None] | None = None  # reading stopped (shutdown)

    def check_origin(self, origin: str) -> bool:
        return self.server.origin_allowed(origin)

    @property
    def remote(self) -> str:
        return self.request.remote_ip or ""

    # -- transport ----------------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        if self.ws_connection is None or self.ws_connection.is_closing():
            return
        # The bound applies to a backlog, not to one message: a document's sync
        # answer may alone be larger than the bound and must still get through.
        limit = self.server.settings.outbound_queue_bytes
        if self._unsent_bytes and self._unsent_bytes + len(frame) > limit:
            # A peer this far behind gets no more memory: it reconnects and
            # resyncs by state vector, which loses nothing.
            log.warning("%s fell %d bytes behind; closing", self.remote, self._unsent_bytes)
            self.close(CloseCode.TRY_AGAIN_LATER, "too far behind; reconnect to resync")
            return
        try:
            written = self._write_binary(frame)
        except (tornado.websocket.WebSocketClosedError, StreamClosedError):
            return
        size = len(frame)
        self._unsent_bytes += size
        self.server.metrics.bytes_out.labels(self.endpoint).inc(size)
        written.add_done_callback(lambda future: self._sent(future, size))

    def _write_binary(self, payload: bytes) -> asyncio.Future[None]:
        """Write one binary message. Tornado's ``write_message`` wraps every message
        in a coroutine and a task (most of the send path's cost when a room fans out
        to many peers); an uncompressed server frame is only a header and the
        payload, written to the stream as it is, with the header and the joined bytes
        built once per broadcast (every peer of a room gets the same payload object).
        With compression negotiated, Tornado writes it."""
        protocol = self.ws_connection
        assert protocol is not None
        if not isinstance(protocol, WebSocketProtocol13) or protocol._compressor is not None:
            return self.write_message(payload, binary=True)
        framed = _frame(payload)
        protocol._wire_bytes_out += len(framed)
        protocol._message_bytes_out += len(payload)
        return protocol.stream.write(framed)

    def _sent(self, future: Any, size: int) -> None:
        self._unsent_bytes -= size
        if not future.cancelled():
            future.exception()  # a closed socket: nothing to do, but mark it seen
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

    def start_heartbeat(self) -> None:
        s = self.server.settings
        assert s.ping_timeout_s is not None
        if s.ping_interval_s > 0 and not self.server.stopping:
            self._heartbeat = self.server.tasks.spawn(
                self._beat(s.ping_interval_s, s.ping_timeout_s), name=f"heartbeat {self.remote}"
            )

    async def _beat(self, interval: float, answer_within: float) -> None:
        while True:
            await asyncio.sleep(interval)
            pinged = time.monotonic()
            try:
                self.ping()
            except tornado.websocket.WebSocketClosedError:
                return
            await asyncio.sleep(answer_within)
            if self._heard < pinged:
                log.info(
                    "%s: no answer %.1fs after a ping; dropping it", self.remote, answer_within
                )
                self.abort()
                return

    def on_pong(self, data: bytes) -> None:
        self._heard = time.monotonic()

    def abort(self) -> None:
        """Drop the connection at once, without a close handshake."""
        connection = self.ws_connection
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
        self.server.metrics.bytes_in.labels(self.endpoint).inc(len(message))
        if self.connection is not None:
            return self.connection.receive(message)
        return None

    def pause_reading(self) -> Awaitable[None]:
        if self._paused is None:
            self._paused = asyncio.get_running_loop().create_future()
        return self._paused

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        connection = self.ws_connection
        if code is not None and connection is not None and not connection.is_closing():
            self.server.metrics.closed(code)
        super().close(code, reason)

    def on_close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if self._paused is not None and not self._paused.done():
            self._paused.set_result(None)
        self._wake_drained(all_of_them=True)
        self.server.forget(self)


class NativeSocketHandler(SocketHandler):
    """``/ws``: the native MessagePack protocol."""

    endpoint = "ws"

    def open(self, *args: str, **kwargs: str) -> None:
        if not self.server.admit(self):  # past the per-address cap: closed
            return
        self.set_nodelay(True)
        self.start_heartbeat()
        self.connection = NativeConnection(
            self,
            self.server.rooms,
            self.server.auth,
            self.server.settings,
            query_token=self.get_query_argument("token", None),
            remote=self.remote,
        )
        self.server.register(self)


class YjsSocketHandler(SocketHandler):
    """``/yjs/{document}``: the y-websocket protocol, one document per socket."""

    endpoint = "yjs"

    async def open(self, doc: str) -> None:
        if not self.server.admit(self):  # past the per-address cap: closed
            return
        self.set_nodelay(True)
        self.start_heartbeat()
        try:
            doc = validate_document_name(doc, self.server.settings.max_document_name_bytes)
            identity = self.server.auth.authenticate(self.get_query_argument("token", None))
            role = identity.require(doc)
        except ProtocolError as exc:
            self.close(CloseCode.PROTOCOL_ERROR, close_reason(exc.message))
            return
        except AccessDenied as exc:
            self.close(exc.close_code or CloseCode.FORBIDDEN, close_reason(exc.message))
            return
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
