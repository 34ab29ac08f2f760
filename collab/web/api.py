"""HTTP API: the handlers' base, health, readiness and metrics. The document
routes are in collab.web.documents.

With authentication on, requests carry the same token as WebSockets, as
``Authorization: Bearer <token>`` or ``?token=``; a document needs at least a
read grant.

A request pays before it is read: every route streams its body
(``stream_request_body``), so that :meth:`ApiHandler.prepare` sees the request's
head alone. It checks the token (401) and the size the request declares against
what the route takes (413, :meth:`ApiHandler.max_body_bytes`) before a byte of
the body is read; a request refused there is answered and its connection closed,
its body never read.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, NoReturn

import tornado.web
from tornado import httputil

from collab.auth import Identity, Role
from collab.config import Settings
from collab.core.history import NotRetained
from collab.errors import AccessDenied, CollabError, ErrorCode, ProtocolError, StoreError
from collab.extensions import Request
from collab.metrics import CONTENT_TYPE_LATEST
from collab.names import validate_document_name
from collab.store import MAX_SEQ, DocumentInfo
from collab.web.access_log import RedactingHandlerMixin
from collab.web.encoding import OFF_LOOP_BYTES, accepts_gzip, gzip_off_loop

if TYPE_CHECKING:
    from collab.app import CollabServer

SMALL_JSON_BYTES = 4096  # the body of a route that takes a few fields: {"seq": N}


@tornado.web.stream_request_body
class ApiHandler(RedactingHandlerMixin, tornado.web.RequestHandler):
    #: whether requests need a token (when the server requires tokens at all)
    authenticated = True

    def initialize(self, server: CollabServer) -> None:
        self.server = server
        self._identity: Identity | None = None
        self._body = bytearray()

    @classmethod
    def max_body_bytes(cls, settings: Settings) -> int:
        """The largest body this route reads; larger ones are refused unread (413)."""
        return 0

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")

    def check_trusted_origin(self, origin: str) -> bool:
        """A page of another origin may change something (POST, DELETE) only when
        the server trusts it (collab.web.sites); Tornado's cross-origin protection
        asks, before :meth:`prepare`, about requests that come from such pages."""
        return self.server.sites.origin_trusted(origin)

    async def prepare(self) -> None:
        self.server.requests.add(self)  # under way until on_finish: a stop waits
        if self.authenticated:
            await self.authenticate()
        if self.server.stopping:  # it stopped while a hook decided who asks
            raise tornado.web.HTTPError(503, "the server is stopping")
        limit = self.max_body_bytes(self.server.settings)
        declared = self.request.headers.get("Content-Length", "0").strip()
        if declared.isdigit() and int(declared) > limit:
            raise tornado.web.HTTPError(
                413, f"this request takes a body of at most {limit} bytes, not {declared}"
            )
        # Tornado reads no body past this (any other Content-Length, a chunked body),
        # closing the connection instead: the Listener's limit (0) raised for this
        # request, now that it has shown who sends it.
        self.request.connection.set_max_body_size(limit)  # type: ignore[attr-defined]

    def on_finish(self) -> None:
        self.server.request_ended(self)

    def on_connection_close(self) -> None:
        # A request whose body (or head, while prepare awaits a hook) was cut short:
        # the client went, or sent more than the route takes, or too slowly. Tornado
        # ends it where it waits for the body, unfinished: on_finish is never
        # called, and the stop would wait for it, the handler and its body held
        # until the process ends. (Subclasses that override this call it.)
        cut = not self.request._body_future.done()  # type: ignore[attr-defined]
        super().on_connection_close()  # ends that wait (StreamClosedError)
        if cut:
            self.server.request_ended(self)

    def on_server_stop(self) -> None:
        """The server is stopping: a request that would run on (an event stream)
        ends now; others are given a while to finish (CollabServer.stop)."""

    def data_received(self, chunk: bytes) -> None:
        self._body += chunk  # at most max_body_bytes: Tornado stops reading past it

    @property
    def body(self) -> bytes:
        return bytes(self._body)

    def decode_argument(self, value: bytes, name: str | None = None) -> str:
        """Path arguments (``name`` None) are document names: normalised as every
        entry point has them (collab.wire.native.validate_document_name), or 400."""
        decoded = super().decode_argument(value, name)
        if name is not None:
            return decoded
        try:
            return validate_document_name(decoded, self.server.settings.max_document_name_bytes)
        except ProtocolError as exc:
            raise tornado.web.HTTPError(400, exc.message) from None

    def write_json(self, body: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body, separators=(",", ":")))

    async def answer(self, body: bytes, content_type: str) -> None:
        """Finishes with a body that may be large (a version, a state, a page of
        history): compressed on a thread when the client takes gzip and it is large
        enough to stall the loop; smaller ones go through the gzip transform."""
        self.set_header("Content-Type", content_type)
        if (
            len(body) >= OFF_LOOP_BYTES
            and self.server.settings.http_compression == "gzip"
            and accepts_gzip(self.request)
        ):
            body = await gzip_off_loop(body)
            self.set_header("Content-Encoding", "gzip")  # the transform adds Vary
        self.finish(body)

    async def answer_json(self, body: Any) -> None:
        await self.answer(json.dumps(body, separators=(",", ":")).encode(), "application/json")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None))[1]
        if isinstance(error, tornado.web.HTTPError) and error.log_message:
            message = error.log_message
        else:
            message = httputil.responses.get(status_code, "error")
        self.write_json({"error": message}, status_code)

    async def authenticate(self) -> Identity:
        """Who sends the request: the extensions' on_authenticate first (when there
        are any), then the token (collab.auth)."""
        hooks = self.server.rooms.hooks
        if self._identity is None and hooks.has("on_authenticate"):
            try:
                self._identity = await hooks.authenticate(
                    Request.of(self.request, self.get_query_argument("token", None))
                )
            except AccessDenied as exc:
                status = 403 if exc.code == ErrorCode.FORBIDDEN else 401
                raise tornado.web.HTTPError(status, exc.message) from None
            except CollabError as exc:  # the hook failed: not the client's fault
                raise tornado.web.HTTPError(503, exc.message) from None
        return self.identity()

    def identity(self) -> Identity:
        if self._identity is None:
            header = self.request.headers.get("Authorization", "")
            token = header[7:] if header.lower().startswith("bearer ") else None
            try:
                self._identity = self.server.auth.authenticate(
                    token or self.get_query_argument("token", None)
                )
            except AccessDenied as exc:
                raise tornado.web.HTTPError(401, exc.message) from None
        return self._identity

    def require_read(self, doc: str) -> None:
        if self.identity().role_for(doc) is None:
            raise tornado.web.HTTPError(403, f"access to document {doc!r} is not granted")

    def require_write(self, doc: str) -> Identity:
        identity = self.identity()
        role = identity.role_for(doc)
        if role is None:
            raise tornado.web.HTTPError(403, f"access to document {doc!r} is not granted")
        if role is not Role.WRITE:
            raise tornado.web.HTTPError(403, f"document {doc!r} is read-only for you")
        return identity

    async def require_document(self, doc: str) -> DocumentInfo:
        self.require_read(doc)
        info = await self.server.store.get_document(doc)
        if info is None:
            raise tornado.web.HTTPError(404, f"no document named {doc!r}")
        return info

    def int_argument(self, name: str, default: int | None) -> int | None:
        raw = self.get_query_argument(name, None)
        return default if raw is None else seq_value(raw, name)

    def on_store_error(self, exc: StoreError) -> NoReturn:
        if isinstance(exc, NotRetained):  # older than the history kept: gone for good
            raise tornado.web.HTTPError(410, str(exc))
        # A broken database is an outage, not a missing document.
        raise tornado.web.HTTPError(503, f"store unavailable: {exc}")


def seq_value(raw: object, name: str) -> int:
    """A seq (or a count as large), as a request gives it (a path, a query argument,
    a header, a JSON field), named ``name`` in the error: 400 unless it is a whole
    number from 0 to MAX_SEQ."""
    if isinstance(raw, bool):
        raise tornado.web.HTTPError(400, f"{name} must be an integer")
    try:
        value = int(raw)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise tornado.web.HTTPError(400, f"{name} must be an integer") from None
    if not 0 <= value <= MAX_SEQ:
        raise tornado.web.HTTPError(400, f"{name} must be between 0 and {MAX_SEQ}")
    return value


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

    authenticated = False

    def get(self) -> None:
        self.write_json({"status": "ok", **status_of(self.server)})


class ReadyHandler(ApiHandler):
    """``/readyz``: whether this instance can take edits now: 503 with the reason
    while the store is failing, the feed cannot be followed or lags past
    ``feed_lag_limit_s``, so that a load balancer sends peers elsewhere."""

    authenticated = False

    def get(self) -> None:
        status = status_of(self.server)
        reason = unready_because(self.server, status)
        self.write_json(
            {"status": "ready" if reason is None else "unavailable", "reason": reason, **status},
            200 if reason is None else 503,
        )


class RevokeHandler(ApiHandler):
    """``POST /api/admin/revoke`` with ``{"user": "alice"}`` (an admin token:
    ``"admin": true``): every token of the user issued until now is refused, on
    this instance, and their open WebSockets and event streams end at once."""

    @classmethod
    def max_body_bytes(cls, settings: Settings) -> int:
        return SMALL_JSON_BYTES

    def post(self) -> None:
        identity = self.identity()
        if not identity.admin:
            raise tornado.web.HTTPError(403, "revoking needs an admin token")
        try:
            body = json.loads(self.body or b"null")
        except ValueError:
            raise tornado.web.HTTPError(400, 'the body must be JSON: {"user": "..."}') from None
        user = body.get("user") if isinstance(body, dict) else None
        if not isinstance(user, str) or not user:
            raise tornado.web.HTTPError(400, 'give the user to revoke: {"user": "..."}')
        self.server.auth.revoke(user)
        self.write_json({"user": user, "revoked": True})


class MetricsHandler(tornado.web.RequestHandler):
    """``/metrics``: Prometheus text format."""

    def initialize(self, server: CollabServer) -> None:
        self.server = server

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.write(self.server.metrics.exposition())
