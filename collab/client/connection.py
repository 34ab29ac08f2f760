"""Python client for the native protocol: one WebSocket, many documents, and a
connection that heals itself.

    client = await CollabClient.connect("ws://127.0.0.1:8000/ws")
    remote = await client.subscribe("notes")
    remote.doc.get("body", type=pycrdt.Text).insert(0, "hello")
    await remote.flushed()          # every local edit acknowledged (durable)
    await client.close()

Local edits to ``remote.doc`` are sent as they happen and kept until the server
acknowledges them; remote edits are applied to the same doc. When the connection
drops (a network cut, a dead peer found by the heartbeat, a server restart) the
client reconnects by itself, with exponential backoff and full jitter, and
resubscribes every document with its epoch, seq and state vector: the server
answers with only what it missed. Edits made meanwhile are merged into one
pending update and sent after the resync; nothing a user does raises because the
network is down. With ``queue_path`` the unacknowledged edits are also kept on
disk (collab.client.queue), so a process that restarts while offline still
delivers them. docs/CLIENT.md has the whole API.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

import pycrdt
from tornado.websocket import WebSocketClientConnection, websocket_connect

from collab.backoff import Backoff
from collab.client.queue import QueueFile
from collab.client.rebase import rebase
from collab.errors import InvalidUpdate, ProtocolError
from collab.tasks import TaskGroup
from collab.wire import crdt
from collab.wire.native import (
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
    ServerUpdate,
    Subscribe,
    Sync,
    Unsubscribe,
    Unsubscribed,
    Welcome,
    decode_server_message,
    encode,
)
from collab.wire.replica import EMPTY_UPDATE, Replica

log = logging.getLogger("collab.client")

# Close codes and errors after which reconnecting cannot help (docs/PROTOCOL.md).
PERMANENT_CLOSE_CODES = range(4400, 4500)
PERMANENT_ERRORS = frozenset({"unauthorized", "unsupported_version"})

# Opens a connection: ``dial(url, max_message_bytes)``. The default is Tornado's
# websocket_connect; another may return any object that reads as Tornado's
# WebSocketClientConnection to this client (write_message, read_message, close,
# close_code, close_reason, protocol.is_closing() and protocol._abort()), e.g. a
# connection to a server in the same process, for tests.
Dial = Callable[[str, int], Awaitable[WebSocketClientConnection]]


def _close_if_connected(future: asyncio.Future[WebSocketClientConnection]) -> None:
    if future.cancelled():
        return
    if future.exception() is None:
        future.result().close()


class ClientError(Exception):
    """The server refused something, or there is no connection to ask it."""

    def __init__(self, message: str, error: Error | None = None) -> None:
        super().__init__(message)
        self.error = error


class ClientState(StrEnum):
    CONNECTING = "connecting"  # the first connection is being opened
    ONLINE = "online"
    OFFLINE = "offline"  # the connection was lost; reconnecting (with backoff)
    CLOSED = "closed"  # closed by the application, or refused for good


class RemoteDocument:
    """A subscribed document: a pycrdt Doc kept in sync with the server.

    ``unacked`` holds the edits sent on the current connection and not yet
    acknowledged, ``pending`` the edits not sent yet (made offline, or before the
    sync), merged into one update. ``flushed()`` waits until both are empty."""

    def __init__(self, client: CollabClient, name: str, doc: pycrdt.Doc) -> None:
        self.client = client
        self.name = name
        self.epoch: str | None = None
        self.seq = 0  # every update up to this seq is in doc (sync, broadcast or ack)
        self.role: str | None = None
        self.synced = False  # the current connection's sync is complete
        self.unacked: dict[int, bytes] = {}
        self.pending: bytes | None = None
        self.error: Error | None = None  # why the server refused the subscription
        self.sync_mode: str | None = None  # diff, log or reset
        self.sync_update_bytes = 0  # size of the last sync answer
        self.sync_progress: tuple[int, int] | None = None  # (bytes, total) of a sync in parts
        self.updates_received = 0
        self.resets = 0
        self.on_reset: list[Callable[[RemoteDocument], None]] = []
        self.not_rebased: list[str] = []  # roots whose edits a reset could not carry over
        self.refused: list[Error] = []  # updates the server refused for good
        # What the server acknowledged: its updates and this client's acknowledged
        # edits. A reset carries over what the copy has beyond it.
        self._acknowledged = Replica(pycrdt.Doc(), name=name)
        self._refs = itertools.count(1)
        self._applying_remote = False
        self._parts: list[bytes] = []
        self._early: list[ServerUpdate] = []  # updates that came during a sync in parts
        self._synced_once = asyncio.Event()
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self._doc_subscription: pycrdt.Subscription | None = None
        self._attach(doc)

    def _attach(self, doc: pycrdt.Doc, awareness_state: dict[str, Any] | None = None) -> None:
        self.doc = doc
        self._replica = Replica(doc, name=self.name)
        self.awareness = pycrdt.Awareness(doc)
        if awareness_state is not None:
            self.awareness.set_local_state(awareness_state)
        self._doc_subscription = doc.observe(self._on_local_change)
        self._awareness_subscription = self.awareness.observe(self._on_awareness_change)

    def _detach(self) -> None:
        if self._doc_subscription is not None:
            self.doc.unobserve(self._doc_subscription)
            self.awareness.unobserve(self._awareness_subscription)
            self._doc_subscription = None

    @property
    def queued(self) -> int:
        """Edits not yet acknowledged (``pending`` counts as one)."""
        return len(self.unacked) + (self.pending is not None)

    @property
    def settled(self) -> bool:
        return not self.unacked and self.pending is None

    # -- local changes ------------------------------------------------------------------

    def _on_local_change(self, event: Any) -> None:
        if self._applying_remote:
            return
        self._replica.learn(event.update)
        sent = self.synced and self.role == "write" and self.client._send_update(self, event.update)
        if not sent:
            self._hold(event.update)
        self._queue_changed()

    def _hold(self, update: bytes) -> None:
        """Keep an edit to send after the next sync, merged with the others."""
        self.pending = update if self.pending is None else crdt.merge([self.pending, update])

    def _on_awareness_change(self, topic: str, args: tuple[dict[str, list[int]], Any]) -> None:
        changes, origin = args
        if topic != "update" or origin != "local" or not self.synced:
            return
        changed = changes["added"] + changes["updated"] + changes["removed"]
        update = self.awareness.encode_awareness_update(changed)
        self.client._send(Awareness(doc=self.name, update=update))

    def set_awareness(self, state: dict[str, Any] | None) -> None:
        self.awareness.set_local_state(state)

    # -- the offline queue --------------------------------------------------------------

    def _queue_changed(self) -> None:
        if self.client._queue is not None:
            self.client._queue.mark(self.name, self._queue_snapshot)

    def _queue_snapshot(self) -> tuple[str | None, bytes | None]:
        updates = [*self.unacked.values(), *([self.pending] if self.pending else [])]
        if not updates:
            return self.epoch, None
        return self.epoch, updates[0] if len(updates) == 1 else crdt.merge(updates)

    def _apply_acknowledged(self, update: bytes) -> None:
        try:
            self._acknowledged.apply(update, bounded=False)
        except InvalidUpdate as exc:
            log.error("%s: an acknowledged update cannot be applied: %s", self.name, exc)

    def _restore(self, epoch: str | None, updates: bytes) -> None:
        """Edits a previous process queued and the server never acknowledged."""
        self.epoch = epoch
        self._apply_remote(updates)  # into the doc, without sending it now
        self._hold(updates)

    # -- remote changes -----------------------------------------------------------------

    def _apply_remote(self, update: bytes) -> None:
        # Through a replica, as the server does: what waits for dependencies stays
        # out of pycrdt, whose own pending store would leave the doc unlike Yjs's.
        self._applying_remote = True
        try:
            self._replica.apply(update, bounded=False)
        except InvalidUpdate as exc:
            log.error("%s: the server sent an update that cannot be applied: %s", self.name, exc)
        finally:
            self._applying_remote = False

    def _receive(self, update: bytes) -> None:
        """An update from the server: into the doc and the acknowledged state."""
        self._apply_remote(update)
        self._apply_acknowledged(update)

    def _subscribe_message(self) -> Subscribe:
        resumable = self.epoch is not None and self.seq > 0
        return Subscribe(
            doc=self.name,
            sv=self.doc.get_state(),
            seq=self.seq if resumable else None,
            epoch=self.epoch,
        )

    def _on_sync(self, message: Sync) -> bool:
        """Handle one sync frame; True once the sync is complete."""
        if message.parts is not None and message.parts > 1:
            self._parts.append(message.update)
            received = sum(map(len, self._parts))
            self.sync_progress = (received, message.total_bytes or received)
            if len(self._parts) < message.parts:
                return False
            update, self._parts = b"".join(self._parts), []
        else:
            update = message.update
        self.sync_mode = message.mode
        self.sync_update_bytes = len(update)
        if message.mode == "reset":
            self._reset(update)
        else:
            self._receive(update)
        self.epoch, self.seq, self.role = message.epoch, message.seq, message.role
        self.synced = True
        early, self._early = self._early, []
        for later in early:
            self._on_update(later)
        if message.role == "write":
            # What the server lacks: everything not acknowledged is in it, so the
            # unacknowledged and pending edits are replaced by this one update.
            missing = self.doc.get_update(message.sv) if message.sv else EMPTY_UPDATE
            self.unacked.clear()
            self.pending = None
            if missing != EMPTY_UPDATE:
                self.client._send_update(self, missing)
        self._queue_changed()
        if self.awareness.get_local_state():
            mine = [self.awareness.client_id]
            update = self.awareness.encode_awareness_update(mine)
            self.client._send(Awareness(doc=self.name, update=update))
        self._synced_once.set()
        return True

    def _reset(self, state: bytes) -> None:
        """The server's document has another epoch than this copy (it was recreated
        or restored): drop the copy and take the server's, then make the edits the
        server never acknowledged again on it (collab.client.rebase), as new edits
        that the sync sends. Roots they could not be carried to are listed in
        ``not_rebased``."""
        log.warning("%s: the server's copy has a new epoch; dropping the local copy", self.name)
        old, acknowledged = self.doc, self._acknowledged.doc
        local_state = self.awareness.get_local_state()
        self._detach()
        self._attach(pycrdt.Doc(), local_state)
        self._acknowledged = Replica(pycrdt.Doc(), name=self.name)
        self._receive(state)
        unsettled = bool(self.unacked) or self.pending is not None
        self.unacked.clear()
        self.pending = None
        if unsettled:
            self.not_rebased = rebase(acknowledged, old, self.doc)  # observed: held, sent
            if self.not_rebased:
                log.warning(
                    "%s: edits to %s could not be carried over", self.name, self.not_rebased
                )
        self.unacked.clear()
        self.resets += 1
        self.seq = 0
        for callback in list(self.on_reset):
            try:
                callback(self)
            except Exception:
                log.exception("%s: an on_reset callback failed", self.name)

    def _on_update(self, message: ServerUpdate) -> None:
        if not self.synced:
            self._early.append(message)  # during a sync in parts: after it
            return
        if message.seq <= self.seq:
            return
        self.seq = message.seq
        self.updates_received += 1
        self._receive(message.update)

    def _on_ack(self, message: Ack) -> None:
        self.seq = max(self.seq, message.seq)
        update = self.unacked.pop(message.ref, None)
        if update is not None:
            self._apply_acknowledged(update)
            self._queue_changed()

    def _on_awareness(self, message: Awareness) -> None:
        self.awareness.apply_awareness_update(message.update, "remote")

    def _refused(self, error: Error) -> None:
        """The server refused one of this copy's updates. ``overloaded``: it was not
        applied; it is sent again shortly. Anything else (``invalid_update``,
        ``read_only``): it never will be; it is dropped and kept in ``refused``."""
        assert error.ref is not None
        update = self.unacked.pop(error.ref, None)
        if update is None:
            return
        if error.code == "overloaded":
            self._hold(update)
            self.client._resend_later(self)
        else:
            self.refused.append(error)
        self._queue_changed()

    def _send_pending(self) -> None:
        if self.pending is not None and self.synced and self.role == "write":
            update, self.pending = self.pending, None
            if not self.client._send_update(self, update):
                self._hold(update)

    def _connection_lost(self) -> None:
        """What was sent and not acknowledged is sent again after the next sync
        (the server recognises what it stored already: no second log entry)."""
        self.synced = False
        self._parts.clear()
        self._early.clear()
        self.sync_progress = None
        if self.unacked:
            for update in self.unacked.values():
                self._hold(update)
            self.unacked.clear()

    def _notify(self) -> None:
        for waiter in list(self._waiters):
            predicate, future = waiter
            if not future.done() and predicate():
                future.set_result(None)

    # -- waiting ------------------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float | None = 10.0) -> None:
        """Wait until ``predicate()`` holds; it is re-checked after every message
        for this document and every change of the connection."""
        if predicate():
            return
        waiter = (predicate, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter[1], timeout_s)
        finally:
            self._waiters.remove(waiter)

    async def flushed(self, timeout_s: float | None = 10.0) -> None:
        """Wait until every local edit so far is acknowledged, i.e. durably stored,
        across reconnects."""
        await self.wait_for(lambda: self.settled, timeout_s)

    def close(self) -> None:
        """Stop following the doc's changes. Safe to call twice."""
        self._detach()


