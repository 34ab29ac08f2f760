"""What a connection and a request must show before anything reads them.

- :class:`Listener` (Tornado's HTTPServer) counts every connection, plain HTTP,
  WebSocket or event stream, against its address's cap (``max_connections_per_ip``)
  from the moment it is accepted until it closes (:class:`ConnectionCounts`), and
  accepts new connections only while fewer than ``max_handshakes`` are between
  their accept and the end of their handshake (collab.web.accepting).
  Request heads and bodies have size and time limits (``max_header_bytes``,
  ``header_timeout_s``, ``body_timeout_s``), and no body is read at all unless
  its route allows one for the request after checking who sends it
  (collab.web.api.ApiHandler).
- :class:`Gate` (a Tornado router in front of the application) looks at each
  request's head, its body not read: a ``Host`` the server does not answer to is
  refused (403, collab.web.sites), and so is a request on a connection past its
  address's cap (429; a WebSocket handshake is accepted and closed with 1013, on
  which clients retry later). Everything else goes on to its route.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import tornado.httpserver
import tornado.iostream
import tornado.routing
import tornado.web
import tornado.websocket
from tornado import httputil

from collab.core.limits import LogBudget
from collab.errors import CloseCode
from collab.web.accepting import Acceptor, Handshakes
from collab.web.api import ApiHandler

if TYPE_CHECKING:
    from collab.app import CollabServer

log = logging.getLogger("collab.access")

MAX_REFUSAL_LOGS = 10_000  # addresses whose refusals are being counted, at most


def connection_of(request: httputil.HTTPServerRequest) -> object:
    """The connection a request came on, as :class:`ConnectionCounts` knows it:
    its stream, which a WebSocket keeps when it takes the connection over."""
    server_connection = request.server_connection
    return getattr(server_connection, "stream", server_connection)


class ConnectionCounts:
    """Connections open from each address, against ``cap`` (0: no cap). A
    connection accepted while its address has ``cap`` open already is counted
    too, but over the cap: its requests are refused (:class:`Gate`). Past twice
    the cap a new connection is not taken at all."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._open: dict[object, tuple[str, bool]] = {}  # connection: (address, admitted)
        self._per_address: Counter[str] = Counter()
        self._refusal_logs: dict[str, LogBudget] = {}  # per address refused, its log budget

    def open(self, connection: object, address: str) -> bool:
        """Count a new connection; False when it is not to be taken at all."""
        count = self._per_address[address]
        admitted = not self.cap or count < self.cap
        if not admitted:
            self._refused(address)
            if count >= 2 * self.cap:
                return False
        self._open[connection] = (address, admitted)
        self._per_address[address] += 1
        return True

    def admitted(self, connection: object) -> bool:
        """Whether ``connection`` is within its address's cap (one not counted,
        not accepted by a :class:`Listener`, is not refused)."""
        entry = self._open.get(connection)
        return entry is None or entry[1]

    def close(self, connection: object) -> None:
        """The connection ended (idempotent)."""
        entry = self._open.pop(connection, None)
        if entry is not None:
            address = entry[0]
            self._per_address[address] -= 1
            if self._per_address[address] <= 0:
                del self._per_address[address]

    def open_from(self, address: str) -> int:
        return self._per_address[address]

    def _refused(self, address: str) -> None:
        # One line per address per budget: refusals can come thousands a second.
        budget = self._refusal_logs.get(address)
        if budget is None:
            if len(self._refusal_logs) >= MAX_REFUSAL_LOGS:
                self._refusal_logs.clear()
            budget = self._refusal_logs[address] = LogBudget(log, address)
        budget.log(logging.WARNING, "refused a connection: %d are open from it", self.cap)


