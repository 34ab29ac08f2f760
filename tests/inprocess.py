"""Protocol rules without sockets: the peer state machines (collab.peers.native,
collab.peers.yjs) driven in-process, on a room manager over the memory store.

An :class:`InProcessPeer` is both ends of a WebSocket at once: the test writes
frames into it as a client would, and the connection it drives sends its frames
back through it as through its transport. It reads as Tornado's handler does:
one message at a time, awaiting what ``receive`` returns before the next (the
connection's backpressure), refusing messages past ``max_frame_bytes`` with
1009, and leaving the rooms when either side closes. Its API is
:class:`tests.helpers.RawPeer`'s, so a test reads the same either way.
:meth:`InProcessServer.dial` opens one as a client's socket
(:class:`InProcessWebSocket`, shaped as Tornado's): collab.client.CollabClient
takes it as its ``dial``, tests/yjs_peer.py as its opener. Modules marked
``inprocess`` get all this from the usual fixtures (tests/conftest.py).

Real servers stay where they are what is tested (sockets, kills, restarts,
instances, browsers, interop); the rules of the protocols are tables of frames
and answers, and run here in milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from tornado.ioloop import IOLoop
from tornado.websocket import WebSocketClosedError

from collab.auth import Authenticator
from collab.config import Settings
from collab.core.manager import RoomManager
from collab.errors import AccessDenied, CloseCode, ProtocolError
from collab.metrics import Metrics
from collab.names import validate_document_name
from collab.peers.native import NativeConnection
from collab.peers.transport import close_reason
from collab.peers.yjs import YjsConnection
from collab.store import Store
from collab.store.memory import MemoryStore
from tests.helpers import TIMEOUT_S, NativePeer, started_servers

CLOSED = object()  # in a peer's queue of frames from the server: the close


class _Transport:
    """The socket as the connection sees it: what it sends goes to the client's
    queue; closing ends the reading and makes the connection leave its rooms."""

    def __init__(self, peer: InProcessPeer) -> None:
        self._peer = peer

    def send(self, frame: bytes) -> None:
        if not self._peer.is_closed:
            self._peer.received.put_nowait(frame)

    def send_many(self, frames: list[bytes]) -> None:
        for frame in frames:
            self.send(frame)

    async def drained(self, below: int) -> None:
        return  # nothing waits to be written: the client's queue takes it all

    def close(self, code: int, reason: str) -> None:
        self._peer.closed_with(code, reason)


class InProcessPeer(NativePeer):
    """A connection driven as a WebSocket handler drives it, and its client."""

    def __init__(self, server: InProcessServer, remote: str = "127.0.0.1") -> None:
        self.server = server
        self.remote = remote
        # Made in a test; closed by it, or after it by a fixture (the loop not running).
        self._loop = asyncio.get_running_loop()
        self.transport = _Transport(self)
        self.connection: NativeConnection | YjsConnection | None = None
        self.is_closed = False
        self.close_code: int | None = None  # None once closed: dropped, no close frame
        self.close_reason: str | None = None
        self.received: asyncio.Queue[Any] = asyncio.Queue()  # frames to the client
        self._sent: asyncio.Queue[bytes | str] = asyncio.Queue()  # frames from the client
        self._reading: asyncio.Task[None] | None = None
        self._leaving: asyncio.Task[None] | None = None

    def start(self, connection: NativeConnection | YjsConnection) -> None:
        self.connection = connection
        if not self.is_closed:
            self._reading = self._loop.create_task(self._read())

    async def _read(self) -> None:
        """As Tornado reads a socket: a message at a time, each one's returned
        awaitable awaited before the next is read."""
        limit = self.server.settings.max_frame_bytes
        while not self.is_closed:
            frame = await self._sent.get()
            if len(frame) > limit:
                self.closed_with(CloseCode.MESSAGE_TOO_BIG, "message too big")
                return
            assert self.connection is not None
            pending = self.connection.receive(frame)
            if pending is not None:
                await pending

    def closed_with(self, code: int | None, reason: str | None) -> None:
        """The socket closed (either side; ``code`` None: dropped without a close
        frame): reading stops, the connection leaves."""
        if self.is_closed:
            return
        self.is_closed = True
        self.close_code, self.close_reason = code, reason
        self.received.put_nowait(CLOSED)
        if self._reading is not None and self._reading is not asyncio.current_task(self._loop):
            self._reading.cancel()
        if self.connection is not None:
            self._leaving = self._loop.create_task(self.connection.close())

    # -- the client --------------------------------------------------------------------

    def send_bytes(self, data: bytes) -> None:
        self._sent.put_nowait(data)

    def send_text(self, text: str) -> None:
        self._sent.put_nowait(text)

    async def recv_bytes(self, timeout_s: float = TIMEOUT_S) -> bytes | None:
        """The next frame, or None once the connection was closed."""
        frame = await asyncio.wait_for(self.received.get(), timeout_s)
        if frame is CLOSED:
            self.received.put_nowait(CLOSED)  # closed stays closed
            return None
        return frame

    @property
    def close_state(self) -> tuple[int | None, str | None]:
        return self.close_code, self.close_reason

    def pending(self) -> list[bytes]:
        """The frames the server sent that were not read yet (none wait for I/O)."""
        frames = []
        while not self.received.empty():
            frame = self.received.get_nowait()
            if frame is CLOSED:
                self.received.put_nowait(CLOSED)
                break
            frames.append(frame)
        return frames

    def close(self) -> None:
        self.closed_with(CloseCode.NORMAL, "the client closed")

    def abort(self) -> None:
        """The connection drops without a close frame (a dead network)."""
        self.closed_with(None, None)

    async def wait_closed(self) -> None:
        for task in (self._leaving, self._reading):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task


class _Protocol:
    """What clients read of Tornado's ``WebSocketClientConnection.protocol``."""

    def __init__(self, peer: InProcessPeer) -> None:
        self._peer = peer

    def is_closing(self) -> bool:
        return self._peer.is_closed

    def _abort(self) -> None:
        self._peer.abort()