class CollabClient:
    """A native-protocol client of one server (options: docs/CLIENT.md).

    ``dial`` replaces how a connection is opened (default: Tornado's
    ``websocket_connect(url)``); everything else behaves the same whatever opened
    it. Tests use it to reach a server in the same process without a socket."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        client_id: str | None = None,
        reconnect: bool = True,
        backoff_min_s: float = 0.2,
        backoff_max_s: float = 10.0,
        heartbeat_s: float = 10.0,
        heartbeat_timeout_s: float = 10.0,
        connect_timeout_s: float = 10.0,
        max_message_bytes: int = 64 * 1024 * 1024,
        queue_path: str | Path | None = None,
        dial: Dial | None = None,
    ) -> None:
        self.url = url
        self._dial = dial
        self.token = token
        self.client_id = client_id
        self.reconnect = reconnect
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.heartbeat_s = heartbeat_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.max_message_bytes = max_message_bytes
        self.state = ClientState.CONNECTING
        self.ws: WebSocketClientConnection | None = None
        self.welcome: Welcome | None = None
        self.documents: dict[str, RemoteDocument] = {}
        # The latest errors, for next_error(); the oldest are dropped past the bound.
        self.errors: asyncio.Queue[Error] = asyncio.Queue(maxsize=256)
        self.rtt_s: float | None = None  # of the latest heartbeat
        self.last_error: str | None = None
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.connections = 0  # connections opened so far
        self.refusal: Error | None = None  # why the server refused this client for good
        self.on_state_change: list[Callable[[ClientState], None]] = []
        self._queue = QueueFile(queue_path) if queue_path is not None else None
        self._pending: dict[tuple[str, str], asyncio.Future[Any]] = {}
        self._pings = itertools.count(1)
        self._history_ids = itertools.count(1)
        self._tasks = TaskGroup(log)
        self._state_changed = asyncio.Event()
        self._disconnected = asyncio.Event()
        self._closing = False

    @classmethod
    async def connect(
        cls, url: str, *, wait_online: bool = True, timeout_s: float = 10.0, **options: Any
    ) -> CollabClient:
        """A started client for ``url`` (``ws://host:port/ws``). With ``wait_online``
        (the default) it returns once connected, and raises ClientError when it
        cannot be within ``timeout_s`` or is refused; without, it returns at once
        and connects in the background (edits wait in its queue meanwhile)."""
        client = cls(url, connect_timeout_s=timeout_s, **options)
        await client.start()
        if wait_online:
            try:
                await client.wait_online(timeout_s)
            except BaseException:
                await client.close()
                raise
        return client

    async def start(self) -> None:
        if self._queue is not None:
            await self._queue.open()
        self._tasks.spawn(self._run(), name="client connection")

    @property
    def online(self) -> bool:
        return self.state is ClientState.ONLINE

    @property
    def queued(self) -> int:
        """Local edits not yet acknowledged, over every document."""
        return sum(remote.queued for remote in self.documents.values())

    def _set_state(self, state: ClientState) -> None:
        if state is self.state:
            return
        self.state = state
        self._state_changed.set()
        self._state_changed = asyncio.Event()
        for callback in list(self.on_state_change):
            try:
                callback(state)
            except Exception:
                log.exception("an on_state_change callback failed")
        for remote in self.documents.values():
            remote._notify()

    async def wait_online(self, timeout_s: float | None = 10.0) -> None:
        """Wait until connected; ClientError if the client is closed, refused, or
        not connected within ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                while self.state is not ClientState.ONLINE:
                    if self.state is ClientState.CLOSED:
                        reason = self.last_error or "closed"
                        raise ClientError(f"not connected: {reason}", self.refusal)
                    await self._state_changed.wait()
        except TimeoutError:
            raise ClientError(
                f"not connected within {timeout_s}s: {self.last_error}", self.refusal
            ) from None

    # -- the connection -----------------------------------------------------------------

    async def _run(self) -> None:
        # Full jitter: clients cut off together do not come back together.
        backoff = Backoff(self.backoff_min_s, self.backoff_max_s, jitter=True)
        while not self._closing:
            try:
                ws, welcome = await self._open()
            except ClientError as exc:
                self.last_error = str(exc)
                if exc.error is not None and exc.error.code in PERMANENT_ERRORS:
                    log.error("the server refused this client: %s", exc)
                    self.refusal = exc.error
                    self._set_state(ClientState.CLOSED)
                    return
            except Exception as exc:  # refused, unreachable, timed out, bad handshake
                self.last_error = f"could not connect: {exc!r}"
            else:
                if self._closing:
                    # close() ran while this connected (on Python 3.11, wait_for can
                    # return a result although its caller was cancelled meanwhile).
                    ws.close()
                    break
                backoff.reset()
                await self._online(ws, welcome)
                if self._closing:
                    break
                if not self.reconnect or self.close_code in PERMANENT_CLOSE_CODES:
                    self._set_state(ClientState.CLOSED)
                    return
            if self.state is not ClientState.CONNECTING:
                self._set_state(ClientState.OFFLINE)
            if not self.reconnect and self.connections == 0:
                self._set_state(ClientState.CLOSED)
                return
            await backoff.wait()
        self._set_state(ClientState.CLOSED)

    async def _open(self) -> tuple[WebSocketClientConnection, Welcome]:
        if self._dial is None:
            connecting = websocket_connect(self.url, max_message_size=self.max_message_bytes)
        else:
            connecting = asyncio.ensure_future(self._dial(self.url, self.max_message_bytes))
        try:
            # Shielded: cancelling Tornado's connect leaves a half-open connection
            # behind; it is closed when it completes instead.
            ws = await asyncio.wait_for(asyncio.shield(connecting), self.connect_timeout_s)
        except BaseException:
            connecting.add_done_callback(_close_if_connected)
            raise
        try:
            hello = Hello(
                version=PROTOCOL_VERSION,
                client=self.client_id,
                token=self.token,
                max_frame_bytes=self.max_message_bytes,
            )
            ws.write_message(encode(hello), binary=True)
            frame = await asyncio.wait_for(ws.read_message(), self.connect_timeout_s)
            if frame is None:
                raise ClientError(f"connection closed: {ws.close_code} {ws.close_reason}")
            message = decode_server_message(frame if isinstance(frame, bytes) else frame.encode())
            if isinstance(message, Error):
                raise ClientError(f"{message.code}: {message.message}", message)
            if not isinstance(message, Welcome):
                raise ClientError(f"expected welcome, got {message.TYPE}")
        except BaseException:
            ws.close()
            raise
        return ws, message

    async def _online(self, ws: WebSocketClientConnection, welcome: Welcome) -> None:
        """Serve one connection until it ends."""
        self.ws, self.welcome = ws, welcome
        self.connections += 1
        self.close_code = self.close_reason = None
        self._disconnected.clear()
        self._set_state(ClientState.ONLINE)
        for remote in self.documents.values():
            if remote.error is None:
                self._send(remote._subscribe_message())
        heartbeat = self._tasks.spawn(self._heartbeat(ws), name="client heartbeat")
        try:
            await self._read_loop(ws)
        finally:
            heartbeat.cancel()
            ws.close()  # also when the stream died: Tornado warns of any never closed
            self.ws = None
            self.close_code, self.close_reason = ws.close_code, ws.close_reason
            if self.close_code is not None:
                self.last_error = f"connection closed: {self.close_code} {self.close_reason}"
            gone = ClientError(f"connection closed: {self.close_code} {self.close_reason}")
            for key, future in list(self._pending.items()):
                if key[0] != "sync" and not future.done():
                    future.set_exception(gone)
                    future.exception()
                    del self._pending[key]
            for remote in self.documents.values():
                remote._connection_lost()
            self._disconnected.set()

    async def _read_loop(self, ws: WebSocketClientConnection) -> None:
        while True:
            frame = await ws.read_message()
            if frame is None:
                return
            if isinstance(frame, str):
                log.warning("ignoring a text frame from the server")
                continue
            try:
                message = decode_server_message(frame)
            except ProtocolError as exc:
                log.warning("ignoring a frame the server sent: %s", exc)
                continue
            self._dispatch(message)

    async def _heartbeat(self, ws: WebSocketClientConnection) -> None:
        """An application ping every ``heartbeat_s``; no pong within
        ``heartbeat_timeout_s`` means the connection is dead, whatever TCP says."""
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                self.rtt_s = await self.ping(timeout_s=self.heartbeat_timeout_s)
            except (TimeoutError, ClientError):
                if self.ws is not ws:
                    return
                self.last_error = f"no pong within {self.heartbeat_timeout_s}s"
                log.warning("the connection seems dead (%s); reconnecting", self.last_error)
                ws.close()
                if ws.protocol is not None:
                    # Do not wait for a close handshake with a peer that is gone.
                    ws.protocol._abort()  # type: ignore[attr-defined]
                return

    # -- documents ----------------------------------------------------------------------

    async def subscribe(
        self,
        name: str,
        doc: pycrdt.Doc | None = None,
        *,
        wait: bool = True,
        timeout_s: float | None = 10.0,
    ) -> RemoteDocument:
        """Subscribe to a document. With ``wait`` (the default), return once it is
        synced; ClientError if the server refuses it. Pass the ``doc`` of an earlier
        subscription to resubscribe: only what it lacks is sent. Edits queued on
        disk for this document by an earlier process are sent after the sync."""
        if name in self.documents:
            raise ClientError(f"already subscribed to {name!r}")
        remote = RemoteDocument(self, name, doc if doc is not None else pycrdt.Doc())
        if self._queue is not None:
            queued = await self._queue.load(name)
            if queued is not None:
                remote._restore(*queued)
        self.documents[name] = remote
        if self.online:
            self._send(remote._subscribe_message())
        if not wait:
            return remote
        try:
            await remote.wait_for(
                lambda: (
                    remote._synced_once.is_set()
                    or remote.error is not None
                    or self.state is ClientState.CLOSED
                ),
                timeout_s,
            )
        except BaseException:
            self._forget(name)
            raise
        if remote.error is not None or not remote._synced_once.is_set():
            self._forget(name)
            error = remote.error
            raise ClientError(
                error.message if error else f"not connected: {self.last_error}", error
            )
        return remote

    def _resend_later(self, remote: RemoteDocument) -> None:
        """Send a document's pending edits again after a pause (the server was
        overloaded), unless a resync does it first."""

        async def resend() -> None:
            await asyncio.sleep(random.uniform(0.5, 1.5) * max(self.backoff_min_s, 0.2))
            remote._send_pending()
            remote._notify()

        if not self._tasks.closed:
            self._tasks.spawn(resend(), name=f"resend {remote.name}")

    def _forget(self, name: str) -> None:
        remote = self.documents.pop(name, None)
        if remote is not None:
            remote.close()

    async def unsubscribe(self, name: str, *, timeout_s: float = 10.0) -> None:
        remote = self.documents[name]
        if self.online:
            answer = self._expect("unsubscribed", name)
            self._send(Unsubscribe(doc=name))
            with contextlib.suppress(ClientError):
                await asyncio.wait_for(answer, timeout_s)
        self._forget(name)
        if self._queue is not None and remote.settled:
            self._queue.mark(name, lambda: (remote.epoch, None))

    async def ping(self, *, timeout_s: float = 10.0) -> float:
        """Round-trip time of an application ping, in seconds."""
        if not self.online:
            raise ClientError("not connected")
        ping_id = next(self._pings)
        answer = self._expect("pong", str(ping_id))
        start = time.perf_counter()
        self._send(Ping(id=ping_id))
        try:
            await asyncio.wait_for(answer, timeout_s)
        finally:
            self._pending.pop(("pong", str(ping_id)), None)
        return time.perf_counter() - start

    async def history(
        self,
        doc: str,
        *,
        after: int = 0,
        until: int | None = None,
        limit: int | None = None,
        timeout_s: float = 10.0,
    ) -> HistoryPage:
        """One page of ``doc``'s stored updates after seq ``after`` (no subscription
        needed; read access is). Raises ClientError when refused."""
        if not self.online:
            raise ClientError("not connected")
        request_id = next(self._history_ids)
        answer = self._expect("history", str(request_id))
        self._send(History(doc=doc, id=request_id, after=after, until=until, limit=limit))
        try:
            result = await asyncio.wait_for(answer, timeout_s)
        finally:
            self._pending.pop(("history", str(request_id)), None)
        if isinstance(result, Error):
            raise ClientError(f"{result.code}: {result.message}", result)
        assert isinstance(result, HistoryPage)
        return result

    async def history_pages(
        self, doc: str, *, after: int = 0, until: int | None = None
    ) -> AsyncIterator[HistoryPage]:
        """Every page of ``doc``'s history after ``after``, one request at a time."""
        while True:
            page = await self.history(doc, after=after, until=until)
            yield page
            if page.next_after is None:
                return
            after = page.next_after

    async def next_error(self, timeout_s: float = 10.0) -> Error:
        return await asyncio.wait_for(self.errors.get(), timeout_s)

    # -- plumbing -----------------------------------------------------------------------

    def _expect(self, kind: str, key: str) -> asyncio.Future[Any]:
        future = asyncio.get_running_loop().create_future()
        self._pending[(kind, key)] = future
        return future

    def _resolve(self, kind: str, key: str, value: Any) -> None:
        future = self._pending.pop((kind, key), None)
        if future is not None and not future.done():
            future.set_result(value)

    def _send(self, message: Message) -> bool:
        """Send if connected; False otherwise (never raises: what matters is kept
        and sent again after the next sync)."""
        ws = self.ws
        if ws is None or ws.protocol is None or ws.protocol.is_closing():
            return False
        try:
            written = ws.write_message(encode(message), binary=True)
        except Exception:
            return False
        written.add_done_callback(lambda f: f.cancelled() or f.exception())
        return True

    def _send_update(self, remote: RemoteDocument, update: bytes) -> bool:
        ref = next(remote._refs)
        if not self._send(ClientUpdate(doc=remote.name, ref=ref, update=update)):
            return False
        remote.unacked[ref] = update
        return True

    def _dispatch(self, message: Message) -> None:
        doc = getattr(message, "doc", None)
        remote = self.documents.get(doc) if doc is not None else None
        match message:
            case Sync() if remote is not None:
                remote._on_sync(message)
            case ServerUpdate() if remote is not None:
                remote._on_update(message)
            case Ack() if remote is not None:
                remote._on_ack(message)
            case Awareness() if remote is not None:
                remote._on_awareness(message)
            case Unsubscribed():
                self._resolve("unsubscribed", message.doc, None)
            case Pong():
                self._resolve("pong", str(message.id), message)
            case HistoryPage():
                self._resolve("history", str(message.id), message)
            case Error() if message.id is not None:  # about a history request
                self._resolve("history", str(message.id), message)
            case Error():
                if self.errors.full():
                    self.errors.get_nowait()
                self.errors.put_nowait(message)
                if remote is not None and message.ref is not None:
                    remote._refused(message)
                if remote is not None and message.ref is None:
                    if not remote.synced:
                        remote.error = message  # the subscription was refused
                    elif message.code == "load_failed":
                        # The server dropped the document (it reloads it): subscribe again.
                        remote._connection_lost()
                        self._send(remote._subscribe_message())
        if remote is not None:
            remote._notify()

    async def closed(self, timeout_s: float = 10.0) -> None:
        """Wait until the current connection is closed (by the server, or lost)."""
        await asyncio.wait_for(self._disconnected.wait(), timeout_s)

    async def close(self) -> None:
        """Stop reconnecting, close the connection, save the offline queue."""
        self._closing = True
        ws = self.ws
        if ws is not None:
            ws.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._disconnected.wait(), 5)
        await self._tasks.close()
        self._set_state(ClientState.CLOSED)
        if self._queue is not None:
            await self._queue.close()
        for remote in self.documents.values():
            remote.close()
        self.documents.clear()