class Listener(tornado.httpserver.HTTPServer):
    """Tornado's HTTPServer, with each connection counted by ``counts`` from the
    moment it is accepted until it closes, and accepted only while fewer than
    ``handshakes.limit`` are between their accept and the end of their handshake
    (collab.web.accepting)."""

    def initialize(  # type: ignore[override]
        self, *args: Any, counts: ConnectionCounts, handshakes: Handshakes, **kwargs: Any
    ) -> None:
        self.counts = counts
        self.handshakes = handshakes
        self._acceptors: list[Acceptor] = []
        handshakes.on_free = self._resume
        super().initialize(*args, **kwargs)

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        # Tornado's TCPServer.add_sockets, with collab's Acceptor in place of
        # tornado.netutil.add_accept_handler; stop() calls each one's stop.
        for sock in sockets:
            acceptor = Acceptor(sock, self._handle_connection, self.handshakes)
            self._acceptors.append(acceptor)
            self._sockets[sock.fileno()] = sock
            self._handlers[sock.fileno()] = acceptor.stop

    def _resume(self) -> None:
        for acceptor in self._acceptors:
            acceptor.resume()

    def handle_stream(self, stream: tornado.iostream.IOStream, address: Any) -> None:
        remote = address[0] if isinstance(address, tuple) and address else ""
        if not self.counts.open(stream, remote):
            stream.close()
            return
        if self.counts.admitted(stream):  # one over its cap is refused at its head
            self.handshakes.begin(stream, remote)
        super().handle_stream(stream, address)

    async def close_connections(self, within_s: float) -> int:
        """Close every HTTP connection's socket now (a request under way is cut,
        unanswered), then give Tornado up to ``within_s`` to end its serving of
        them; returns how many it had not ended (a request whose head waits on a
        hook, ApiHandler.prepare: its serving ends with the hook). Tornado's
        close_all_connections closes one connection at a time, each once the last
        one's serving has ended, and that serving swallows a cancellation: no
        timeout bounds it, and the connections after one such request stay open."""
        connections = list(self._connections)
        for connection in connections:
            connection.stream.close()
        serving = [c._serving_future for c in connections if c._serving_future is not None]
        if not serving:
            return 0
        _, late = await asyncio.wait(serving, timeout=within_s)
        return len(late)

    def on_close(self, server_conn: object) -> None:
        super().on_close(server_conn)
        stream = getattr(server_conn, "stream", None)
        # Still open: a WebSocket took it over, and releases it when it closes
        # (CollabServer.forget).
        if stream is not None and stream.closed():
            self.counts.close(stream)
            self.handshakes.end(stream)


@tornado.web.stream_request_body
class RefusalHandler(ApiHandler):
    """Answers ``status`` with ``message`` before the request's body is read; the
    connection is closed after the answer (Tornado closes one whose request was
    answered before it was read)."""

    def initialize(self, server: CollabServer, status: int, message: str) -> None:  # type: ignore[override]
        super().initialize(server)
        self.status, self.message = status, message

    def prepare(self) -> None:
        self.write_json({"error": self.message}, self.status)

    def data_received(self, chunk: bytes) -> None:
        pass  # never called: the answer is given before the body is read


class TooManyConnectionsSocket(tornado.websocket.WebSocketHandler):
    """A WebSocket past its address's cap: closed with 1013 (try again later) as
    soon as it opens, which clients (y-websocket, collab's) retry after a while."""

    def initialize(self, server: CollabServer) -> None:
        self.server = server

    def check_origin(self, origin: str) -> bool:
        return True  # it is closed at once whatever its page

    def open(self, *args: str, **kwargs: str) -> None:
        self.server.metrics.closed(CloseCode.TRY_AGAIN_LATER)
        self.close(CloseCode.TRY_AGAIN_LATER, "too many connections from this address; try later")

    def on_close(self) -> None:
        self.server.connections.close(connection_of(self.request))  # it took the connection


class Gate(tornado.routing.Router):
    """Every request passes here with its head read and its body not."""

    def __init__(self, server: CollabServer, application: tornado.web.Application) -> None:
        self.server = server
        self.application = application

    def find_handler(
        self, request: httputil.HTTPServerRequest, **kwargs: Any
    ) -> httputil.HTTPMessageDelegate | None:
        host = request.headers.get("Host")
        if not self.server.sites.host_allowed(host):
            return self._refuse(
                request,
                403,
                f"this server does not answer to {host!r}: add its name to "
                "--allowed-hosts (or use an address, or localhost)",
            )
        if not self.server.connections.admitted(connection_of(request)):
            if request.headers.get("Upgrade", "").lower() == "websocket":
                return self.application.get_handler_delegate(
                    request, TooManyConnectionsSocket, {"server": self.server}
                )
            return self._refuse(request, 429, "too many connections from this address; try later")
        delegate = self.application.find_handler(request, **kwargs)
        if not _opens_websocket(delegate):
            # Plain HTTP: its route bounds its own work (budgets, rates), and a
            # keep-alive connection waiting for its next request holds no slot.
            self.server.handshakes.end(connection_of(request))
        return delegate

    def _refuse(
        self, request: httputil.HTTPServerRequest, status: int, message: str
    ) -> httputil.HTTPMessageDelegate:
        self.server.handshakes.end(connection_of(request))
        return self.application.get_handler_delegate(
            request, RefusalHandler, {"server": self.server, "status": status, "message": message}
        )


def _opens_websocket(delegate: httputil.HTTPMessageDelegate | None) -> bool:
    """Whether the request goes to a WebSocket handler, whose handshake goes on
    until it is open (collab.web.sockets.SocketHandler.open) or refused."""
    handler_class = getattr(delegate, "handler_class", None)  # tornado.web._HandlerDelegate's
    return isinstance(handler_class, type) and issubclass(
        handler_class, tornado.websocket.WebSocketHandler
    )
