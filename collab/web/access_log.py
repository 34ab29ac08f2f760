"""Request logging with secrets left out: access tokens travel in URLs
(``?token=``, which every y-websocket client uses), and logs must not keep them."""

from __future__ import annotations

import logging
from types import TracebackType
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import tornado.httputil
import tornado.web

SECRET_PARAMETERS = frozenset({"token", "access_token", "auth", "jwt"})
REDACTED = "[redacted]"

log = logging.getLogger("collab.access")


def redact_uri(uri: str) -> str:
    """``uri`` with the values of secret query parameters replaced."""
    parts = urlsplit(uri)
    if not parts.query:
        return uri
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if not any(name.lower() in SECRET_PARAMETERS for name, _ in pairs):
        return uri
    query = urlencode(
        [(n, REDACTED if n.lower() in SECRET_PARAMETERS else v) for n, v in pairs], safe="[]"
    )
    return urlunsplit(parts._replace(query=query))


def log_request(handler: tornado.web.RequestHandler) -> None:
    """Tornado's ``log_function``: one line per request, tokens redacted."""
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING
    log.log(
        level,
        "%d %s %s %.1fms",
        status,
        handler.request.method,
        redact_uri(handler.request.uri or ""),
        1000 * handler.request.request_time(),
    )


class RedactingHandlerMixin:
    """Tornado logs an uncaught exception with the whole request, URL included;
    this logs it with the URL redacted instead."""

    request: tornado.httputil.HTTPServerRequest

    def log_exception(
        self,
        typ: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(value, tornado.web.HTTPError):
            if value.log_message:
                log.warning("%d %s: %s", value.status_code, self._redacted(), value.log_message)
            return
        logging.getLogger("collab").error(
            "uncaught exception in %s", self._redacted(), exc_info=(typ, value, tb)
        )

    def _redacted(self) -> str:
        return f"{self.request.method} {redact_uri(self.request.uri or '')}"