class InProcessWebSocket:
    """A client's view of an in-process peer shaped as Tornado's
    WebSocketClientConnection, for clients written against it (tests/yjs_peer.py,
    collab.client.CollabClient through its ``dial``)."""

    def __init__(self, peer: InProcessPeer) -> None:
        self._peer = peer
        self.protocol = _Protocol(peer)

    @property
    def peer(self) -> InProcessPeer:
        return self._peer

    @property
    def close_code(self) -> int | None:
        return self._peer.close_code

    @property
    def close_reason(self) -> str | None:
        return self._peer.close_reason

    def write_message(self, message: bytes | str, binary: bool = False) -> asyncio.Future[None]:
        if self._peer.is_closed:
            raise WebSocketClosedError()
        if isinstance(message, bytes):
            self._peer.send_bytes(message)
        else:
            self._peer.send_text(message)
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        written.set_result(None)
        return written

    async def read_message(self) -> bytes | None:
        return await self._peer.recv_bytes(timeout_s=3600)

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        self._peer.close()


class InProcessServer:
    """What CollabServer composes for the protocols, without its sockets: a room
    manager over a store (a memory store unless one is given), and the
    authenticator."""

    def __init__(
        self,
        settings: Settings,
        store: Store | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store if store is not None else MemoryStore()
        self.metrics = Metrics()
        self.rooms = RoomManager(self.store, settings, self.metrics, clock=clock)
        self.auth = Authenticator.from_settings(settings)
        self.peers: list[InProcessPeer] = []
        self.stopped = False

    async def start(self) -> None:
        await self.store.open()
        self.rooms.start()

    async def dial(self, url: str, max_message_bytes: int = 0) -> InProcessWebSocket:
        """Open a client's socket on ``url``'s path (``/ws[?token=T]`` or
        ``/yjs/DOC[?token=T]``; scheme and host are ignored): a CollabClient's
        ``dial``. Refused, as a closed port is, once the server stopped."""
        if self.stopped:
            raise ConnectionRefusedError(f"{url}: the in-process server stopped")
        path = urllib.parse.urlsplit(url)
        if path.path.startswith("/yjs/"):
            return await self.websocket(url[url.index("/yjs/") + len("/yjs/") :])
        assert path.path == "/ws", f"no such route in-process: {url}"
        token = urllib.parse.parse_qs(path.query).get("token", [None])[-1]
        return InProcessWebSocket(self.native(token=token))

    def native(self, *, token: str | None = None, remote: str = "127.0.0.1") -> InProcessPeer:
        """A peer on ``/ws`` (``token``: as ``?token=``)."""
        peer = InProcessPeer(self, remote)
        peer.start(
            NativeConnection(
                peer.transport,
                self.rooms,
                self.auth,
                self.settings,
                query_token=token,
                remote=remote,
            )
        )
        self.peers.append(peer)
        return peer

    async def yjs(self, doc: str, *, token: str | None = None) -> InProcessPeer:
        """A peer on ``/yjs/DOC`` (``token``: as ``?token=``), opened as the handler
        opens it: refused with the close code a socket would get."""
        peer = InProcessPeer(self)
        self.peers.append(peer)
        try:
            doc = validate_document_name(doc, self.settings.max_document_name_bytes)
            identity = self.auth.authenticate(token)
            role = identity.require(doc)
        except ProtocolError as exc:
            peer.closed_with(CloseCode.PROTOCOL_ERROR, close_reason(exc.message))
            return peer
        except AccessDenied as exc:
            peer.closed_with(exc.close_code or CloseCode.FORBIDDEN, close_reason(exc.message))
            return peer
        connection = YjsConnection(
            peer.transport,
            self.rooms,
            identity,
            role,
            doc,
            self.settings.instance_id,
            remote=peer.remote,
            settings=self.settings,
        )
        peer.connection = connection
        await connection.open()  # Tornado reads nothing before open() is done
        peer.start(connection)
        return peer

    async def websocket(self, path: str) -> InProcessWebSocket:
        """A client's socket on ``/yjs/PATH`` (as yjs_path)."""
        return InProcessWebSocket(await self.yjs_path(path))

    async def yjs_path(self, path: str) -> InProcessPeer:
        """A peer on ``/yjs/PATH``, ``path`` as a URL holds it (escapes, ``?token=``)."""
        doc, _, query = path.partition("?")
        token = urllib.parse.parse_qs(query).get("token", [None])[-1]
        return await self.yjs(urllib.parse.unquote(doc), token=token)

    async def stop(self) -> None:
        self.stopped = True
        for peer in self.peers:
            peer.close()
        for peer in self.peers:
            await peer.wait_closed()
        await self.rooms.close()
        await self.store.close()


@pytest.fixture
def start_inprocess(io_loop: IOLoop) -> Iterator[Callable[[Settings], Awaitable[InProcessServer]]]:
    """``await start_inprocess(settings, store=None, clock=...)`` inside a test (as
    ``start_server``; the store: a memory store unless given); stopped after it."""

    def make(settings: Settings, store: Store | None, **options: Any) -> InProcessServer:
        return InProcessServer(settings.replace(store_url="memory://"), store, **options)

    yield from started_servers(io_loop, make)


@pytest.fixture
def inprocess(
    io_loop: IOLoop, settings: Settings, start_inprocess: Callable[..., Awaitable[InProcessServer]]
) -> InProcessServer:
    """An in-process server on the test's settings (its store: memory)."""
    return io_loop.run_sync(lambda: start_inprocess(settings))


@pytest.fixture
def inprocess_raw(
    inprocess: InProcessServer,
) -> Callable[..., Awaitable[InProcessPeer]]:
    """``await raw(path="/ws", target=None)`` as conftest's ``raw``, in-process:
    ``/ws[?token=T]`` or ``/yjs/DOC[?token=T]`` on ``target`` (default: ``inprocess``)."""

    async def open_peer(path: str = "/ws", target: InProcessServer | None = None) -> InProcessPeer:
        return (await (target or inprocess).dial(path)).peer

    return open_peer
