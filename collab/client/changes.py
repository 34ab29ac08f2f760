"""Following every document's changes (``GET /api/events``) from Python:

    async with contextlib.aclosing(follow("http://127.0.0.1:8000", token=token)) as changes:
        async for change in changes:
            print(change.doc, change.seq)  # or a Deletion

:func:`follow` reconnects by itself (with a pause that grows, with jitter) and
resumes after the last change it yielded, so a change is yielded once and none
is skipped across reconnects; give ``after`` a change's ``id`` to resume from a
change a previous run saw. It speaks HTTP/1.0 on a plain stream, so that a reader
slower than the server is read no faster than it consumes (the server holds a
bounded amount for it), and parses events with collab.wire.sse.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import ssl
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from collab.backoff import Backoff
from collab.client.connection import ClientError
from collab.wire.sse import MAX_LINE_BYTES, SSEError, SSEParser

log = logging.getLogger("collab.client")

READ_BYTES = 64 * 1024
MAX_HEAD_BYTES = 64 * 1024
IDLE_TIMEOUT_S = 60.0  # the server sends a keep-alive every 15 s by default


class FollowError(ClientError):
    """The server refuses to stream (a bad token, no grant, a bad id): following
    again would be refused again."""


class ChangesLost(ClientError):
    """The place to resume from is no longer in the server's feed (a MongoDB
    oplog that moved past it): changes were missed. Read the documents again,
    then follow from ``resume_id`` (the feed's end when this was raised)."""

    def __init__(self, message: str, resume_id: str | None) -> None:
        super().__init__(message)
        self.resume_id = resume_id


@dataclass(frozen=True, slots=True)
class Change:
    """One update stored for a document: ``id`` resumes right after it."""

    id: str
    doc: str
    seq: int
    time_s: float
    origin: dict[str, str | None]
    update: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Deletion:
    """A document was deleted: the generation ``epoch``, whose last seq was
    ``last_seq``, is gone (a document of that name made later has another epoch
    and starts at seq 1). ``id`` resumes right after it."""

    id: str
    doc: str
    epoch: str
    last_seq: int
    time_s: float
    origin: dict[str, str | None]  # who deleted it


class _Ended(Exception):
    """The server ended the stream: follow again from the last id."""


async def follow(
    url: str,
    *,
    token: str | None = None,
    after: str | None = None,
    idle_timeout_s: float = IDLE_TIMEOUT_S,
    retry_max_s: float = 10.0,
) -> AsyncIterator[Change | Deletion]:
    """Every change to every document the token may read, and every deletion of
    one (a :class:`Deletion`, after the last change of what it deleted), from
    ``after`` (an id; None: from now on), for ever. ``url``: the server's base URL.
    Raises FollowError when the server refuses, ChangesLost when changes were
    missed. Consume it under ``contextlib.aclosing()``."""
    last = after
    backoff = Backoff(0.1, retry_max_s, jitter=True)
    while True:
        try:
            async with contextlib.aclosing(_stream(url, token, last, idle_timeout_s)) as stream:
                async for change in stream:
                    last = change.id
                    backoff.reset()
                    yield change
        except (
            OSError,
            EOFError,
            TimeoutError,
            SSEError,
            _Ended,
            asyncio.IncompleteReadError,
        ) as exc:
            log.info("the change feed ended (%s): following again", exc or type(exc).__name__)
        await backoff.wait()


async def _stream(
    url: str, token: str | None, after: str | None, idle_timeout_s: float
) -> AsyncIterator[Change | Deletion]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FollowError(f"{url!r} is not an http:// or https:// URL")
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(
            parts.hostname,
            port,
            ssl=ssl.create_default_context() if secure else None,
            limit=MAX_HEAD_BYTES,
        ),
        idle_timeout_s,
    )
    try:
        path = parts.path.rstrip("/") + "/api/events"
        head = [
            f"GET {path} HTTP/1.0",
            f"Host: {parts.netloc}",
            "Accept: text/event-stream",
            "Cache-Control: no-cache",
        ]
        if token is not None:
            head.append(f"Authorization: Bearer {token}")
        if after is not None:
            head.append(f"Last-Event-ID: {after}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        await writer.drain()
        status = await _read_head(reader, idle_timeout_s)
        if status != 200:
            body = await asyncio.wait_for(reader.read(MAX_HEAD_BYTES), idle_timeout_s)
            message = _error_of(body) or f"HTTP {status}"
            if 400 <= status < 500 and status not in (408, 429):
                raise FollowError(f"GET /api/events: {message}")
            raise _Ended(f"HTTP {status}: {message}")
        parser = SSEParser(MAX_LINE_BYTES)
        while True:
            chunk = await asyncio.wait_for(reader.read(READ_BYTES), idle_timeout_s)
            if not chunk:
                raise _Ended("the server closed the stream")
            for event in parser.feed(chunk):
                if event.event == "update":
                    data = json.loads(event.data)
                    yield Change(
                        event.id or "",
                        data["doc"],
                        data["seq"],
                        data["time_s"],
                        data["origin"],
                        base64.b64decode(data["update"]),
                    )
                elif event.event == "deleted":
                    data = json.loads(event.data)
                    yield Deletion(
                        event.id or "",
                        data["doc"],
                        data["epoch"],
                        data["last_seq"],
                        data["time_s"],
                        data["origin"],
                    )
                elif event.event == "lost":
                    raise ChangesLost(_error_of(event.data.encode()) or "changes lost", event.id)
                elif event.event in ("expired", "revoked"):
                    raise FollowError(_error_of(event.data.encode()) or event.event)
                elif event.event == "error":
                    raise _Ended(_error_of(event.data.encode()) or "the server failed")
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


async def _read_head(reader: asyncio.StreamReader, timeout_s: float) -> int:
    """The response's status; its headers are read and left."""
    line = await asyncio.wait_for(reader.readline(), timeout_s)
    fields = line.split()
    if len(fields) < 2 or not fields[0].startswith(b"HTTP/") or not fields[1].isdigit():
        raise _Ended(f"not an HTTP response: {line[:80]!r}")
    while (header := await asyncio.wait_for(reader.readline(), timeout_s)) not in (b"\r\n", b"\n"):
        if not header:
            raise _Ended("the response's head ended early")
    return int(fields[1])


def _error_of(body: bytes) -> str | None:
    try:
        answer: Any = json.loads(body)
    except ValueError:
        return None
    return answer.get("error") if isinstance(answer, dict) else None
