"""A y-websocket connection, without the socket: one document per connection.

It behaves as y-websocket's own server does (sync step 1 and the awareness states
on connect, step 2 in reply to the peer's step 1, updates and awareness
relayed), on the same rooms, store and history as the native protocol.
Differences, all documented in docs/PROTOCOL.md: a malformed frame or invalid
update closes the socket with 4400 instead of being logged and dropped, and a
read-only peer's updates are ignored with a logged reason.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable

from collab.auth import Identity, Role
from collab.core.manager import RoomManager
from collab.core.origin import Origin
from collab.core.session import Session, SessionState
from collab.errors import CloseCode, CollabError, Overloaded
from collab.peers.transport import Transport, close_reason, new_connection_id
from collab.wire import yjs as yjs_protocol
from collab.wire.yjs import YJS_FRAMES, YjsKind

log = logging.getLogger("collab.protocol")


class YjsConnection:
    def __init__(
        self,
        transport: Transport,
        rooms: RoomManager,
        identity: Identity,
        role: Role,
        doc: str,
        instance_id: str,
        *,
        remote: str = "",
    ) -> None:
        self._transport = transport
        self._rooms = rooms
        self._updates_in = rooms.metrics.updates_in.labels("yjs")
        self.id = new_connection_id()
        self.remote = remote
        self.session = Session(
            doc, self, YJS_FRAMES, role, Origin.peer(identity.user, f"yjs:{self.id}", instance_id)
        )
        self._closing = False
        self._told_read_only = False

    async def open(self) -> None:
        """Join the document's room, then greet the peer as y-websocket does."""
        try:
            reply = await self._rooms.join(self.session.doc, self.session, None)
        except CollabError as exc:
            self._fail(CloseCode.INTERNAL_ERROR, exc.message)
            return
        if reply is None:  # the socket closed while the document was loading
            return
        self.send(yjs_protocol.sync_step1(reply.state_vector))
        if reply.awareness is not None:
            self.send(yjs_protocol.awareness(reply.awareness))

    def receive(self, frame: bytes | str) -> Awaitable[None] | None:
        """Handle one WebSocket message. Never raises, never awaits; returns an
        awaitable to apply backpressure, as NativeConnection.receive does."""
        if self._closing or self.session.state is not SessionState.ACTIVE:
            return None
        if isinstance(frame, str):
            self._fail(CloseCode.UNSUPPORTED_DATA, "y-websocket messages are binary frames")
            return None
        try:
            self._dispatch(yjs_protocol.decode(frame))
        except Overloaded as exc:
            # Reconnecting later resends everything unacknowledged (sync step 2).
            self._fail(CloseCode.TRY_AGAIN_LATER, exc.message)
        except CollabError as exc:
            self._fail(exc.close_code or CloseCode.PROTOCOL_ERROR, exc.message)
        except Exception:
            log.exception("%s: unexpected error handling a message", self)
            self._fail(CloseCode.INTERNAL_ERROR, "internal server error")
        return self._rooms.writer.backpressure()

    def _dispatch(self, message: yjs_protocol.YjsMessage) -> None:
        room = self.session.room
        assert room is not None
        match message.kind:
            case YjsKind.SYNC_STEP1:
                self.send(yjs_protocol.sync_step2(room.missing_for(message.payload)))
            case YjsKind.SYNC_STEP2 | YjsKind.SYNC_UPDATE:
                if self.session.role is not Role.WRITE:
                    # Providers always answer step 1, often with nothing the room
                    # lacks (an empty update, or only deletions it already has).
                    if not self._room_covers(message.payload):
                        self._refuse_write()
                    return
                try:
                    room.apply_update(self.session, message.payload)
                except CollabError as exc:
                    self._rooms.metrics.updates_refused.labels(exc.code).inc()
                    raise
                self._updates_in.inc()
            case YjsKind.AWARENESS:
                room.apply_awareness(self.session, message.payload)
            case YjsKind.QUERY_AWARENESS:
                snapshot = room.awareness_snapshot()
                if snapshot is not None:
                    self.send(yjs_protocol.awareness(snapshot))
            case YjsKind.UNKNOWN:
                log.info("%s: ignoring unknown message type %d", self, message.message_type)

    def _room_covers(self, update: bytes) -> bool:
        room = self.session.room
        assert room is not None
        try:
            return room.covers(update)
        except CollabError:
            return False

    def _refuse_write(self) -> None:
        log.info("%s: ignoring an update: %r is read-only for this peer", self, self.session.doc)
        if not self._told_read_only:
            # y-websocket's provider logs this as "Permission denied".
            self._told_read_only = True
            self.send(yjs_protocol.permission_denied("read-only access: updates are ignored"))

    # -- output -----------------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        if not self._closing:
            self._transport.send(frame)

    def send_many(self, frames: list[bytes]) -> None:
        if not self._closing:
            self._transport.send_many(frames)

    def session_failed(self, session: Session, error: CollabError) -> None:
        self._fail(CloseCode.INTERNAL_ERROR, error.message)

    def _fail(self, code: int, reason: str) -> None:
        if self._closing:
            return
        log.warning("%s: closing with %d: %s", self, code, reason)
        self._closing = True
        self._transport.close(code, close_reason(reason))

    async def close(self) -> None:
        """Leave the room. Safe to call twice."""
        self._closing = True
        self._rooms.leave(self.session)

    def __str__(self) -> str:
        return f"yjs {self.id} {self.session.doc!r} {self.remote}"
