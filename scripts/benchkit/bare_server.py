"""The bare relay (``python -m benchkit serve-bare``): the least a y-websocket server
on this stack (Tornado + pycrdt) can do, as a floor for what collab's costs.

Per document a pycrdt ``Doc`` and the set of its sockets. Sync step 1 is answered
from the doc; every update (step 2 or update message) is applied to the doc and its
frame relayed to the document's other sockets as an update message; awareness frames
are relayed as they came. Nothing else: no persistence, no validation, no limits, no
acknowledgement, no bound on what a slow peer is sent, no heartbeat. A document is
dropped when its last socket closes (as the reference server drops it).

Not a server for anyone to use: a bad update raises in pycrdt and only that frame
is lost (Tornado logs it); what it measures is the cost of the stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

MESSAGE_SYNC, MESSAGE_AWARENESS = 0, 1
SYNC_STEP1, SYNC_STEP2, SYNC_UPDATE = 0, 1, 2
EMPTY_UPDATE = b"\x00\x00"
# Large enough for the compression scenario's 10 MiB document in one sync answer.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def serve_bare_main(port: int, deflate: bool) -> int:
    """Serve ``/yjs/{document}`` (any path works) on loopback until SIGTERM/SIGINT.
    With ``deflate``, permessage-deflate is accepted when a client offers it
    (Tornado's defaults: compression level 6, context takeover)."""
    import signal

    import tornado.web
    import tornado.websocket
    from pycrdt import (
        Doc,
        create_sync_message,
        create_update_message,
        read_message,
        write_message,
    )

    from . import HOST

    logging.basicConfig(level=logging.WARNING)

    class Room:
        def __init__(self) -> None:
            self.doc = Doc()
            self.sockets: set[Relay] = set()

    rooms: dict[str, Room] = {}

    class Relay(tornado.websocket.WebSocketHandler):
        room: Room | None = None

        def check_origin(self, origin: str) -> bool:
            return True

        def get_compression_options(self) -> dict[str, Any] | None:
            return {} if deflate else None

        def open(self, name: str) -> None:  # type: ignore[override]
            self.room = rooms.get(name)
            if self.room is None:
                self.room = rooms[name] = Room()
            self.room.sockets.add(self)
            self.name = name
            self.write_message(create_sync_message(self.room.doc), binary=True)

        def on_message(self, message: str | bytes) -> None:
            room = self.room
            if room is None or not isinstance(message, bytes) or len(message) < 2:
                return
            if message[0] == MESSAGE_AWARENESS:
                self.relay(room, message)
                return
            if message[0] != MESSAGE_SYNC:
                return  # query awareness and anything else: nothing to say
            kind = message[1]
            if kind == SYNC_STEP1:
                update = room.doc.get_update(read_message(message[2:]))
                self.write_message(
                    bytes([MESSAGE_SYNC, SYNC_STEP2]) + write_message(update), binary=True
                )
                return
            update = read_message(message[2:])
            if update == EMPTY_UPDATE:
                return
            room.doc.apply_update(update)
            self.relay(room, message if kind == SYNC_UPDATE else create_update_message(update))

        def relay(self, room: Room, frame: bytes) -> None:
            for peer in room.sockets:
                if peer is not self:
                    # A peer that is leaving: on_close removes it.
                    with contextlib.suppress(tornado.websocket.WebSocketClosedError):
                        peer.write_message(frame, binary=True)

        def on_close(self) -> None:
            room, self.room = self.room, None
            if room is not None:
                room.sockets.discard(self)
                if not room.sockets and rooms.get(self.name) is room:
                    del rooms[self.name]

    async def main() -> None:
        app = tornado.web.Application(
            [(r"/yjs/(.+)", Relay), (r"/(.+)", Relay)],
            websocket_max_message_size=MAX_MESSAGE_BYTES,
        )
        server = app.listen(port, HOST, max_buffer_size=MAX_MESSAGE_BYTES)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        server.stop()

    asyncio.run(main())
    return 0
