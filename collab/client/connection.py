"""Python client for the native protocol: one WebSocket, many documents.

    client = await CollabClient.connect("ws://127.0.0.1:8000/ws")
    remote = await client.subscribe("notes")
    remote.doc.get("body", type=pycrdt.Text).insert(0, "hello")
    await remote.flushed()          # every local edit acknowledged (durable)
    await client.close()

Local edits to ``remote.doc`` are sent as they happen and kept in
``remote.unacked`` until the server acknowledges them; remote edits are applied
to the same doc.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

import pycrdt
from tornado.websocket import WebSocketClientConnection, websocket_connect

from collab.errors import InvalidUpdate
from collab.tasks import TaskGroup
from collab.wire.native import (
    PROTOCOL_VERSION,
    Ack,
    Awareness,
    ClientUpdate,
    Error,
    Hello,
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
from collab.wire.replica import Replica

log = logging.getLogger("collab.client")


class ClientError(Exception):
    """The server refused something, or the connection is gone."""

    def __init__(self, message: str, error: Error | None = None) -> None:
        super().__init__(message)
        self.error = error


class RemoteDocument:
    """A subscribed document: a pycrdt Doc kept in sync with the server."""

    def __init__(self, client: CollabClient, name: str, doc: pycrdt.Doc) -> None:
        self.client = client
        self.name = name
        self.doc = doc
        self.awareness = pycrdt.Awareness(doc)
        self._replica = Replica(doc, name=name)
        self.epoch: str | None = None
        self.seq = 0  # highest seq seen (sync, broadcast or ack)
        self.role: str | None = None
        self.unacked: dict[int, bytes] = {}
        self.sync_update_bytes = 0  # size of the last sync answer, for diagnostics
        self.updates_received = 0
        self._refs = itertools.count(1)
        self._applying_remote = False
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self._doc_subscription: pycrdt.Subscription | None = doc.observe(self._on_local_change)
        self._awareness_subscription = self.awareness.observe(self._on_awareness_change)

    # -- local changes ------------------------------------------------------------------

    def _on_local_change(self, event: Any) -> None:
        if self._applying_remote:
            return
        self._replica.learn(event.update)
        ref = next(self._refs)
        self.unacked[ref] = event.update
        self.client._send(ClientUpdate(doc=self.name, ref=ref, update=event.update))

    def _on_awareness_change(self, topic: str, args: tuple[dict[str, list[int]], Any]) -> None:
        changes, origin = args
        if topic != "update" or origin != "local":
            return
        changed = changes["added"] + changes["updated"] + changes["removed"]
        update = self.awareness.encode_awareness_update(changed)
        self.client._send(Awareness(doc=self.name, update=update))

    def set_awareness(self, state: dict[str, Any] | None) -> None:
        self.awareness.set_local_state(state)

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

    def _on_sync(self, message: Sync) -> None:
        self.epoch, self.seq, self.role = message.epoch, message.seq, message.role
        self.sync_update_bytes = len(message.update)
        self._apply_remote(message.update)
        if message.role == "write":
            # Sync step 1 from the server: send what it lacks.
            missing = self.doc.get_update(message.sv)
            if missing != b"\x00\x00":
                ref = next(self._refs)
                self.unacked[ref] = missing
                self.client._send(ClientUpdate(doc=self.name, ref=ref, update=missing))
        if self.awareness.get_local_state():
            mine = [self.awareness.client_id]
            update = self.awareness.encode_awareness_update(mine)
            self.client._send(Awareness(doc=self.name, update=update))

    def _on_update(self, message: ServerUpdate) -> None:
        self.seq = max(self.seq, message.seq)
        self.updates_received += 1
        self._apply_remote(message.update)

    def _on_ack(self, message: Ack) -> None:
        self.seq = max(self.seq, message.seq)
        self.unacked.pop(message.ref, None)

    def _on_awareness(self, message: Awareness) -> None:
        self.awareness.apply_awareness_update(message.update, "remote")

    def _notify(self) -> None:
        for waiter in list(self._waiters):
            predicate, future = waiter
            if not future.done() and predicate():
                future.set_result(None)

    # -- waiting ------------------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
        """Wait until ``predicate()`` holds; it is re-checked after every message
        for this document."""
        if predicate():
            return
        waiter = (predicate, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter[1], timeout_s)
        finally:
            self._waiters.remove(waiter)

    async def flushed(self, timeout_s: float = 10.0) -> None:
        """Wait until every local edit is acknowledged, i.e. durably stored."""
        await self.wait_for(lambda: not self.unacked, timeout_s)

    def close(self) -> None:
        """Stop following the doc's changes. Safe to call twice."""
        if self._doc_subscription is None:
            return
        self.doc.unobserve(self._doc_subscription)
        self.awareness.unobserve(self._awareness_subscription)
        self._doc_subscription = None


