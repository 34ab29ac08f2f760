"""The composition root: builds store, rooms, auth and routes from one Settings
object, and owns their lifecycle.

    server = CollabServer(settings)
    await server.start()      # open the store, start the writer, listen
    ...
    await server.stop()       # stop reading, flush writes, close sockets (1012), close the store
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import tornado.netutil
import tornado.web

from collab import memory
from collab.auth import Authenticator, Identity
from collab.config import Settings
from collab.core.hooks import Hooks
from collab.core.listing import Cursors
from collab.core.manager import RoomManager
from collab.errors import CloseCode
from collab.metrics import Metrics
from collab.store import Store, create_store
from collab.tasks import TaskGroup
from collab.web import heartbeat
from collab.web.accepting import Handshakes
from collab.web.access_log import log_request
from collab.web.api import ApiHandler, HealthHandler, MetricsHandler, ReadyHandler, RevokeHandler
from collab.web.budget import ExpensiveReads
from collab.web.changes import ChangesHandler
from collab.web.documents import (
    AuthorsHandler,
    DiffHandler,
    DocumentHandler,
    DocumentsHandler,
    EventsHandler,
    HistoryHandler,
    ImportHandler,
    RestoreHandler,
    StateHandler,
    VersionAtHandler,
    VersionHandler,
)
from collab.web.encoding import GzipAnswers
from collab.web.gate import ConnectionCounts, Gate, Listener
from collab.web.page_files import PageFiles
from collab.web.sites import Sites
from collab.web.sockets import NativeSocketHandler, SocketHandler, YjsSocketHandler
from collab.web.version_names import NamesHandler, VersionNameHandler
from collab.web.writes import HttpWrites, UpdatesHandler
from collab.webhooks import parse_specs
from collab.webhooks.delivery import Webhooks

log = logging.getLogger("collab")

# Inside the package (collab/static links to the repository's static/ folder, and the
# wheel carries the files), so an installed server finds its page wherever it runs.
DEFAULT_STATIC_DIR = Path(__file__).resolve().parent / "static"
# How long a stopping server waits for its peers to answer the close frame, and for
# the HTTP requests under way to finish, before it drops what is left. A peer
# answers in a round trip; Tornado alone would wait 5 s for each WebSocket.
SHUTDOWN_CLOSE_S = 2.0
# How long Tornado gets to end its serving of the HTTP connections closed at once.
SHUTDOWN_SERVING_S = 0.2


class CollabServer:
    def __init__(
        self,
        settings: Settings,
        store: Store | None = None,
        *,
        clock: Callable[[], float] = time.time,
        extensions: Sequence[object] = (),
    ) -> None:
        """``clock``: Unix seconds, for the time of updates and the retention's
        cutoff (tests move it forward instead of waiting). ``extensions``: the
        application's hooks, chained in order (collab.extensions)."""
        self.settings = settings
        self.store = store if store is not None else create_store(settings.store_url)
        self.metrics = Metrics()
        self.auth = Authenticator.from_settings(settings)
        self.rooms = RoomManager(
            self.store,
            settings,
            self.metrics,
            clock=clock,
            hooks=Hooks(extensions, settings, self.store, revoked=self.auth.is_revoked),
        )
        self.sockets: set[SocketHandler] = set()
        # API requests from their handler's prepare to its finish: a stop lets them
        # finish before it closes the store they read.
        self.requests: set[ApiHandler] = set()
        self._one_ended: asyncio.Event | None = None  # (stop) a socket or request ended
        self.connections = ConnectionCounts(settings.max_connections_per_ip)
        # While addresses are capped, one of them holds at most half the slots.
        capped = settings.max_connections_per_ip > 0
        self.handshakes = Handshakes(
            settings.max_handshakes,
            address_share=max(1, settings.max_handshakes // 2) if capped else 0,
        )
        self.reads = ExpensiveReads(settings)  # versions, states, diffs: caps and workers
        self.writes = HttpWrites.of(settings)  # HTTP writes: rates, idempotency keys
        # Cursors of document lists cut short: sealed, and opened by every instance
        # that shares the key.
        cursor_key = settings.list_cursor_secret or settings.auth_secret
        self.list_cursors = Cursors(cursor_key.encode() if cursor_key else os.urandom(32))
        self.auth.on_revoke(self._revoked)
        self.sites = Sites.of(
            host=settings.host,
            allowed_hosts=settings.allowed_hosts,
            allowed_origins=settings.allowed_origins,
            tokens_required=self.auth.enabled,
        )
        self.application = self._make_application()
        # Durable webhooks: from the log, off the path of every edit. A bad --webhook
        # is a ValueError (WebhookSpecError): the server does not start.
        self.webhooks = Webhooks(parse_specs(settings.webhook), self.store, settings, self.metrics)
        self.metrics.observe(
            connections=lambda endpoint: sum(1 for h in self.sockets if h.endpoint == endpoint),
            rooms=lambda: len(self.rooms.rooms),
            handshakes=lambda: len(self.handshakes),
            write_queue_updates=lambda: self.rooms.writer.queued,
            write_queue_bytes=lambda: self.rooms.writer.queued_bytes,
            feed_lag_s=lambda: self.rooms.feed_lag_s,
            feed_failing=lambda: self.rooms.feed_failure is not None,
            store_failing=lambda: self.rooms.writer.failure is not None,
            log_rows_read=lambda: self.store.stats.log_rows_read,
        )
        self.port = settings.port
        self._http: Listener | None = None
        self.tasks = TaskGroup(log)  # the heartbeat, connection teardown
        # Event streams end when their user is revoked: they listen here.
        self.revocation_listeners: set[Callable[[str], None]] = set()
        self.stopping = False

    def routes(self, prefix: str = "", *, page: bool = True) -> list[Any]:
        """The server's Tornado routes, each path under ``prefix`` (``"/collab"``:
        ``/collab/ws``...); ``page``: the static page and its files too, last (it
        matches every path under the prefix)."""
        s = self.settings
        context: dict[str, Any] = {"server": self}
        static_dir = Path(s.static_dir) if s.static_dir else DEFAULT_STATIC_DIR
        routes: list[Any] = [
            (r"/ws", NativeSocketHandler, context),
            (r"/yjs/(.+)", YjsSocketHandler, context),
            (r"/healthz", HealthHandler, context),
            (r"/readyz", ReadyHandler, context),
            (r"/metrics", MetricsHandler, context),
            (r"/api/admin/revoke", RevokeHandler, context),
            (r"/api/events", ChangesHandler, context),
            (r"/api/documents", DocumentsHandler, context),
            (r"/api/documents/(.+)/history", HistoryHandler, context),
            (r"/api/documents/(.+)/state", StateHandler, context),
            (r"/api/documents/(.+)/authors", AuthorsHandler, context),
            (r"/api/documents/(.+)/versions/([^/]+)/name", VersionNameHandler, context),
            (r"/api/documents/(.+)/names", NamesHandler, context),
            (r"/api/documents/(.+)/versions/([^/]+)", VersionHandler, context),
            (r"/api/documents/(.+)/versions", VersionAtHandler, context),
            (r"/api/documents/(.+)/restore", RestoreHandler, context),
            (r"/api/documents/(.+)/events", EventsHandler, context),
            (r"/api/documents/(.+)/import", ImportHandler, context),
            (r"/api/documents/(.+)/diff", DiffHandler, context),
            (r"/api/documents/(.+)/updates", UpdatesHandler, context),
            (r"/api/documents/(.+)", DocumentHandler, context),
        ]
        if page:
            routes.append(
                (
                    r"/(.*)",
                    PageFiles,
                    {
                        "path": str(static_dir),
                        "default_filename": "index.html",
                        "gzip": s.http_compression == "gzip",
                    },
                )
            )
        prefix = prefix.rstrip("/")
        return [(prefix + path, *rest) for path, *rest in routes]

    def _make_application(self) -> tornado.web.Application:
        s = self.settings
        return tornado.web.Application(
            self.routes(),
            transforms=[GzipAnswers] if s.http_compression == "gzip" else [],
            # Heartbeats are the handlers' own (collab.web.sockets): Tornado's wait
            # 5 s for a close handshake with a peer that is gone.
            websocket_ping_interval=0,
            websocket_max_message_size=s.max_frame_bytes,
            log_function=log_request,
            # POST and DELETE from other sites' pages: Origin and Sec-Fetch-Site are
            # checked (ApiHandler.check_trusted_origin); WebSockets always are.
            cross_origin_protection=True,
        )

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.port}"

    async def start(self) -> None:
        await self.open()
        # Workers of one `collab serve --workers N` each bind the port: the kernel
        # spreads connections over them.
        sockets = tornado.netutil.bind_sockets(
            self.settings.port,
            self.settings.host,
            reuse_port=self.settings.workers > 1,
            backlog=self.settings.listen_backlog,
        )
        self.port = sockets[0].getsockname()[1]
        s = self.settings
        self._http = Listener(
            Gate(self, self.application),
            counts=self.connections,
            handshakes=self.handshakes,
            max_header_size=s.max_header_bytes,
            idle_connection_timeout=s.header_timeout_s,  # Tornado's time limit on a head
            body_timeout=s.body_timeout_s,
            max_body_size=0,  # a route raises it once it has checked who sends the body
        )
        self._http.add_sockets(sockets)
        log.info("listening on %s (store %s)", self.url, self.settings.store_url)

    async def open(self) -> None:
        """Everything but listening: open the store, start the rooms, the writer,
        the hooks and the heartbeat (an application that embeds collab serves its
        :meth:`routes` itself: collab.embed)."""
        largest = self.store.max_update_bytes
        if largest is not None and self.settings.max_frame_bytes > largest:
            raise ValueError(
                f"max_frame_bytes ({self.settings.max_frame_bytes}) exceeds the largest "
                f"update this store can hold ({largest} bytes)"
            )
        await self.store.open()
        self.rooms.start()
        await self.webhooks.start()
        s = self.settings
        if s.ping_interval_s > 0:
            assert s.ping_timeout_s is not None
            self.tasks.spawn(
                heartbeat.beat(lambda: self.sockets, s.ping_interval_s, s.ping_timeout_s),
                name="heartbeat",
            )
        if s.memory_trim_s > 0:
            self.tasks.spawn(memory.trim_every(s.memory_trim_s), name="return freed memory")

    def register(self, handler: SocketHandler) -> None:
        self.sockets.add(handler)

    def request_ended(self, handler: ApiHandler) -> None:
        self.requests.discard(handler)
        if self._one_ended is not None:
            self._one_ended.set()

    def _revoked(self, identity: Identity) -> None:
        """A user's grants were revoked: their open connections end now."""
        assert identity.user is not None
        for handler in list(self.sockets):
            if handler.connection is not None:
                handler.connection.revoked(identity.user)
        for listener in list(self.revocation_listeners):
            listener(identity.user)

    def forget(self, handler: SocketHandler) -> None:
        """A socket closed: its connection leaves its rooms, and no longer counts
        against its address's cap (the socket took the connection over from HTTP)."""
        self.connections.close(handler.counted_as)
        self.handshakes.end(handler.counted_as)
        self.sockets.discard(handler)
        if self._one_ended is not None:
            self._one_ended.set()
        connection, handler.connection = handler.connection, None  # (a cycle, else)
        if connection is not None and not self.tasks.closed:
            self.tasks.spawn(connection.close(), name=f"close {connection}")

    async def stop(self) -> None:
        """Shut down as a rolling deploy needs: stop accepting connections and
        reading messages, store and acknowledge what was accepted (within
        ``shutdown_flush_timeout_s``), then close every socket with 1012 so that
        clients reconnect at once (to another instance, or to this one restarted)
        and send again what was not acknowledged."""
        if self.stopping:
            return
        self.stopping = True
        if self._http is not None:
            self._http.stop()
        flushed = await self.rooms.writer.wait_idle(self.settings.shutdown_flush_timeout_s)
        if not flushed:
            log.error(
                "shutdown: %d updates could not be stored in %.0fs; they were not acknowledged",
                self.rooms.writer.queued,
                self.settings.shutdown_flush_timeout_s,
            )
        handlers = list(self.sockets)
        for handler in handlers:
            handler.close(CloseCode.SERVICE_RESTART, "server restarting; reconnect")
        await asyncio.gather(*(h.connection.close() for h in handlers if h.connection is not None))
        await self._close_what_is_open(SHUTDOWN_CLOSE_S)
        await self.tasks.close()
        await self.webhooks.stop()
        await self.rooms.close()
        await self.reads.close()
        await self.store.close()
        log.info("stopped")

    async def _close_what_is_open(self, within_s: float) -> None:
        """Once the peers were told: the WebSockets' peers get ``within_s`` to answer
        the close, and the API requests under way as long to finish (an event
        stream ends at once, its reader reconnects); the sockets still open then are
        dropped, and every HTTP connection is closed, those kept alive between
        requests and those whose request is still under way (cut, unanswered), so
        that a stopped server holds no socket. (Tornado leaves both open: an
        embedding application's loop would keep serving them.)"""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        for request in list(self.requests):
            request.on_server_stop()
        while self.sockets or self.requests:
            left = deadline - loop.time()
            if left <= 0:
                break
            self._one_ended = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._one_ended.wait(), left)
        for handler in list(self.sockets):
            handler.abort()
        if self._http is not None:
            # What is left has had its time; the rest end their serving in a turn.
            grace = max(deadline - loop.time(), SHUTDOWN_SERVING_S)
            late = await self._http.close_connections(grace)
            if late:
                log.warning(
                    "shutdown: %d HTTP requests still under way after %gs (their sockets "
                    "are closed)",
                    late,
                    within_s,
                )

    async def __aenter__(self) -> CollabServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
