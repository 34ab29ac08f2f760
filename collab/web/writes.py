"""Writes over HTTP, for bots, importers and agents that hold no socket:
``POST /api/documents/DOC/updates`` with a Yjs update (``application/
octet-stream``), edits described as JSON (``application/json``,
collab.wire.edit_ops), or with ``?format=prosemirror`` a ProseMirror document
(collab.wire.prosemirror). Each is applied through the document's room as a
peer's update is (collab.core.api_edits), answered with its seq once stored,
and sent to every peer. docs/API.md documents the route.

Before its body is read a write shows its token and its size (ApiHandler), its
write grant, its content type and its caller's rate (WriteLimiter); its author
is the token's user (without tokens: ``?author=``, or nobody).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from dataclasses import dataclass
from typing import Any

import tornado.web

from collab.auth import Identity
from collab.config import Settings
from collab.core import api_edits
from collab.core.hooks import HookFailed
from collab.core.limits import CREATION_WINDOW_S, WriteLimiter
from collab.core.origin import Origin, OriginKind
from collab.errors import (
    CollabError,
    ErrorCode,
    InvalidUpdate,
    LoadFailed,
    Overloaded,
    RateLimited,
    StoreError,
)
from collab.web.api import seq_value
from collab.web.documents import OCTET_STREAM, DocumentApiHandler
from collab.web.idempotency import IdempotencyKeys, KeyReused, valid_key
from collab.wire import edit_ops

JSON = "application/json"
MAX_AUTHOR_LENGTH = 200  # characters of an ?author= name
OVERLOADED_RETRY_S = 1  # Retry-After of a write refused while the server is overloaded


@dataclass(slots=True)
class HttpWrites:
    """What the instance keeps for HTTP writes: its callers' rates and the
    answers kept by Idempotency-Key."""

    limiter: WriteLimiter
    keys: IdempotencyKeys

    @classmethod
    def of(cls, settings: Settings) -> HttpWrites:
        return cls(
            WriteLimiter(
                settings.rate_writes_per_s,
                settings.rate_writes_burst,
                settings.rate_bytes_per_s,
                settings.rate_bytes_burst,
            ),
            IdempotencyKeys(settings.idempotency_keys, settings.idempotency_key_ttl_s),
        )


class Refused(tornado.web.HTTPError):
    """An HTTP error with a Retry-After."""

    def __init__(self, status: int, message: str, retry_after_s: float) -> None:
        super().__init__(status, message)
        self.retry_after_s = retry_after_s


class Applied(tornado.web.HTTPError):
    """The write was applied but is not stored yet: its key's answer is kept, so
    that a retry cannot make it twice."""


class UpdatesHandler(DocumentApiHandler):
    """``POST /api/documents/DOC/updates``: one write, answered ``{"doc", "seq"}``."""

    @classmethod
    def max_body_bytes(cls, settings: Settings) -> int:
        return settings.max_write_bytes

    async def prepare(self) -> None:
        await super().prepare()  # the token and the declared size
        doc = self.path_args[0]
        identity = self.require_write(doc)
        self._binary = self._content_type() == OCTET_STREAM
        self._origin = self._origin_of(identity)
        declared = self.request.headers.get("Content-Length", "").strip()
        self._declared = declared.isdigit()
        try:
            self.server.writes.limiter.admit(
                self.caller(identity), int(declared) if self._declared else 0
            )
        except RateLimited as exc:
            raise self._limited(exc) from None

    def _content_type(self) -> str:
        kind = self.request.headers.get("Content-Type", "").partition(";")[0].strip().lower()
        if kind not in (OCTET_STREAM, JSON):
            raise tornado.web.HTTPError(
                415,
                f"send a Yjs update as {OCTET_STREAM}, or edits or ProseMirror JSON as {JSON}",
            )
        return kind

    def _origin_of(self, identity: Identity) -> Origin:
        author = self.get_query_argument("author", None)
        user = identity.user
        if author is not None:
            if user is not None and author != user:
                raise tornado.web.HTTPError(
                    400, "with access tokens the author is the token's user: leave out author"
                )
            if not 0 < len(author) <= MAX_AUTHOR_LENGTH or not author.isprintable():
                raise tornado.web.HTTPError(
                    400, f"author must be a name of 1 to {MAX_AUTHOR_LENGTH} printable characters"
                )
            user = author
        return Origin(
            OriginKind.API,
            user,
            f"api:write:{self.request.remote_ip}",
            self.server.settings.instance_id,
        )

    async def post(self, doc: str) -> None:
        if not self._declared:  # a chunked body: its bytes are counted once read
            try:
                self.server.writes.limiter.admit(
                    self.caller(self.identity()), len(self.body), request=False
                )
            except RateLimited as exc:
                raise self._limited(exc) from None
        key = self.request.headers.get("Idempotency-Key")
        if key is None:
            self.write_json(await self._write(doc))
            return
        if not valid_key(key):
            raise tornado.web.HTTPError(400, "an Idempotency-Key is 1 to 255 printable ASCII")
        fingerprint = hashlib.sha256(
            b"\0".join(
                [
                    self.request.headers.get("Content-Type", "").encode(),
                    self.request.query.encode(),
                    self.body,
                ]
            )
        ).digest()
        scope = (self.caller(self.identity()), doc, key)
        keys = self.server.writes.keys
        try:
            answer, first = keys.begin(scope, fingerprint)
        except KeyReused as exc:
            raise tornado.web.HTTPError(422, str(exc)) from None
        if not first:
            status, body = await answer
            self.set_header("Idempotent-Replayed", "true")
            self.write_json(body, status)
            return
        try:
            result = await self._write(doc)
        except tornado.web.HTTPError as exc:
            failed = (exc.status_code, {"error": exc.log_message})
            keys.finish(scope, answer, failed, keep=isinstance(exc, Applied))
            raise
        except BaseException:
            keys.finish(scope, answer, (500, {"error": "the write failed"}), keep=False)
            raise
        keys.finish(scope, answer, (200, result), keep=True)
        self.write_json(result)

    async def _write(self, doc: str) -> dict[str, Any]:
        rooms, settings = self.server.rooms, self.server.settings
        try:
            if self._binary:
                seq = await api_edits.write_update(
                    rooms, doc, self._origin, self.body, timeout_s=settings.write_timeout_s
                )
            else:
                # Up to max_write_bytes of JSON: parsed and checked off the event loop.
                edits = await asyncio.get_running_loop().run_in_executor(None, self._edits)
                seq = await api_edits.write_edits(
                    rooms, doc, self._origin, edits, timeout_s=settings.write_timeout_s
                )
        except edit_ops.EditError as exc:
            raise tornado.web.HTTPError(422, f"the edits were refused: {exc}") from None
        except InvalidUpdate as exc:
            raise tornado.web.HTTPError(
                422, f"the update was refused, the document is unchanged: {exc.message}"
            ) from None
        except RateLimited as exc:  # the creation cap
            raise self._limited(exc) from None
        except HookFailed as exc:
            raise Refused(503, f"the write could not be checked: {exc.message}", 1.0) from None
        except (Overloaded, LoadFailed) as exc:
            raise Refused(503, exc.message, OVERLOADED_RETRY_S) from None
        except TimeoutError:
            raise Applied(
                503, "the write was applied but not yet stored; check the history"
            ) from None
        except StoreError as exc:
            self.on_store_error(exc)
        except CollabError as exc:
            if exc.code is not ErrorCode.UPDATE_REFUSED:
                raise
            raise tornado.web.HTTPError(  # an extension's before_update
                403, f"the write was refused, the document is unchanged: {exc.message}"
            ) from None
        return {"doc": doc, "seq": seq}

    def _edits(self) -> list[edit_ops.Edit]:
        value = edit_ops.decode(self.body)
        if self.get_query_argument("format", None) == "prosemirror":
            edit: dict[str, Any] = {
                "op": "prosemirror.replace",
                "root": self.get_query_argument("root", "default"),
                "doc": value,
            }
            for name in ("from", "to"):
                raw = self.get_query_argument(name, None)
                if raw is not None:
                    edit[name] = seq_value(raw, name)  # a block index: 400 unless whole
            value = {"edits": [edit]}
        return edit_ops.edits_of(value)

    def _limited(self, exc: RateLimited) -> Refused:
        wait_s = exc.retry_after_s if exc.retry_after_s is not None else CREATION_WINDOW_S
        return Refused(429, exc.message, wait_s)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None))[1]
        if isinstance(error, Refused):
            self.set_header("Retry-After", str(max(1, math.ceil(error.retry_after_s))))
        super().write_error(status_code, **kwargs)