class CollabClient:
    def __init__(self, ws: WebSocketClientConnection, welcome: Welcome) -> None:
        self.ws = ws
        self.welcome = welcome
        self.documents: dict[str, RemoteDocument] = {}
        self.errors: asyncio.Queue[Error] = asyncio.Queue()
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._pending: dict[tuple[str, str], asyncio.Future[Any]] = {}
        self._pings = itertools.count(1)
        self._tasks = TaskGroup(log)
        self._closed = asyncio.Event()

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        token: str | None = None,
        client_id: str | None = None,
        timeout_s: float = 10.0,
        max_message_bytes: int = 64 * 1024 * 1024,
    ) -> CollabClient:
        """Open a socket to ``url`` (``ws://host:port/ws``) and say hello."""
        ws = await asyncio.wait_for(
            websocket_connect(url, max_message_size=max_message_bytes), timeout_s
        )
        hello = Hello(version=PROTOCOL_VERSION, client=client_id, token=token)
        ws.write_message(encode(hello), binary=True)
        frame = await asyncio.wait_for(ws.read_message(), timeout_s)
        if frame is None:
            raise ClientError(f"connection closed: {ws.close_code} {ws.close_reason}")
        message = decode_server_message(frame if isinstance(frame, bytes) else frame.encode())
        if isinstance(message, Error):
            ws.close()
            raise ClientError(f"{message.code}: {message.message}", message)
        if not isinstance(message, Welcome):
            ws.close()
            raise ClientError(f"expected welcome, got {message.TYPE}")
        client = cls(ws, message)
        client._tasks.spawn(client._read_loop(), name="client reader")
        return client

    # -- documents ----------------------------------------------------------------------

    async def subscribe(
        self, name: str, doc: pycrdt.Doc | None = None, *, timeout_s: float = 10.0
    ) -> RemoteDocument:
        """Subscribe and wait for the sync answer. Pass the ``doc`` of an earlier
        subscription to resubscribe: only what it lacks is sent."""
        if name in self.documents:
            raise ClientError(f"already subscribed to {name!r}")
        doc = doc if doc is not None else pycrdt.Doc()
        remote = RemoteDocument(self, name, doc)
        self.documents[name] = remote
        answer = self._expect("sync", name)
        self._send(Subscribe(doc=name, sv=doc.get_state(), seq=remote.seq or None))
        try:
            await asyncio.wait_for(answer, timeout_s)
        except BaseException:
            self.documents.pop(name, None)
            remote.close()
            raise
        return remote

    async def unsubscribe(self, name: str, *, timeout_s: float = 10.0) -> None:
        remote = self.documents[name]
        answer = self._expect("unsubscribed", name)
        self._send(Unsubscribe(doc=name))
        await asyncio.wait_for(answer, timeout_s)
        del self.documents[name]
        remote.close()

    async def ping(self, *, timeout_s: float = 10.0) -> float:
        """Round-trip time of an application PING, in seconds."""
        ping_id = next(self._pings)
        answer = self._expect("pong", str(ping_id))
        start = time.perf_counter()
        self._send(Ping(id=ping_id))
        await asyncio.wait_for(answer, timeout_s)
        return time.perf_counter() - start

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
            if isinstance(value, BaseException):
                future.set_exception(value)
            else:
                future.set_result(value)

    def _send(self, message: Message) -> None:
        try:
            written = self.ws.write_message(encode(message), binary=True)
        except Exception as exc:
            raise ClientError(f"connection closed: {exc}") from None
        written.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def _read_loop(self) -> None:
        try:
            while True:
                frame = await self.ws.read_message()
                if frame is None:
                    break
                if isinstance(frame, str):
                    log.warning("ignoring a text frame from the server")
                    continue
                self._dispatch(decode_server_message(frame))
        finally:
            self.close_code, self.close_reason = self.ws.close_code, self.ws.close_reason
            gone = ClientError(f"connection closed: {self.close_code} {self.close_reason}")
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(gone)
                    future.exception()
            self._pending.clear()
            self._closed.set()

    def _dispatch(self, message: Message) -> None:
        doc = getattr(message, "doc", None)
        remote = self.documents.get(doc) if doc is not None else None
        match message:
            case Sync() if remote is not None:
                remote._on_sync(message)
                self._resolve("sync", message.doc, remote)
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
            case Error():
                self.errors.put_nowait(message)
                if message.doc is not None and message.ref is None:
                    self._resolve("sync", message.doc, ClientError(message.message, message))
        if remote is not None:
            remote._notify()

    async def closed(self, timeout_s: float = 10.0) -> None:
        """Wait until the server closes the connection."""
        await asyncio.wait_for(self._closed.wait(), timeout_s)

    async def close(self) -> None:
        # Always close, even after the server did: Tornado warns about client
        # connections that were never closed.
        self.ws.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed.wait(), 5)
        await self._tasks.close()
        for remote in self.documents.values():
            remote.close()
        self.documents.clear()
