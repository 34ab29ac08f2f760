"""A y-websocket peer for tests, in Python: what y-websocket's WebsocketProvider does.

On open it sends sync step 1 and its awareness state; it answers the server's step 1
with step 2, applies step 2 and updates, sends its local edits as they happen (never
echoing remote ones back), keeps everyone's awareness in a ``pycrdt.Awareness``,
answers a query-awareness, and on close forgets every awareness state but its own.
Everything it learns is waited on with ``wait_for(predicate)``, never with sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import pycrdt
from pycrdt import (
    Decoder,
    YMessageType,
    YSyncMessageType,
    create_awareness_message,
    create_sync_message,
    create_update_message,
    read_message,
    write_message,
)
from tornado.websocket import WebSocketClientConnection, WebSocketClosedError, websocket_connect

from collab.app import CollabServer
from collab.wire.replica import Replica
from collab.wire.yformat import decode_state_vector

TIMEOUT_S = 10.0
Opener = Callable[[], Awaitable[Any]]  # a WebSocketClientConnection, or what reads as one
MESSAGE_AUTH = 2  # y-protocols auth: server to client, "permission denied"
MESSAGE_QUERY_AWARENESS = 3


class YjsPeer:
    """One y-websocket connection to ``url``, with a doc that outlives reconnects."""

    def __init__(
        self, url: str, doc: pycrdt.Doc | None = None, opener: Opener | None = None
    ) -> None:
        self.url = url
        # How a socket is opened: a real one to ``url``, or another (in-process) one.
        self._open_socket = opener or (
            lambda: websocket_connect(url, max_message_size=64 * 1024 * 1024)
        )
        self.doc = doc if doc is not None else pycrdt.Doc()
        # Remote updates go through a replica, as in the server and collab.client, so
        # that what waits for dependencies is held as Yjs holds it.
        self.replica = Replica(self.doc)
        self.awareness = pycrdt.Awareness(self.doc)
        self.last_frame: dict[int, bytes] = {}  # the latest frame of each message type
        self.permission_denied: list[str] = []  # reasons of auth messages
        # Every update it holds, in the order it got them: the sync step 2s and
        # updates it received, and its own edits.
        self.history: list[bytes] = []
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._ws: WebSocketClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._applying_remote = False
        # Per connection: the server answers each step 1 with one step 2, in order.
        self._step1_sent = 0
        self._step2_received = 0
        self._answered_server = False  # replied to the server's own step 1
        self._failure: BaseException | None = None
        self.doc.observe(self._on_doc_change)
        self.awareness.observe(self._on_awareness_change)

    @property
    def connected(self) -> bool:
        return self._ws is not None

    # -- connection ---------------------------------------------------------------------

    async def reconnect(self) -> None:
        """Open a socket, greeting the server as the provider's ``onopen`` does."""
        assert not self.connected, "already connected"
        self.close_code = self.close_reason = None
        self._step1_sent = self._step2_received = 0
        self._answered_server = False
        ws = await asyncio.wait_for(self._open_socket(), TIMEOUT_S)
        self._ws = ws
        self._send_step1()
        if self.awareness.get_local_state() is not None:
            mine = self.awareness.encode_awareness_update([self.awareness.client_id])
            self.send(create_awareness_message(mine))
        # Tornado buffers frames until they are read, so nothing is missed in between.
        self._reader = asyncio.get_running_loop().create_task(self._read_loop(ws))

    async def disconnect(self) -> None:
        """Close the socket and wait until it is closed. Safe to call twice."""
        if self._ws is not None:
            self._ws.close()
        await self.closed()

    async def closed(self, timeout_s: float = TIMEOUT_S) -> tuple[int | None, str | None]:
        """Wait until the socket is closed (by either side); return (code, reason)."""
        if self._reader is not None:
            await asyncio.wait_for(asyncio.shield(self._reader), timeout_s)
        return self.close_code, self.close_reason

    async def synced(self, timeout_s: float = TIMEOUT_S) -> None:
        """Wait until the first sync exchange is done both ways, then send step 1 once
        more and wait for its step 2. The server handles one peer's messages in
        order, so by then it has handled everything this peer sent before."""
        await self.wait_for(lambda: self._open() and self._answered_server, timeout_s)
        self._send_step1()
        await self.wait_for(
            lambda: self._open() and self._step2_received >= self._step1_sent, timeout_s
        )

    def _open(self) -> bool:
        if not self.connected:
            raise AssertionError(f"{self} was closed: {self.close_code} {self.close_reason}")
        return True

    # -- output -------------------------------------------------------------------------

    def send(self, frame: bytes | str) -> None:
        """Send one frame as is; dropped while disconnected, as the provider does."""
        if self._ws is None:
            return
        try:
            written = self._ws.write_message(frame, binary=isinstance(frame, bytes))
        except WebSocketClosedError:
            return
        written.add_done_callback(lambda f: f.cancelled() or f.exception())

    def _send_step1(self) -> None:
        self._step1_sent += 1
        self.send(create_sync_message(self.doc))

    def query_awareness(self) -> None:
        self.send(bytes([MESSAGE_QUERY_AWARENESS]))

    def _on_doc_change(self, event: Any) -> None:
        if not self._applying_remote:
            self.history.append(event.update)
            self.replica.learn(event.update)
            self.send(create_update_message(event.update))

    def _on_awareness_change(self, topic: str, args: tuple[dict[str, list[int]], Any]) -> None:
        changes, origin = args
        if topic == "update" and origin == "local":
            changed = changes["added"] + changes["updated"] + changes["removed"]
            self.send(create_awareness_message(self.awareness.encode_awareness_update(changed)))

    # -- input --------------------------------------------------------------------------

    async def _read_loop(self, ws: WebSocketClientConnection) -> None:
        try:
            while (frame := await ws.read_message()) is not None:
                try:
                    self._receive(frame)
                except Exception as exc:  # surfaced by wait_for, not lost in a task
                    self._failure = exc
                    ws.close()
                self._changed.set()
        finally:
            self.close_code, self.close_reason = ws.close_code, ws.close_reason
            ws.close()  # after a close by the server too: Tornado warns about it otherwise
            self._ws = None
            # The provider forgets everyone else when its socket closes.
            others = [c for c in self.awareness.states if c != self.awareness.client_id]
            self.awareness.remove_awareness_states(others, "connection closed")
            self._changed.set()

    def _receive(self, frame: bytes | str) -> None:
        if isinstance(frame, str):
            raise AssertionError(f"the server sent a text frame: {frame!r}")
        message_type = frame[0]
        self.last_frame[message_type] = frame
        if message_type == YMessageType.SYNC:
            if frame[1] == YSyncMessageType.SYNC_STEP2:
                self._step2_received += 1
            payload = read_message(frame[2:])
            if frame[1] == YSyncMessageType.SYNC_STEP1:
                step2 = bytes([YMessageType.SYNC, YSyncMessageType.SYNC_STEP2])
                self.send(step2 + write_message(self.doc.get_update(payload)))
                self._answered_server = True
                return
            self.history.append(payload)
            self._applying_remote = True
            try:
                self.replica.apply(payload, bounded=False)
            finally:
                self._applying_remote = False
        elif message_type == YMessageType.AWARENESS:
            self.awareness.apply_awareness_update(read_message(frame[1:]), "remote")
        elif message_type == MESSAGE_AUTH:
            self.permission_denied.append(Decoder(frame[2:]).read_var_string())
        elif message_type == MESSAGE_QUERY_AWARENESS:
            everyone = self.awareness.encode_awareness_update(list(self.awareness.states))
            self.send(create_awareness_message(everyone))

    # -- waiting ------------------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = TIMEOUT_S) -> None:
        """Wait until ``predicate()`` holds; it is re-checked after every frame
        this peer receives and when its socket closes."""
        try:
            async with asyncio.timeout(timeout_s):
                while self._failure is None and not predicate():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"{self} timed out waiting for {predicate}") from None
        if self._failure is not None:
            raise self._failure

    def __str__(self) -> str:
        return f"<YjsPeer {self.url} client {self.doc.client_id}>"


