"""A y-websocket connection, without the socket: one document per connection.

It behaves as y-websocket's own server does (sync step 1 and the awareness states
on connect, step 2 in reply to the peer's step 1, updates and awareness
relayed), on the same rooms, store and history as the native protocol.
Differences, all documented in docs/PROTOCOL.md: a malformed frame or invalid
update closes the socket with 4400 instead of being logged and dropped, and a
read-only peer's updates are ignored with a logged reason.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable
from typing import Any

from collab.auth import Identity, Role
from collab.config import Settings
from collab.core.manager import RoomManager
from collab.core.origin import Origin
from collab.core.session import Session, SessionState
from collab.errors import AccessDenied, CloseCode, CollabError, ErrorCode, Overloaded, RateLimited
from collab.extensions import Connection, IncomingUpdate
from collab.peers.guard import InputGuard, before_reading_on, expiry_timer, stamp
from collab.peers.transport import Transport, close_reason, new_connection_id
from collab.wire import yjs as yjs_protocol
from collab.wire.yjs import YJS_FRAMES, YjsKind

log = logging.getLogger("collab.protocol")


class YjsConnection:
    # Slots: one per idle connection, most of them idle.
    __slots__ = (
        "__weakref__",  # its guard's log budget names it through one
        "_closing",
        "_expiry",
        "_guard",
        "_left",
        "_rooms",
        "_stopped",
        "_told_read_only",
        "_transport",
        "_updates_in",
        "id",
        "identity",
        "remote",
        "session",
    )

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
        settings: Settings | None = None,
    ) -> None:
        self._transport = transport
        self._rooms = rooms
        self._updates_in = rooms.metrics.updates_in.labels("yjs")
        self.id = new_connection_id()
        self.remote = remote
        self.identity = identity
        settings = settings or Settings()
        self.session = stamp(
            Session(
                doc,
                self,
                YJS_FRAMES,
                role,
                Origin.peer(identity.user, f"yjs:{self.id}", instance_id),
            ),
            identity,
            settings,
        )
        self._closing = False
        self._told_read_only = False
        self._left = False  # on_disconnect was told
        # Named through a weak reference: the connection holds its guard.
        self._guard = InputGuard(settings, log, weakref.proxy(self))
        self._expiry: asyncio.TimerHandle | None = None
        self._stopped: asyncio.Future[None] | None = None

    async def open(self) -> None:
        """Join the document's room, then greet the peer as y-websocket does."""
        self._expiry = expiry_timer(self.identity, self._expired)
        self._rooms.hooks.connected(self.described())
        try:
            reply = await self._rooms.join(self.session.doc, self.session, None)
        except CollabError as exc:
            code = CloseCode.NOT_FOUND if exc.code is ErrorCode.NOT_FOUND else None
            self._fail(code or CloseCode.INTERNAL_ERROR, exc.message)
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
        refused = self._guard.admit(len(frame))
        if refused is not None:
            self._rooms.metrics.updates_refused.labels(ErrorCode.RATE_LIMITED).inc()
            self._fail(CloseCode.POLICY_VIOLATION, f"rate limit: {refused}")
            if self._stopped is None:
                self._stopped = asyncio.get_running_loop().create_future()
            return self._stopped  # nothing more is read (or parsed) from a flood
        if self.identity.expired():
            self._expired()
            return None
        if isinstance(frame, str):
            self._fail(CloseCode.UNSUPPORTED_DATA, "y-websocket messages are binary frames")
            return None
        pending: Awaitable[None] | None = None
        try:
            pending = self._dispatch(yjs_protocol.decode(frame))
        except Exception as exc:
            self._refuse(exc, "handling a message")
        return before_reading_on(pending, self._rooms.writer.backpressure)

    def _expired(self) -> None:
        """The token expired: the provider reconnects (4001 is not a 44xx code),
        with the fresh token its params hold by then."""
        self._expiry = None
        self._fail(
            CloseCode.TOKEN_EXPIRED, "the access token has expired; reconnect with a fresh one"
        )

    def revoked(self, user: str) -> None:
        if self.identity.user == user:
            self._fail(CloseCode.UNAUTHORIZED, "the access token was revoked")

    def _dispatch(self, message: yjs_protocol.YjsMessage) -> Awaitable[None] | None:
        room = self.session.room
        assert room is not None
        match message.kind:
            case YjsKind.SYNC_STEP1:
                self.send(yjs_protocol.sync_step2(room.missing_for(message.payload)))
            case YjsKind.SYNC_STEP2 | YjsKind.SYNC_UPDATE:
                if self.session.role is not Role.WRITE:
                    # Providers always answer step 1, often with nothing the room
                    # lacks (an empty update, or only deletions it already has).
                    return self._ignore_if_held(message.payload)
                return self._submit(message.payload)
            case YjsKind.AWARENESS:
                try:
                    room.awareness.apply(self.session, message.payload)
                except (AccessDenied, RateLimited) as exc:
                    # y-websocket has no error message: the entries are left out.
                    self._guard.log.log(logging.INFO, "awareness: %s", exc.message)
            case YjsKind.QUERY_AWARENESS:
                snapshot = room.awareness.snapshot()
                if snapshot is not None:
                    self.send(yjs_protocol.awareness(snapshot))
            case YjsKind.UNKNOWN:
                self._guard.log.log(
                    logging.INFO, "ignoring unknown message type %d", message.message_type
                )
        return None

    def _submit(self, update: bytes) -> Awaitable[None] | None:
        room = self.session.room
        assert room is not None
        if self._rooms.hooks.has("before_update"):
            return self._checked_then_submitted(update)
        try:
            pending = room.submit(self.session, update)
        except CollabError as exc:
            self._rooms.metrics.updates_refused.labels(exc.code).inc()
            raise
        if pending is not None:
            return self._applied_later(pending)
        self._updates_in.inc()
        return None

    async def _checked_then_submitted(self, update: bytes) -> None:
        """An update the extensions' before_update may refuse (the socket is not
        read meanwhile, so updates still apply in order). Refused: it is not
        applied, and the peer is told with y-websocket's permission-denied
        message, as a read-only peer is; the connection stays open."""
        session = self.session
        try:
            await self._rooms.hooks.before_update(
                IncomingUpdate(session.doc, update, session.origin.user, session.origin.client)
            )
        except CollabError as exc:
            self._rooms.metrics.updates_refused.labels(exc.code).inc()
            self._guard.log.log(logging.INFO, "update refused: %s", exc.message)
            self.send(yjs_protocol.permission_denied(exc.message))
            return
        room = session.room
        if self._closing or session.state is not SessionState.ACTIVE or room is None:
            return
        pending = self._submit_checked(room, update)
        if pending is not None:
            await pending

    def _submit_checked(self, room: Any, update: bytes) -> Awaitable[None] | None:
        try:
            pending = room.submit(self.session, update)
        except CollabError as exc:
            self._rooms.metrics.updates_refused.labels(exc.code).inc()
            self._refuse(exc, "applying an update")
            return None
        if pending is not None:
            return self._applied_later(pending)
        self._updates_in.inc()
        return None

    async def _applied_later(self, pending: Awaitable[None]) -> None:
        """A large update, checked on a thread; the socket is not read meanwhile."""
        try:
            await pending
        except Exception as exc:  # this runs as the task Tornado awaits, outside on_message
            if isinstance(exc, CollabError):
                self._rooms.metrics.updates_refused.labels(exc.code).inc()
            self._refuse(exc, "applying an update")
        else:
            self._updates_in.inc()

    def _refuse(self, exc: Exception, doing: str) -> None:
        """Close for what went wrong with a peer's message (call it in the except
        block: an unexpected error is logged with its traceback)."""
        if isinstance(exc, Overloaded):
            # Reconnecting later resends everything unacknowledged (sync step 2).
            self._fail(CloseCode.TRY_AGAIN_LATER, exc.message)
        elif isinstance(exc, CollabError):
            self._fail(exc.close_code or CloseCode.PROTOCOL_ERROR, exc.message)
        else:
            log.exception("%s: unexpected error %s", self, doing)
            self._fail(CloseCode.INTERNAL_ERROR, "internal server error")

    async def _ignore_if_held(self, update: bytes) -> None:
        """A read-only peer's update: ignored if the room holds it already, else
        refused (checked on a thread when large, like a writer's)."""
        room = self.session.room
        assert room is not None
        try:
            held = await room.covers(update)
        except CollabError:
            held = False
        if not held and not self._closing and self.session.state is SessionState.ACTIVE:
            self._refuse_write()

    def _refuse_write(self) -> None:
        self._guard.log.log(
            logging.INFO, "ignoring an update: %r is read-only for this peer", self.session.doc
        )
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
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)
        self._guard.log.flush()
        if not self._left:
            self._left = True
            self._rooms.hooks.disconnected(self.described())
        self._rooms.leave(self.session)

    def described(self) -> Connection:
        """The connection as the extensions' on_connect / on_disconnect see it."""
        return Connection(self.id, "yjs", self.identity.user, self.remote, self.session.doc)

    def __str__(self) -> str:
        return f"yjs {self.id} {self.session.doc!r} {self.remote}"
