"""HTTP API: health, document list, history and the state at a version.

With authentication on, requests carry the same token as WebSockets, as
``Authorization: Bearer <token>`` or ``?token=``; a document needs at least a
read grant.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, NoReturn

import tornado.web
from tornado import httputil

from collab.auth import Identity
from collab.core import history
from collab.errors import AccessDenied, StoreError
from collab.metrics import CONTENT_TYPE_LATEST
from collab.web.access_log import RedactingHandlerMixin

if TYPE_CHECKING:
    from collab.app import CollabServer

MAX_HISTORY_PAGE = 1000
MAX_SEQ = 2**63 - 1  # seqs are SQLite INTEGERs (and MongoDB longs): signed 64 bits


class ApiHandler(RedactingHandlerMixin, tornado.web.RequestHandler):
    def initialize(self, server: CollabServer) -> None:
        self.server = server

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")

    def write_json(self, body: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body, separators=(",", ":")))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None))[1]
        if isinstance(error, tornado.web.HTTPError) and error.log_message:
            message = error.log_message
        else:
            message = httputil.responses.get(status_code, "error")
        self.write_json({"error": message}, status_code)

    def identity(self) -> Identity:
        header = self.request.headers.get("Authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else None
        try:
            return self.server.auth.authenticate(token or self.get_query_argument("token", None))
        except AccessDenied as exc:
            raise tornado.web.HTTPError(401, exc.message) from None

    def require_read(self, doc: str) -> None:
        if self.identity().role_for(doc) is None:
            raise tornado.web.HTTPError(403, f"access to document {doc!r} is not granted")

    async def require_document(self, doc: str) -> None:
        self.require_read(doc)
        if await self.server.store.get_document(doc) is None:
            raise tornado.web.HTTPError(404, f"no document named {doc!r}")

    def int_argument(self, name: str, default: int | None) -> int | None:
        raw = self.get_query_argument(name, None)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise tornado.web.HTTPError(400, f"{name} must be an integer") from None
        if not 0 <= value <= MAX_SEQ:
            raise tornado.web.HTTPError(400, f"{name} must be between 0 and {MAX_SEQ}")
        return value

    def on_store_error(self, exc: StoreError) -> NoReturn:
        # A broken database is an outage, not a missing document.
        raise tornado.web.HTTPError(503, f"store unavailable: {exc}")


def status_of(server: CollabServer) -> dict[str, Any]:
    rooms = server.rooms
    writer = rooms.writer
    failure = writer.failure
    feed_failure = rooms.feed_failure
    return {
        "instance": server.settings.instance_id,
        "connections": len(server.sockets),
        "rooms": len(rooms.rooms),
        "write_queue": writer.queued,
        "write_queue_bytes": writer.queued_bytes,
        "store": "ok" if failure is None else "failing",
        "store_error": None if failure is None else str(failure),
        "feed": "ok" if feed_failure is None else "failing",
        "feed_error": None if feed_failure is None else str(feed_failure),
        "feed_lag_s": round(rooms.feed_lag_s, 3),
    }


def unready_because(server: CollabServer, status: dict[str, Any]) -> str | None:
    if status["store"] != "ok":
        return f"the store is failing: {status['store_error']}"
    if status["feed"] != "ok":
        return f"the feed of other instances' commits is failing: {status['feed_error']}"
    limit = server.settings.feed_lag_limit_s
    if status["feed_lag_s"] > limit:
        return f"other instances' commits arrive {status['feed_lag_s']:.1f}s late (limit {limit}s)"
    return None


class HealthHandler(ApiHandler):
    """``/healthz``: the process lives and answers (200 even while the store fails:
    restarting the process would not help)."""

    def get(self) -> None:
        self.write_json({"status": "ok", **status_of(self.server)})


class ReadyHandler(ApiHandler):
    """``/readyz``: whether this instance can take edits now: 503 with the reason
    while the store is failing, the feed cannot be followed or lags past
    ``feed_lag_limit_s``, so that a load balancer sends peers elsewhere."""

    def get(self) -> None:
        status = status_of(self.server)
        reason = unready_because(self.server, status)
        self.write_json(
            {"status": "ready" if reason is None else "unavailable", "reason": reason, **status},
            200 if reason is None else 503,
        )


class MetricsHandler(tornado.web.RequestHandler):
    """``/metrics``: Prometheus text format."""

    def initialize(self, server: CollabServer) -> None:
        self.server = server

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.write(self.server.metrics.exposition())


class DocumentsHandler(ApiHandler):
    async def get(self) -> None:
        identity = self.identity()
        try:
            documents = await self.server.store.list_documents()
        except StoreError as exc:
            self.on_store_error(exc)
        self.write_json(
            {
                "documents": [
                    {
                        "name": d.name,
                        "epoch": d.epoch,
                        "seq": d.head_seq,
                        "created_s": d.created_s,
                        "updated_s": d.updated_s,
                    }
                    for d in documents
                    if identity.role_for(d.name) is not None
                ]
            }
        )


class HistoryHandler(ApiHandler):
    async def get(self, doc: str) -> None:
        after = self.int_argument("after", 0) or 0
        limit = self.int_argument("limit", 100) or 0
        if not 1 <= limit <= MAX_HISTORY_PAGE:
            raise tornado.web.HTTPError(400, f"limit must be between 1 and {MAX_HISTORY_PAGE}")
        try:
            await self.require_document(doc)
            page = await history.list_updates(
                self.server.store, doc, after_seq=after, limit=limit + 1
            )
        except StoreError as exc:
            self.on_store_error(exc)
        more = len(page) > limit
        page = page[:limit]
        self.write_json(
            {
                "doc": doc,
                "updates": [
                    {
                        "seq": u.seq,
                        "time_s": u.time_s,
                        "bytes": len(u.data),
                        "origin": {
                            "user": u.author.user,
                            "client": u.author.client,
                            "instance": u.author.instance,
                        },
                    }
                    for u in page
                ],
                "next_after": page[-1].seq if more else None,
            }
        )


class StateHandler(ApiHandler):
    """The document's state after update ``seq`` as one Yjs update (v1): all of it
    (what waits for its dependencies included, so that later log entries apply on
    top), or with ``waiting=no`` only what is integrated: what its peers hold."""

    async def get(self, doc: str) -> None:
        seq = self.int_argument("seq", None)
        waiting = self.get_query_argument("waiting", "yes")
        if waiting not in ("yes", "no"):
            raise tornado.web.HTTPError(400, "waiting must be yes or no")
        try:
            await self.require_document(doc)
            if waiting == "yes":
                at, state = await history.state_at(self.server.store, doc, seq)
            else:
                at, replica = await history.replica_at(self.server.store, doc, seq)
                state = replica.doc.get_update()
        except StoreError as exc:
            self.on_store_error(exc)
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("X-Collab-Seq", str(at))
        self.finish(state)