class YjsPeers:
    """Opens y-websocket peers for one test and closes them all after it."""

    def __init__(self) -> None:
        self.peers: list[YjsPeer] = []

    async def connect(self, server: Any, path: str, doc: pycrdt.Doc | None = None) -> YjsPeer:
        """A peer on ``/yjs/<path>``; ``path`` is sent as given (encoding, query).
        ``server``: a CollabServer, or an in-process one (tests/inprocess.py)."""
        if isinstance(server, CollabServer):
            peer = YjsPeer(f"ws://127.0.0.1:{server.port}/yjs/{path}", doc)
        else:
            peer = YjsPeer(f"inprocess:/yjs/{path}", doc, opener=lambda: server.websocket(path))
        await peer.reconnect()
        self.peers.append(peer)
        return peer

    async def close(self) -> None:
        for peer in self.peers:
            with contextlib.suppress(TimeoutError):
                await peer.disconnect()


def state_vector(peer: YjsPeer) -> dict[int, int]:
    return decode_state_vector(peer.doc.get_state())


async def converge(*peers: YjsPeer, timeout_s: float = TIMEOUT_S) -> None:
    """Wait until every peer has every edit that any of them has now."""
    target: dict[int, int] = {}
    for peer in peers:
        for client, clock in state_vector(peer).items():
            target[client] = max(clock, target.get(client, 0))

    def has_all(peer: YjsPeer) -> bool:
        have = state_vector(peer)
        return all(have.get(client, 0) >= clock for client, clock in target.items())

    for peer in peers:
        await peer.wait_for(lambda peer=peer: has_all(peer), timeout_s)
