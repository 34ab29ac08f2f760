"""Reading a WebSocket: every complete frame the stream holds, in one pass.

Tornado's reader awaits three or four reads and a callback per frame (header,
length, mask, payload); with many small updates that is most of what a frame
costs. ``BufferedReadProtocol`` replaces only that loop: it takes what the stream
has (up to ``READ_CHUNK_BYTES`` at once), parses every complete frame in it with
collab.web.frames, and hands each message to Tornado's own ``_handle_message``,
so pings are answered, pongs and close handshakes handled, text decoded and
handler errors logged exactly as before.

It keeps Tornado's promise that collab relies on: when ``on_message`` returns an
awaitable, nothing more is dispatched, and the socket is not read, until it is
done; a peer's updates apply in order while a large one is checked or a hook
decides, and a fast writer is held back by its own socket.

A connection that negotiated permessage-deflate is read by Tornado's own loop,
which decompresses. tests/test_frame_reader.py pins the parts of Tornado this
relies on.
"""

from __future__ import annotations

import asyncio

from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketProtocol13

from collab.web.frames import FrameError, FrameParser

# One read takes at most this much from the stream (Tornado's own read chunk):
# a frame larger than that is read in one piece once its header is known.
READ_CHUNK_BYTES = 64 * 1024
# As Tornado: go back to the event loop after this much work, a frame counting
# for FRAME_YIELD_COST bytes, so that one busy peer cannot starve the others.
YIELD_AFTER_BYTES = 256 * 1024
FRAME_YIELD_COST = 1024


class BufferedReadProtocol(WebSocketProtocol13):
    """Tornado's RFC 6455 protocol with a frame reader that parses in batches."""

    async def _receive_frame_loop(self) -> None:
        if self._decompressor is not None:
            await super()._receive_frame_loop()
            return
        # One coroutine for the whole loop: an idle connection waits in it, and
        # each nested coroutine would cost every connection its frame.
        parser = FrameParser(self.params.max_message_size)
        stream = self.stream
        work = 0
        try:
            while not self.client_terminated:
                if parser.wanted > READ_CHUNK_BYTES:
                    data = await stream.read_bytes(parser.wanted)
                else:
                    data = await stream.read_bytes(READ_CHUNK_BYTES, partial=True)
                self._wire_bytes_in += len(data)
                parser.feed(data)
                while True:
                    try:
                        message = parser.next_message()
                    except FrameError as error:
                        # Tornado would drop the connection with no word: a close
                        # code says why. The handler's close sends what it had
                        # queued first.
                        self.handler.close(error.code, error.reason)  # type: ignore[attr-defined]
                        self._abort()
                        return
                    if message is None:
                        break
                    opcode, payload = message
                    handled = self._handle_message(opcode, payload)
                    if handled is not None:
                        await handled
                    if self.client_terminated:  # a close frame, or the handler aborted
                        return
                    work += FRAME_YIELD_COST + len(payload)
                    if work >= YIELD_AFTER_BYTES:
                        work = 0
                        await asyncio.sleep(0)
                        if self.client_terminated:
                            return
        except StreamClosedError:
            self._abort()
        finally:
            self.handler.on_ws_connection_close(self.close_code, self.close_reason)
