"""Writes over HTTP from Python (``POST /api/documents/DOC/updates``), for bots
and importers that hold no socket: a Yjs update, edits described as JSON, or
ProseMirror JSON; and a rich-text root read back as ProseMirror JSON.

Every write is sent with an ``Idempotency-Key`` (a new one per call unless one
is given), so that sending it again after a lost answer, a broken connection,
a 429 or a 503 cannot make it twice: it is sent up to ``attempts`` times,
waiting as Retry-After says (at most ``MAX_WAIT_S``).
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
import uuid
from types import TracebackType
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse

MAX_WAIT_S = 30.0  # the longest pause between attempts, whatever Retry-After says
RETRY_STATUSES = frozenset({429, 503, 599})  # 599: no answer (Tornado's code)


class WriteError(Exception):
    """The server refused the request (``status``), with its message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class HttpWriter:
    """``url``: the server, e.g. ``http://localhost:8080``; ``token``: an access
    token (when the server requires them); ``author``: the name written into
    history when the server has no tokens (with tokens, the token's user is)."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        author: str | None = None,
        attempts: int = 3,
        timeout_s: float = 60.0,
    ) -> None:
        self.base = url.rstrip("/")
        self.token = token
        self.author = author
        self.attempts = max(1, attempts)
        self.timeout_s = timeout_s
        self._http = AsyncHTTPClient(force_instance=True)

    async def __aenter__(self) -> HttpWriter:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        self._http.close()

    async def write_update(self, doc: str, update: bytes, *, key: str | None = None) -> int:
        """Apply a Yjs update (v1) to ``doc``; its seq once stored."""
        return await self._post(doc, update, "application/octet-stream", {}, key)

    async def edit(self, doc: str, edits: list[dict[str, Any]], *, key: str | None = None) -> int:
        """Make JSON-described edits (docs/API.md, "Writing over HTTP") on ``doc``'s
        root types, as one update; its seq once stored."""
        body = json.dumps({"edits": edits}).encode()
        return await self._post(doc, body, "application/json", {}, key)

    async def write_prosemirror(
        self,
        doc: str,
        content: Any,
        *,
        root: str = "default",
        start: int | None = None,
        end: int | None = None,
        key: str | None = None,
    ) -> int:
        """Replace the rich-text root ``root`` (Tiptap's is ``default``) with a
        ProseMirror document (or nodes); with ``start``/``end``, only its top-level
        nodes from ``start`` up to ``end``. Its seq once stored."""
        query: dict[str, Any] = {"format": "prosemirror", "root": root}
        if start is not None:
            query["from"] = start
        if end is not None:
            query["to"] = end
        return await self._post(doc, json.dumps(content).encode(), "application/json", query, key)

    async def read_prosemirror(self, doc: str, *, root: str = "default") -> dict[str, Any]:
        """The ProseMirror document an editor bound to ``root`` shows."""
        query = urllib.parse.urlencode({"format": "prosemirror", "root": root})
        response = await self._fetch(
            HTTPRequest(f"{self._path(doc)}?{query}", headers=self._auth())
        )
        return json.loads(response.body)

    def _path(self, doc: str) -> str:
        return f"{self.base}/api/documents/{urllib.parse.quote(doc, safe='')}"

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def _post(
        self, doc: str, body: bytes, content_type: str, query: dict[str, Any], key: str | None
    ) -> int:
        if self.author is not None:
            query = {**query, "author": self.author}
        url = f"{self._path(doc)}/updates"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        headers = {
            **self._auth(),
            "Content-Type": content_type,
            "Idempotency-Key": key or uuid.uuid4().hex,
        }
        request = HTTPRequest(url, method="POST", body=body, headers=headers)
        response = await self._fetch(request)
        return int(json.loads(response.body)["seq"])

    async def _fetch(self, request: HTTPRequest) -> HTTPResponse:
        request.request_timeout = self.timeout_s
        for attempt in range(1, self.attempts + 1):
            try:
                return await self._http.fetch(request)
            except HTTPClientError as exc:
                if exc.code not in RETRY_STATUSES or attempt == self.attempts:
                    raise _error(exc) from None
                await asyncio.sleep(_wait_s(exc, attempt))
            except OSError as exc:  # refused, reset: no answer
                if attempt == self.attempts:
                    raise WriteError(599, str(exc)) from None
                await asyncio.sleep(_wait_s(None, attempt))
        raise AssertionError("unreachable")


def _error(exc: HTTPClientError) -> WriteError:
    message = str(exc)
    if exc.response is not None and exc.response.body:
        try:
            message = json.loads(exc.response.body)["error"]
        except (ValueError, KeyError, TypeError):
            message = exc.response.body.decode(errors="replace")
    return WriteError(exc.code, message)


def _wait_s(exc: HTTPClientError | None, attempt: int) -> float:
    header = None
    if exc is not None and exc.response is not None:
        header = exc.response.headers.get("Retry-After")
    try:
        wait_s = float(header) if header is not None else 0.5 * 2 ** (attempt - 1)
    except ValueError:
        wait_s = 1.0
    return min(max(wait_s, 0.0), MAX_WAIT_S)
