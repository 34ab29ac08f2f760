"""A native-protocol connection, without the socket.

The WebSocket handler feeds frames to :meth:`NativeConnection.receive` and calls
:meth:`NativeConnection.close` when the socket closes; everything else (hello,
sessions per document, errors) happens here and reaches the socket through the
small :class:`Transport` protocol. ``receive`` never awaits: loading a document
runs in a task owned by the connection, and messages for a document that is
still loading wait in its session's inbox, in order.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import unicodedata
import weakref
from collections.abc import Awaitable, Callable
from enum import Enum

from collab import __version__
from collab.auth import Authenticator, Identity, Role
from collab.config import Settings
from collab.core import version_names
from collab.core.history import page_of_updates, retained_from
from collab.core.manager import RoomManager
from collab.core.origin import Origin
from collab.core.room import Resume
from collab.core.session import Session, SessionState
from collab.errors import (
    AccessDenied,
    CloseCode,
    CollabError,
    ErrorCode,
    ProtocolError,
    RateLimited,
    StoreError,
)
from collab.extensions import Connection, IncomingUpdate
from collab.names import validate_document_name
from collab.peers.guard import InputGuard, before_reading_on, expiry_timer, stamp
from collab.peers.transport import Transport, close_reason, new_connection_id
from collab.store import MAX_SEQ, UpdateRecord
from collab.tasks import TaskGroup
from collab.wire.native import (
    NATIVE_FRAMES,
    PROTOCOL_VERSION,
    Ack,
    Awareness,
    ClientUpdate,
    Error,
    Hello,
    History,
    HistoryPage,
    Message,
    Ping,
    Pong,
    Reauth,
    Reauthed,
    Subscribe,
    Sync,
    Unsubscribe,
    Unsubscribed,
    Welcome,
    decode_client_message,
    encode,
    sync_parts,
)

log = logging.getLogger("collab.protocol")

MAX_HISTORY_REQUESTS = 2  # per connection, in flight at once
HISTORY_PAGE_UPDATES = 1000  # at most, per history page
HISTORY_FRAME_OVERHEAD = 512  # a history page's fields besides its updates
HISTORY_ENTRY_OVERHEAD = 96  # an update's fields in a page besides its bytes and names


class ConnectionState(Enum):
    AWAITING_HELLO = "awaiting_hello"
    OPEN = "open"
    EXPIRED = "expired"  # the token expired: only reauth (and ping) are accepted
    CLOSING = "closing"  # a fatal error was reported; further frames are ignored
    CLOSED = "closed"


class NativeConnection:
    def __init__(
        self,
        transport: Transport,
        rooms: RoomManager,
        authenticator: Authenticator,
        settings: Settings,
        *,
        query_token: str | None = None,
        remote: str = "",
        identity: Identity | None = None,
    ) -> None:
        """``identity``: who the connection is, decided at its handshake by an
        extension's on_authenticate (then hello needs no token)."""
        self._transport = transport
        self._rooms = rooms
        self._updates_in = rooms.metrics.updates_in.labels("ws")
        self._auth = authenticator
        self._settings = settings
        self._query_token = query_token
        self.id = new_connection_id()
        self.remote = remote
        self.state = ConnectionState.AWAITING_HELLO
        self.identity: Identity | None = None
        self._handshake_identity = identity
        self.client = f"ws:{self.id}"
        self.sessions: dict[str, Session] = {}
        self._max_frame_bytes: int | None = None  # as the client announced it
        self._history_requests = 0  # in flight
        self._tasks = TaskGroup(log)
        # Named through a weak reference: the connection holds its guard.
        self._guard = InputGuard(settings, log, weakref.proxy(self))
        self._expiry: asyncio.TimerHandle | None = None  # the token's, or reauth's deadline
        self._stopped: asyncio.Future[None] | None = None  # reading stopped for good

    # -- input ------------------------------------------------------------------------

    def receive(self, frame: bytes | str) -> Awaitable[None] | None:
        """Handle one WebSocket message. Never raises, never awaits. Returns an
        awaitable while the server's write queue is more than half full: the socket
        is not read again until it is done (backpressure on a fast writer)."""
        if self.state in (ConnectionState.CLOSING, ConnectionState.CLOSED):
            return None
        refused = self._guard.admit(len(frame))
        if refused is not None:
            self._rooms.metrics.updates_refused.labels(ErrorCode.RATE_LIMITED).inc()
            self._report(
                RateLimited(
                    f"rate limit: {refused}; closing",
                    close_code=CloseCode.POLICY_VIOLATION,
                )
            )
            return self._stop_reading()
        pending: Awaitable[None] | None = None
        try:
            if isinstance(frame, str):
                raise ProtocolError(
                    "text frames are not accepted: send each message as a binary frame "
                    "holding one MessagePack map",
                    close_code=CloseCode.UNSUPPORTED_DATA,
                )
            try:
                message = decode_client_message(frame)
            except ProtocolError as exc:
                if self.state is ConnectionState.AWAITING_HELLO:
                    exc.close_code = CloseCode.PROTOCOL_ERROR
                raise
            pending = self._dispatch(message)
        except CollabError as exc:
            self._report(exc)
        except Exception:
            log.exception("%s: unexpected error handling a message", self)
            self._report(CollabError("internal server error", code=ErrorCode.INTERNAL))
        if self.state is ConnectionState.CLOSING:
            return None
        return before_reading_on(pending, self._rooms.writer.backpressure)

    def _stop_reading(self) -> Awaitable[None]:
        """Closed for flooding: read nothing more from the socket (the flood is not
        even parsed) until it is gone (Tornado drops it 5 s after its close frame)."""
        if self._stopped is None:
            self._stopped = asyncio.get_running_loop().create_future()
        return self._stopped

    def _dispatch(self, message: Message) -> Awaitable[None] | None:
        if self.state is ConnectionState.AWAITING_HELLO:
            if not isinstance(message, Hello):
                raise ProtocolError(
                    f"the first message must be hello, not {message.TYPE}",
                    code=ErrorCode.HELLO_REQUIRED,
                    close_code=CloseCode.PROTOCOL_ERROR,
                )
            self._on_hello(message)
            return None
        if self.identity is not None and self.identity.expired():
            self._expire()  # its timer may not have run yet
        if self.state is ConnectionState.EXPIRED and not isinstance(message, Reauth | Ping):
            raise AccessDenied(
                "the access token has expired: send reauth with a fresh one",
                code=ErrorCode.EXPIRED,
                doc=getattr(message, "doc", None),
                ref=getattr(message, "ref", None),
            )
        match message:
            case Subscribe():
                self._on_subscribe(message)
            case ClientUpdate() | Awareness():
                return self._on_document_message(message)
            case Reauth():
                self._on_reauth(message)
            case Unsubscribe():
                self._on_unsubscribe(message)
            case Ping():
                self.send(encode(Pong(id=message.id, time_ms=int(time.time() * 1000))))
            case History():
                self._on_history(message)
            case Hello():
                raise ProtocolError("hello was already received")
            case _:
                raise ProtocolError(f"unexpected message type {message.TYPE}")
        return None

    def _on_hello(self, hello: Hello) -> None:
        if hello.version != PROTOCOL_VERSION:
            raise ProtocolError(
                f"protocol version {hello.version} is not supported; "
                f"this server speaks version {PROTOCOL_VERSION}",
                code=ErrorCode.UNSUPPORTED_VERSION,
                close_code=CloseCode.PROTOCOL_ERROR,
            )
        self.identity = self._handshake_identity or self._auth.authenticate(
            hello.token or self._query_token
        )
        self._watch_expiry()
        if hello.client:
            self.client = hello.client[:128]
        self._max_frame_bytes = hello.max_frame_bytes
        self.state = ConnectionState.OPEN
        s = self._settings
        self.send(
            encode(
                Welcome(
                    version=PROTOCOL_VERSION,
                    server=f"collab/{__version__}",
                    instance=s.instance_id,
                    user=self.identity.user,
                    expires_s=_whole_seconds(self.identity.expires_s),
                    limits={
                        "max_frame_bytes": s.max_frame_bytes,
                        "max_documents": s.max_documents_per_connection,
                        "max_document_name_bytes": s.max_document_name_bytes,
                        "ping_interval_s": s.ping_interval_s,
                        "ping_timeout_s": s.ping_timeout_s,
                        "rate_messages_per_s": s.rate_messages_per_s,
                        "rate_messages_burst": s.rate_messages_burst,
                        "rate_bytes_per_s": s.rate_bytes_per_s,
                        "rate_bytes_burst": s.rate_bytes_burst,
                    },
                )
            )
        )
        log.info("%s: hello from client %s (user %s)", self, self.client, self.identity.user)
        self._rooms.hooks.connected(self.described())

    def described(self) -> Connection:
        """The connection as the extensions' on_connect / on_disconnect see it."""
        return Connection(self.id, "ws", self.user, self.remote)

    def refuse(self, error: CollabError) -> None:
        """Refused at its handshake (an extension's on_authenticate): the error is
        sent, and the socket closed with its code."""
        self._report(error)

    # -- token lifetime -------------------------------------------------------------------

    def _watch_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        assert self.identity is not None
        self._expiry = expiry_timer(self.identity, self._expire)

    def _expire(self) -> None:
        """The token expired: every subscription ends and nothing is accepted but a
        reauth, which must come within ``reauth_timeout_s``."""
        if self.state is not ConnectionState.OPEN:
            return
        self.state = ConnectionState.EXPIRED
        self._end_sessions()
        timeout = self._settings.reauth_timeout_s
        self.send(
            encode(
                Error(
                    code=str(ErrorCode.EXPIRED),
                    message=f"the access token has expired: every subscription ended; send "
                    f"reauth with a fresh token within {timeout:g} s, then subscribe again",
                )
            )
        )
        log.info("%s: the token of user %s expired", self, self.user)
        self._expiry = asyncio.get_running_loop().call_later(timeout, self._reauth_too_late)

    def _reauth_too_late(self) -> None:
        self._expiry = None
        if self.state is ConnectionState.EXPIRED:
            self._report(
                AccessDenied(
                    "the access token has expired and no fresh one came",
                    code=ErrorCode.EXPIRED,
                    close_code=CloseCode.UNAUTHORIZED,
                )
            )

    def _on_reauth(self, message: Reauth) -> None:
        assert self.identity is not None
        identity = self._auth.authenticate(message.token)
        if identity.user != self.identity.user:
            raise AccessDenied(
                "reauth must carry a token of the connection's user",
                code=ErrorCode.UNAUTHORIZED,
            )
        self.identity = identity
        self.state = ConnectionState.OPEN
        self._watch_expiry()
        # The new grants apply to the subscriptions there are.
        for doc, session in list(self.sessions.items()):
            role = identity.role_for(doc)
            if role is None:
                self._end_session(session)
                self._report(
                    AccessDenied(f"access to document {doc!r} is not granted any more", doc=doc)
                )
            else:
                session.role = role
        self.send(
            encode(Reauthed(user=identity.user, expires_s=_whole_seconds(identity.expires_s)))
        )
        log.info("%s: fresh token for user %s", self, identity.user)

    def revoked(self, user: str) -> None:
        """``user``'s grants were revoked: if they are this connection's, it ends."""
        if self.identity is None or self.identity.user != user:
            return
        self._end_sessions()
        self._report(
            AccessDenied(
                "the access token was revoked",
                code=ErrorCode.REVOKED,
                close_code=CloseCode.UNAUTHORIZED,
            )
        )

    @property
    def user(self) -> str | None:
        return self.identity.user if self.identity is not None else None

    def _end_sessions(self) -> None:
        for session in list(self.sessions.values()):
            self._end_session(session)

    def _end_session(self, session: Session) -> None:
        if self.sessions.get(session.doc) is session:
            del self.sessions[session.doc]
        self._rooms.leave(session)

    def _on_subscribe(self, message: Subscribe) -> None:
        assert self.identity is not None
        try:
            doc = validate_document_name(message.doc, self._settings.max_document_name_bytes)
        except ProtocolError as exc:
            exc.doc = message.doc
            raise
        if doc in self.sessions:
            raise ProtocolError(
                "already subscribed to this document", code=ErrorCode.ALREADY_SUBSCRIBED, doc=doc
            )
        if len(self.sessions) >= self._settings.max_documents_per_connection:
            raise ProtocolError(
                f"at most {self._settings.max_documents_per_connection} documents per connection",
                code=ErrorCode.TOO_MANY_DOCUMENTS,
                doc=doc,
            )
        role = self.identity.require(doc)
        origin = Origin.peer(self.identity.user, self.client, self._settings.instance_id)
        session = stamp(
            Session(doc, self, NATIVE_FRAMES, role, origin), self.identity, self._settings
        )
        self.sessions[doc] = session
        resume = Resume(message.seq, message.epoch) if message.seq is not None else None
        if resume is None and message.epoch is not None:
            resume = Resume(0, message.epoch)  # an epoch alone still detects a reset
        self._tasks.spawn(self._join(session, message.sv, resume), name=f"join {doc}")

    async def _join(
        self, session: Session, state_vector: bytes | None, resume: Resume | None
    ) -> None:
        try:
            reply = await self._rooms.join(session.doc, session, state_vector, resume)
        except CollabError as exc:
            if self.sessions.get(session.doc) is session:
                del self.sessions[session.doc]
            session.state = SessionState.CLOSED
            exc.doc = session.doc
            self._report(exc)
            return
        if reply is None:  # unsubscribed while the document was loading
            return
        # No await from room.join to the first part: nothing reaches the peer before it.
        parts = sync_parts(
            session.doc,
            reply.missing,
            reply.state_vector,
            part_bytes=self._settings.sync_chunk_bytes,
            max_frame_bytes=self._max_frame_bytes,
        )
        first = Sync(
            doc=session.doc,
            epoch=reply.epoch,
            seq=reply.seq,
            update=bytes(parts[0]),
            role=str(session.role),
            mode=str(reply.mode),
        )
        if len(parts) == 1:
            self.send(encode(dataclasses.replace(first, sv=reply.state_vector)))
        else:
            self._tasks.spawn(
                self._send_parts(first, parts, reply.state_vector, len(reply.missing)),
                name=f"sync {session.doc}",
            )
        if reply.awareness is not None:
            self.send(encode(Awareness(doc=session.doc, update=reply.awareness)))
        await self._drain_inbox(session)

    async def _drain_inbox(self, session: Session) -> None:
        """Apply what was sent while the document loaded, in order; large updates
        are checked on a thread as ever, and what arrives meanwhile queues behind."""
        session.draining = True
        try:
            while session.inbox and session.state is SessionState.ACTIVE:
                inbox, session.inbox = session.inbox, []
                for message in inbox:
                    if session.state is not SessionState.ACTIVE:
                        return
                    session.inbox_bytes -= len(message.update)
                    try:
                        pending = self._on_document_message(message, queued=True)
                        if pending is not None:
                            await pending
                    except CollabError as exc:
                        self._report(exc)
        finally:
            session.draining = False
            session.inbox, session.inbox_bytes = [], 0

    async def _send_parts(
        self, first: Sync, parts: list[memoryview], state_vector: bytes, total: int
    ) -> None:
        """Send a large sync answer part by part, each once the socket has written
        most of the one before: the outbound bound applies to what piles up, and
        a large document must not make it close the peer."""
        size = len(parts[0])
        for index, part in enumerate(parts):
            if self.state is ConnectionState.CLOSED or first.doc not in self.sessions:
                return
            last = index == len(parts) - 1
            message = dataclasses.replace(
                first,
                update=bytes(part),  # one part copied at a time
                part=index,
                parts=len(parts),
                total_bytes=total,
                sv=state_vector if last else None,
            )
            self.send(encode(message))
            if not last:
                await self._transport.drained(2 * size)

    def _on_document_message(
        self, message: ClientUpdate | Awareness, *, queued: bool = False
    ) -> Awaitable[None] | None:
        session = self.sessions.get(unicodedata.normalize("NFC", message.doc))
        ref = message.ref if isinstance(message, ClientUpdate) else None
        if session is None:
            raise ProtocolError(
                "subscribe to the document first",
                code=ErrorCode.NOT_SUBSCRIBED,
                doc=message.doc,
                ref=ref,
            )
        if session.state is SessionState.JOINING or (session.draining and not queued):
            session.inbox_bytes += len(message.update)
            if session.inbox_bytes > self._settings.inbound_buffer_bytes:
                raise CollabError(
                    "too much data sent for a document that is still loading",
                    code=ErrorCode.OVERLOADED,
                    close_code=CloseCode.TRY_AGAIN_LATER,
                )
            session.inbox.append(message)
            return None
        room = session.room
        assert room is not None
        if isinstance(message, Awareness):
            room.awareness.apply(session, message.update)
            return None
        if session.role is not Role.WRITE:
            raise AccessDenied(
                "this document is read-only for you",
                code=ErrorCode.READ_ONLY,
                doc=message.doc,
                ref=ref,
            )
        if self._rooms.hooks.has("before_update"):
            return self._applied_later(self._checked_then_submitted(session, message), message)
        try:
            pending = room.submit(
                session, message.update, self._ack_sender(session.doc, message.ref)
            )
        except CollabError as exc:
            self._refused(exc, message)
            raise
        if pending is not None:
            return self._applied_later(pending, message)
        self._updates_in.inc()
        return None

    async def _checked_then_submitted(self, session: Session, message: ClientUpdate) -> None:
        """An update the extensions' before_update may refuse, submitted once they
        allowed it. The socket is not read meanwhile (the caller returns this to
        Tornado), so this connection's updates still apply in order; a refusal
        raises before anything is applied: the document is unchanged."""
        await self._rooms.hooks.before_update(
            IncomingUpdate(session.doc, message.update, session.origin.user, self.client)
        )
        room = session.room
        if session.state is not SessionState.ACTIVE or room is None:
            return  # unsubscribed meanwhile: its client sends it again if it comes back
        pending = room.submit(session, message.update, self._ack_sender(session.doc, message.ref))
        if pending is not None:
            await pending

    def _refused(self, error: CollabError, message: ClientUpdate) -> None:
        error.ref = message.ref
        self._rooms.metrics.updates_refused.labels(error.code).inc()

    async def _applied_later(self, pending: Awaitable[None], message: ClientUpdate) -> None:
        """A large update, checked on a thread; the socket is not read meanwhile, so
        this connection's messages still apply in order."""
        try:
            await pending
        except CollabError as exc:
            self._refused(exc, message)
            self._report(exc)
        except Exception:
            # As in receive: this runs as the task Tornado awaits, outside it.
            log.exception("%s: unexpected error applying an update", self)
            self._report(CollabError("internal server error", code=ErrorCode.INTERNAL))
        else:
            self._updates_in.inc()

    def _ack_sender(self, doc: str, ref: int) -> Callable[[int], None]:
        def send_ack(seq: int) -> None:
            self.send(encode(Ack(doc=doc, ref=ref, seq=seq)))

        return send_ack

    def _on_history(self, message: History) -> None:
        assert self.identity is not None
        try:
            doc = validate_document_name(message.doc, self._settings.max_document_name_bytes)
            message = dataclasses.replace(message, doc=doc)
            self.identity.require(doc)
            if any(
                value is not None and value > MAX_SEQ
                for value in (message.after, message.until, message.limit)
            ):
                raise ProtocolError(f"history: after, until and limit are at most {MAX_SEQ}")
            if self._history_requests >= MAX_HISTORY_REQUESTS:
                raise CollabError(
                    f"at most {MAX_HISTORY_REQUESTS} history requests at a time: ask for the "
                    "next page once one is answered",
                    code=ErrorCode.OVERLOADED,
                )
        except CollabError as exc:
            self._report_request(exc, message)
            return
        self._history_requests += 1
        self._tasks.spawn(self._serve_history(message), name=f"history {message.doc}")

    def _report_request(self, error: CollabError, message: History) -> None:
        self._guard.log.log(
            logging.INFO, "history of %r: %s: %s", message.doc, error.code, error.message
        )
        self.send(
            encode(
                Error(code=str(error.code), message=error.message, doc=message.doc, id=message.id)
            )
        )

    async def _serve_history(self, message: History) -> None:
        """One page, cut to the client's frame limit (at least one update)."""
        try:
            store = self._rooms.store
            info = await store.get_document(message.doc)
            if info is None:
                raise CollabError("no such document", code=ErrorCode.NOT_FOUND)
            first = await retained_from(store, message.doc)
            if message.after < first:
                raise CollabError(
                    f"updates before seq {first + 1} are no longer kept (retention)",
                    code=ErrorCode.NOT_RETAINED,
                )
            limit = min(message.limit or HISTORY_PAGE_UPDATES, HISTORY_PAGE_UPDATES)
            until = info.head_seq if message.until is None else min(message.until, info.head_seq)
            accepted = self._max_frame_bytes or self._settings.max_frame_bytes
            budget = min(accepted, self._settings.max_frame_bytes) - HISTORY_FRAME_OVERHEAD
            # The named versions of the range go with its page (their room is taken
            # from the updates').
            named = [
                version_names.as_dict(n)
                for n in await store.version_names(message.doc)
                if message.after < n.seq <= until
            ]
            budget -= sum(HISTORY_ENTRY_OVERHEAD + len(n["name"].encode()) for n in named)
            records, more = await page_of_updates(
                store,
                message.doc,
                after_seq=message.after,
                until_seq=until,
                limit=limit,
                max_bytes=budget,
                size_of=_history_entry_bytes,
            )
            if records and _history_entry_bytes(records[0]) > budget:
                raise CollabError(
                    f"the update at seq {records[0].seq} ({len(records[0].data)} bytes) does "
                    "not fit in a frame you accept (hello.max_frame_bytes)",
                    code=ErrorCode.TOO_LARGE,
                )
            last = records[-1].seq if more else until
            named = [n for n in named if n["seq"] <= last]
            page = [
                {
                    "seq": r.seq,
                    "time_s": r.time_s,
                    **r.author.as_dict(),
                    "update": r.data,
                }
                for r in records
            ]
            self.send(
                encode(
                    HistoryPage(
                        doc=message.doc,
                        id=message.id,
                        updates=page,
                        head=info.head_seq,
                        next_after=records[-1].seq if more else None,
                        names=named or None,
                    )
                )
            )
        except StoreError as exc:
            failure = CollabError(
                f"the history could not be read: {exc}", code=ErrorCode.STORE_UNAVAILABLE
            )
            self._report_request(failure, message)
        except CollabError as exc:
            self._report_request(exc, message)
        except Exception:
            log.exception("%s: history of %r failed", self, message.doc)
            failure = CollabError("internal server error", code=ErrorCode.INTERNAL)
            self._report_request(failure, message)
        finally:
            self._history_requests -= 1

    def _on_unsubscribe(self, message: Unsubscribe) -> None:
        session = self.sessions.pop(unicodedata.normalize("NFC", message.doc), None)
        if session is None:
            raise ProtocolError(
                "not subscribed to this document", code=ErrorCode.NOT_SUBSCRIBED, doc=message.doc
            )
        self._rooms.leave(session)
        self._tasks.spawn(self._confirm_unsubscribe(session), name=f"unsubscribe {message.doc}")

    async def _confirm_unsubscribe(self, session: Session) -> None:
        # Acks of updates sent before unsubscribing go out first.
        await session.writes_durable()
        self.send(encode(Unsubscribed(doc=session.doc)))

    # -- output -----------------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        if self.state is not ConnectionState.CLOSED:
            self._transport.send(frame)

    def send_many(self, frames: list[bytes]) -> None:
        if self.state is not ConnectionState.CLOSED:
            self._transport.send_many(frames)

    def session_failed(self, session: Session, error: CollabError) -> None:
        if self.sessions.get(session.doc) is session:
            del self.sessions[session.doc]
        self._report(error)

    def _report(self, error: CollabError) -> None:
        if error.close_code is not None:
            if self.state in (ConnectionState.CLOSING, ConnectionState.CLOSED):
                return
            log.warning("%s: closing with %d: %s", self, error.close_code, error.message)
            self.send(encode(Error(code=str(error.code), message=error.message, doc=error.doc)))
            self.state = ConnectionState.CLOSING
            self._transport.close(int(error.close_code), close_reason(error.message))
            return
        self._guard.log.log(logging.INFO, "%s: %s", error.code, error.message)
        self.send(
            encode(Error(code=str(error.code), message=error.message, doc=error.doc, ref=error.ref))
        )

    # -- teardown -----------------------------------------------------------------------

    async def close(self) -> None:
        """Leave every room and stop every task. Safe to call twice."""
        if self.state is ConnectionState.CLOSED:
            return
        self.state = ConnectionState.CLOSED
        if self._expiry is not None:
            self._expiry.cancel()
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)
        self._guard.log.flush()
        if self.identity is not None:  # it said hello: it was connected
            self._rooms.hooks.disconnected(self.described())
        for session in self.sessions.values():
            self._rooms.leave(session)
        self.sessions.clear()
        await self._tasks.close()

    def __str__(self) -> str:
        return f"ws {self.id} {self.remote}"


def _history_entry_bytes(record: UpdateRecord) -> int:
    """What an update takes in a history page's frame, at most."""
    author = record.author
    names = f"{author.user}{author.client}{author.instance}".encode()
    return len(record.data) + HISTORY_ENTRY_OVERHEAD + len(names)


def _whole_seconds(time_s: float | None) -> int | None:
    return None if time_s is None else max(0, int(time_s))
