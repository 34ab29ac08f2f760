"""Tornado WebSocket handlers: thin adapters from socket events to connections.

A handler only translates open / message / close into calls on a connection
object (collab.peers.native, collab.peers.yjs) and offers it a transport:
``send`` with a bound on unsent bytes, and ``close``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import tornado.websocket

from collab.errors import AccessDenied, CloseCode, ProtocolError
from collab.peers.native import NativeConnection
from collab.peers.transport import close_reason
from collab.peers.yjs import YjsConnection
from collab.web.access_log import RedactingHandlerMixin
from collab.wire.native import validate_document_name

if TYPE_CHECKING:
    from collab.app import CollabServer

log = logging.getLogger("collab.access")


class SocketHandler(RedactingHandlerMixin, tornado.websocket.WebSocketHandler):
    connection: NativeConnection | YjsConnection | None
    endpoint = ""  # the metrics label: "ws" or "yjs"

    def initialize(self, server: CollabServer) -> None:
        self.server = server
        self.connection = None
        self._unsent_bytes = 0

    def check_origin(self, origin: str) -> bool:
        return self.server.origin_allowed(origin)

    @property
    def remote(self) -> str:
        return self.request.remote_ip or ""

    # -- transport ----------------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        if self.ws_connection is None or self.ws_connection.is_closing():
            return
        # The bound applies to a backlog, not to one message: a document's sync
        # answer may alone be larger than the bound and must still get through.
        limit = self.server.settings.outbound_queue_bytes
        if self._unsent_bytes and self._unsent_bytes + len(frame) > limit:
            # A peer this far behind gets no more memory: it reconnects and
            # resyncs by state vector, which loses nothing.
            log.warning("%s fell %d bytes behind; closing", self.remote, self._unsent_bytes)
            self.close(CloseCode.TRY_AGAIN_LATER, "too far behind; reconnect to resync")
            return
        try:
            written = self.write_message(frame, binary=True)
        except tornado.websocket.WebSocketClosedError:
            return
        size = len(frame)
        self._unsent_bytes += size
        self.server.metrics.bytes_out.labels(self.endpoint).inc(size)
        written.add_done_callback(lambda future: self._sent(future, size))

    def _sent(self, future: Any, size: int) -> None:
        self._unsent_bytes -= size
        if not future.cancelled():
            future.exception()  # a closed socket: nothing to do, but mark it seen

    # -- events -------------------------------------------------------------------------

    def on_message(self, message: str | bytes) -> Awaitable[None] | None:
        # Tornado awaits what this returns before it reads the next frame: the
        # connection's backpressure when the write queue is filling up.
        self.server.metrics.bytes_in.labels(self.endpoint).inc(len(message))
        if self.connection is not None:
            return self.connection.receive(message)
        return None

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        connection = self.ws_connection
        if code is not None and connection is not None and not connection.is_closing():
            self.server.metrics.closed(code)
        super().close(code, reason)

    def on_close(self) -> None:
        self.server.forget(self)


class NativeSocketHandler(SocketHandler):
    """``/ws``: the native MessagePack protocol."""

    endpoint = "ws"

    def open(self, *args: str, **kwargs: str) -> None:
        self.set_nodelay(True)
        self.connection = NativeConnection(
            self,
            self.server.rooms,
            self.server.auth,
            self.server.settings,
            query_token=self.get_query_argument("token", None),
            remote=self.remote,
        )
        self.server.register(self)


class YjsSocketHandler(SocketHandler):
    """``/yjs/{document}``: the y-websocket protocol, one document per socket."""

    endpoint = "yjs"

    async def open(self, doc: str) -> None:
        self.set_nodelay(True)
        try:
            validate_document_name(doc, self.server.settings.max_document_name_bytes)
            identity = self.server.auth.authenticate(self.get_query_argument("token", None))
            role = identity.require(doc)
        except ProtocolError as exc:
            self.close(CloseCode.PROTOCOL_ERROR, close_reason(exc.message))
            return
        except AccessDenied as exc:
            self.close(exc.close_code or CloseCode.FORBIDDEN, close_reason(exc.message))
            return
        self.connection = YjsConnection(
            self,
            self.server.rooms,
            identity,
            role,
            doc,
            self.server.settings.instance_id,
            remote=self.remote,
        )
        self.server.register(self)
        await self.connection.open()
