"""Reading a WebSocket: every complete frame the stream holds, in one pass.

Tornado's reader awaits three or four reads and a callback per frame (header,
length, mask, payload); with many small updates that is most of what a frame
costs. ``BufferedReadProtocol`` replaces only that loop: it takes what the stream
has (up to ``READ_CHUNK_BYTES`` at once), parses every complete frame in it with
collab.web.frames, and hands each message to Tornado's own ``_handle_message``,
so pings are answered, pongs and close handshakes handled, text decoded and
handler errors logged exactly as before.

It keeps Tornado's promise that collab relies on: when ``on_message`` returns an
awaitable, nothing more is dispatched, and the socket is read no further than
one chunk, until it is done; a peer's updates apply in order while a large one is checked or a hook
decides, and a fast writer is held back by its own socket. A stream that closes
meanwhile ends the connection at once, without waiting for the awaitable: some are
done only once the handler is told (a flood's stop to reading), and what was
received and not yet handled is dropped (a peer sends again what was not
acknowledged).

It runs on callbacks (the socket readable, a handler's awaitable, a turn of the
event loop), not in a coroutine: an idle connection then holds no task and no frame.

On a plain TCP stream the reader reads the socket itself when the event loop
says it is readable (:class:`SocketReadStream`): no future, no callback and no
64 KiB buffer per read, and no second read that finds nothing, which Tornado's
reads cost on every message. Tornado's stream still writes, and still owns the
socket's registration with the event loop. A TLS stream is read through
Tornado's reads. A connection that negotiated permessage-deflate is read by
Tornado's own loop, which decompresses. tests/test_frame_reader.py pins the
parts of Tornado this relies on.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, StreamClosedError
from tornado.websocket import WebSocketProtocol13

from collab.web.frames import FrameError, FrameParser

# One read takes at most this much from the stream (Tornado's own read chunk):
# a frame larger than that is read in one piece once its header is known.
READ_CHUNK_BYTES = 64 * 1024
# A read of the socket takes up to what the frame under way still needs, at most
# this much (the frame's pieces are joined once it is whole).
LARGE_READ_BYTES = 1024 * 1024
# Pieces of a frame under way that arrive smaller than this are gathered into one
# before the parser takes them (see BufferedReadProtocol._gather).
GATHER_BYTES = 64 * 1024
# As Tornado: go back to the event loop after this much work, a frame counting
# for FRAME_YIELD_COST bytes, so that one busy peer cannot starve the others.
YIELD_AFTER_BYTES = 256 * 1024
FRAME_YIELD_COST = 1024


class SocketReadStream(IOStream):
    """A plain TCP IOStream whose reads belong to the WebSocket reader: when the
    socket is readable, Tornado's event handler calls ``on_readable`` in place of
    reading into its own buffer. While ``on_readable`` is None (the reader waits
    for a handler) Tornado reads as it would when idle: one chunk into its buffer,
    then it stops watching, so a peer is still held back by its own socket; the
    reader takes that chunk first when it goes on."""

    on_readable: Callable[[], None] | None = None

    def reading(self) -> bool:
        return self.on_readable is not None or super().reading()

    def _handle_read(self) -> None:
        on_readable = self.on_readable
        if on_readable is None:
            super()._handle_read()
        else:
            on_readable()


class BufferedReadProtocol(WebSocketProtocol13):
    """Tornado's RFC 6455 protocol with a frame reader that parses in batches.

    The reader is driven by callbacks, not a coroutine: Tornado reads a socket
    inside a chain of five coroutines and a task (the handler's ``_execute``,
    ``get``, ``accept_connection``...), whose frames, and what their locals hold
    (the upgrade's headers among them), every idle connection would keep, about
    3 KiB each. ``_receive_frame_loop`` starts the reader and returns, which ends
    that chain; the reader then waits for the socket to be readable (a read's
    future on a TLS stream), a handler's awaitable, or a turn of the event loop.
    """

    # Slots: Tornado's attributes fill the 30 that an instance dict shares with
    # its class; one more would make each connection's dict a dict of its own.
    __slots__ = ("_gathered", "_parser", "_work")

    # Whether a plain TCP stream is read by the reader itself (False: through
    # Tornado's reads, as a TLS stream is; tests compare the two).
    reads_socket = True

    async def _receive_frame_loop(self) -> None:
        if self._decompressor is not None:
            # Tornado's loop, waiting for a handler's awaitable, misses the stream's
            # end (see _on_stream_closed for why that matters).
            self.stream.set_close_callback(self._on_inflating_stream_closed)
            try:
                await super()._receive_frame_loop()
            finally:
                self.stream.set_close_callback(None)
            return
        self._parser: FrameParser | None = FrameParser(self.params.max_message_size)
        self._work = 0
        self._gathered: bytearray | None = None
        stream = self.stream
        if type(stream) is IOStream and self.reads_socket:
            stream.__class__ = SocketReadStream
        # A stream that closes (a write failed, the server closed it, Tornado dropped
        # it 5 s after its close frame) ends the reader, whether it reads or waits.
        stream.set_close_callback(self._on_stream_closed)
        try:
            self._read()
        except (Exception, asyncio.CancelledError):
            self._fault()

    def _fault(self) -> None:
        """In an ``except`` block: end the connection for what went wrong while
        reading, as it did when it ended Tornado's read loop."""
        # A closed stream is how a connection ends; a cancelled read, as Tornado's
        # accept_connection takes it, is not an error either.
        if not isinstance(sys.exc_info()[1], (StreamClosedError, asyncio.CancelledError)):
            self.handler.log_exception(*sys.exc_info())  # type: ignore[attr-defined]
        self._abort()
        self._ended()

    def _ended(self) -> None:
        """The reader stops; the handler is told once (Tornado's loop's finally)."""
        if self._parser is None:
            return
        self._parser = None
        stream = self.stream
        # (the stream and the protocol would be a cycle)
        if type(stream) is SocketReadStream:
            stream.on_readable = None
        stream.set_close_callback(None)
        self.handler.on_ws_connection_close(self.close_code, self.close_reason)

    def _read(self) -> None:
        """Read and dispatch what arrives until something must be waited for."""
        if type(self.stream) is SocketReadStream:
            self._watch()
            return
        while True:
            parser = self._parser
            if parser is None:
                return
            if self.client_terminated:
                self._ended()
                return
            if parser.wanted > READ_CHUNK_BYTES:
                reading = self.stream.read_bytes(parser.wanted)
            else:
                reading = self.stream.read_bytes(READ_CHUNK_BYTES, partial=True)
            if not reading.done():
                reading.add_done_callback(self._on_read)
                return
            if not self._dispatch(reading.result()):
                return

    def _watch(self) -> None:
        """Take what the stream holds (read during the upgrade, or while the reader
        waited), then have the event loop call :meth:`_on_readable`."""
        stream = self.stream
        assert type(stream) is SocketReadStream
        if self._parser is None:
            return
        if self.client_terminated:
            self._ended()
            return
        if stream._read_buffer_size and not self._dispatch(
            stream._consume(stream._read_buffer_size)
        ):
            # Waits again, its buffer now empty: Tornado, which stopped watching the
            # socket when it held bytes, watches it for the peer's end meanwhile.
            if self._parser is not None:
                stream._maybe_add_error_listener()
            return
        if stream.closed():
            self._abort()
            self._ended()
            return
        stream.on_readable = self._on_readable
        stream._add_io_state(IOLoop.READ)

    def _on_readable(self) -> None:
        """The socket has bytes (or its end): read once, dispatch what is complete.
        The event loop calls again while more is there; nothing is read while a
        handler's awaitable or a turn of the loop is waited for."""
        stream = self.stream
        try:
            parser = self._parser
            if parser is None:
                stream.on_readable = None
                return
            # A read allocates what it asks for, however little comes: while small
            # pieces come (gathered), asking for a megabyte costs ~4 times the CPU.
            if self._gathered is None:
                size = min(max(parser.wanted, READ_CHUNK_BYTES), LARGE_READ_BYTES)
            else:
                size = READ_CHUNK_BYTES
            try:
                data = stream.socket.recv(size)
            except BlockingIOError:
                return
            except OSError as error:  # a reset: how a connection may end, as Tornado takes it
                data = b""
                stream.error = error
            if not data:  # the peer's end (its close callback comes too late to matter)
                self._abort()
                self._ended()
                return
            if not self._dispatch(data) and self._parser is not None:
                stream.on_readable = None  # waits: _go_on reads again
        except (Exception, asyncio.CancelledError):
            self._fault()

    def _gather(self, data: bytes, wanted: int) -> bytes | None:
        """Gather small pieces of a frame under way (``wanted`` more bytes at least)
        into one; the pieces so far once they complete it or reach GATHER_BYTES, else
        None. The parser keeps each piece it is fed as it is, 40 bytes or so on top
        of its own: a frame dripped byte by byte (slowloris) would cost the server
        some 40 times its size, up to max_frame_bytes."""
        gathered = self._gathered
        if gathered is None:
            gathered = self._gathered = bytearray()
        gathered += data
        if len(gathered) < min(wanted, GATHER_BYTES):
            return None
        self._gathered = None
        return bytes(gathered)

    def _on_stream_closed(self) -> None:
        """The stream closed under the reader (a failed write, a server close).

        The reader ends even while it waits for a handler's awaitable, which then
        finds it ended: some awaitables are done only once the handler is told the
        connection closed (a flood's stop to reading, a shutdown's pause), and the
        connection would wait for them forever, never leaving its rooms, the
        server's sockets or its address's count."""
        if self._parser is not None:
            self._abort()
            self._ended()

    def _on_inflating_stream_closed(self) -> None:
        """The stream under Tornado's loop closed: the handler is told now, even if
        the loop waits for a handler's awaitable. When the loop ends it tells the
        handler again, which Tornado's handler takes once (``_on_close_called``)."""
        self._abort()
        self.handler.on_ws_connection_close(self.close_code, self.close_reason)

    def _on_read(self, reading: asyncio.Future[bytes]) -> None:
        if not reading.cancelled() and isinstance(reading.exception(), StreamClosedError):
            # How a connection ends, taken without raising it: a raised exception's
            # traceback would hold this frame, so this future and through it the
            # whole connection, in a cycle only the collector frees.
            self._abort()
            self._ended()
            return
        try:
            if self._dispatch(reading.result()):  # a closed stream raises StreamClosedError
                self._read()
        except (Exception, asyncio.CancelledError):
            self._fault()

    def _dispatch(self, data: bytes) -> bool:
        """Take ``data`` in; True when the next read may start."""
        parser = self._parser
        if parser is None:
            return False
        self._wire_bytes_in += len(data)
        if self._gathered is not None or len(data) < min(parser.wanted, GATHER_BYTES):
            gathered = self._gather(data, parser.wanted)
            if gathered is None:
                return True  # a piece of a frame under way: read on
            data = gathered
        parser.feed(data)
        return self._handle_buffered()

    def _handle_buffered(self) -> bool:
        """Hand every complete message to Tornado; True when all were handled and
        the next read may start, False when the reader waits (a handler's
        awaitable, a turn of the event loop) or ended."""
        parser = self._parser
        while parser is not None:
            try:
                message = parser.next_message()
            except FrameError as error:
                # Tornado would drop the connection with no word: a close code
                # says why. The handler's close sends what it had queued first.
                self.handler.close(error.code, error.reason)  # type: ignore[attr-defined]
                self._abort()
                self._ended()
                return False
            if message is None:
                return True
            opcode, payload = message
            handled = self._handle_message(opcode, payload)
            self._work += FRAME_YIELD_COST + len(payload)
            if handled is not None and not handled.done():
                # Nothing more is dispatched, and the socket is not read, meanwhile.
                handled.add_done_callback(self._on_handled)
                return False
            if self.client_terminated:  # a close frame, or the handler aborted
                self._ended()
                return False
            if self._work >= YIELD_AFTER_BYTES:
                self._yield()
                return False
        return False

    def _yield(self) -> None:
        """Let the other connections' callbacks run before going on."""
        self._work = 0
        asyncio.get_running_loop().call_soon(self._go_on)

    def _on_handled(self, handled: asyncio.Future[None]) -> None:
        if self._work >= YIELD_AFTER_BYTES and not self.client_terminated:
            self._yield()
        else:
            self._go_on()

    def _go_on(self) -> None:
        """Go on with the messages already received, then read."""
        try:
            if self._parser is None:
                return
            if self.client_terminated:
                self._ended()
                return
            if self._handle_buffered():
                self._read()
        except (Exception, asyncio.CancelledError):
            self._fault()
