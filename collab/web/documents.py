"""HTTP API of documents: the list, a document's content now and at any version,
its history (every update, or a coarse timeline), restoring a version, and a
live event stream (Server-Sent Events). docs/API.md documents every route.

Content is the store's: a version is rebuilt from the nearest snapshot and the
log (collab.core.history) and rendered as JSON (collab.core.render).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import tornado.web
from tornado.iostream import StreamClosedError

from collab.auth import Identity
from collab.config import Settings
from collab.core import api_edits, archive, authors, diff, history, listing
from collab.core.limits import BudgetExceeded, ReadBudget
from collab.core.origin import Origin, OriginKind
from collab.core.snapshots import Cadence
from collab.errors import (
    CollabError,
    ErrorCode,
    InvalidUpdate,
    LoadFailed,
    Overloaded,
    RateLimited,
    StoreError,
)
from collab.peers import events
from collab.store import DocumentInfo, UpdateRecord
from collab.web.api import SMALL_JSON_BYTES, ApiHandler, seq_value
from collab.web.budget import Busy, WorkerLost
from collab.wire import prosemirror
from collab.wire.yformat import FormatError

MAX_PAGE = 1000
DEFAULT_GAP_S = 300.0  # of a timeline: a pause this long starts a new change
OCTET_STREAM = "application/octet-stream"


def _iso(time_s: float | None) -> str | None:
    if time_s is None:
        return None
    try:
        return datetime.datetime.fromtimestamp(time_s, tz=datetime.UTC).isoformat()
    except (OverflowError, ValueError, OSError):
        return None  # not a time a calendar holds (a store written by other means)


def _version_body(doc: str, version: history.Version) -> dict[str, Any]:
    return {
        "doc": doc,
        "seq": version.seq,
        "time_s": version.time_s,
        "time": _iso(version.time_s),
        "types": version.kinds,
        "content": version.content,
    }


class DocumentApiHandler(ApiHandler):
    def limit_argument(self, default: int = 100) -> int:
        limit = self.int_argument("limit", default)
        if limit is None or not 1 <= limit <= MAX_PAGE:
            raise tornado.web.HTTPError(400, f"limit must be between 1 and {MAX_PAGE}")
        return limit

    def caller(self, identity: Identity) -> str:
        """Whose expensive reads these are: the user, or without access tokens the
        client's address."""
        if identity.user is not None:
            return f"user:{identity.user}"
        return f"address:{self.request.remote_ip}"

    @contextlib.contextmanager
    def expensive(self, hint: str = "") -> Iterator[ReadBudget]:
        """Run a read that rebuilds versions: one of the places for such reads
        (429 past the caps), and the budget it may spend (422 past it, with
        ``hint``: what to ask instead). Its work goes to ``self.server.reads.executor``
        (worker processes: what it is given must pickle)."""
        reads = self.server.reads
        try:
            with reads.admit(self.caller(self.identity())):
                yield reads.budget(hint)
        except Busy as exc:
            raise tornado.web.HTTPError(429, str(exc)) from None
        except WorkerLost as exc:
            raise tornado.web.HTTPError(503, str(exc)) from None
        except BudgetExceeded as exc:
            raise tornado.web.HTTPError(422, exc.message) from None

    async def send_version(self, doc: str, seq: int | None) -> None:
        try:
            with self.expensive() as budget:
                version = await history.version_at(
                    self.server.store,
                    doc,
                    seq,
                    budget=budget,
                    executor=self.server.reads.executor,
                )
        except StoreError as exc:
            self.on_store_error(exc)
        await self.answer_json(_version_body(doc, version))

    def wants_binary(self) -> bool:
        return OCTET_STREAM in self.request.headers.get("Accept", "")


class DocumentsHandler(DocumentApiHandler):
    """``GET /api/documents?prefix=&after=&limit=``: documents by name, a page at a
    time; each with its epoch, latest seq, bytes stored (log and snapshots),
    times, and peers connected to it on this instance. Only the names the token's
    grants can match are read (collab.core.listing), at most ``max_list_rows``."""

    async def get(self) -> None:
        identity = self.identity()
        prefix = self.get_query_argument("prefix", "")
        after = self.get_query_argument("after", None)
        limit = self.limit_argument()
        try:
            found = await listing.granted_documents(
                self.server.store,
                identity,
                self.server.list_cursors,
                prefix=prefix,
                after=after,
                limit=limit,
                max_rows=self.server.settings.max_list_rows,
            )
            page = found.documents
            sizes = await self.server.store.stored_bytes([d.name for d in page])
        except listing.CursorError as exc:
            raise tornado.web.HTTPError(400, str(exc)) from None
        except StoreError as exc:
            self.on_store_error(exc)
        rooms = self.server.rooms
        self.write_json(
            {
                "documents": [
                    {
                        "name": d.name,
                        "epoch": d.epoch,
                        "seq": d.head_seq,
                        "bytes": sizes.get(d.name, 0),
                        "created_s": d.created_s,
                        "created": _iso(d.created_s),
                        "updated_s": d.updated_s,
                        "updated": _iso(d.updated_s),
                        "peers": len(room.sessions) if (room := rooms.get(d.name)) else 0,
                    }
                    for d in page
                ],
                "next_after": found.next_after,
            }
        )


class DocumentHandler(DocumentApiHandler):
    """``GET /api/documents/DOC``: the content now, as JSON; with ``Accept:
    application/octet-stream``, the state as one Yjs update; with
    ``format=prosemirror``, a rich-text root as ProseMirror JSON. ``DELETE``: the
    document and its history are gone (write access); its peers are told and
    resubscribe to a new, empty document under a new epoch."""

    async def delete(self, doc: str) -> None:
        identity = self.require_write(doc)
        try:
            deleted = await self.server.rooms.delete(doc, by=identity.user)
        except StoreError as exc:
            self.on_store_error(exc)
        if not deleted:
            raise tornado.web.HTTPError(404, f"no document named {doc!r}")
        self.write_json({"doc": doc, "deleted": True})

    async def get(self, doc: str) -> None:
        fmt = self.get_query_argument("format", None)
        if fmt not in (None, "json", "prosemirror"):
            raise tornado.web.HTTPError(400, "format must be json or prosemirror")
        try:
            info = await self.require_document(doc)
            with self.expensive() as budget:
                executor = self.server.reads.executor
                if fmt == "prosemirror":
                    await self._send_prosemirror(doc, budget)
                    return
                if self.wants_binary():
                    at, state = await history.state_at(
                        self.server.store, doc, budget=budget, executor=executor
                    )
                else:
                    version = await history.version_at(
                        self.server.store, doc, budget=budget, executor=executor
                    )
            if self.wants_binary():
                self.set_header("X-Collab-Seq", str(at))
                await self.answer(state, OCTET_STREAM)
                return
        except StoreError as exc:
            self.on_store_error(exc)
        await self.answer_json({**_version_body(doc, version), "epoch": info.epoch})

    async def _send_prosemirror(self, doc: str, budget: ReadBudget) -> None:
        """``?format=prosemirror[&root=default]``: the ProseMirror JSON an editor
        bound to that root (y-prosemirror, Tiptap) shows, with ``X-Collab-Seq``."""
        root = self.get_query_argument("root", "default")
        executor = self.server.reads.executor
        at, state = await history.state_at(self.server.store, doc, budget=budget, executor=executor)
        try:
            content = await asyncio.get_running_loop().run_in_executor(
                executor, prosemirror.from_state, state, root
            )
        except (prosemirror.ProseMirrorError, FormatError) as exc:
            raise tornado.web.HTTPError(422, str(exc)) from None
        self.set_header("X-Collab-Seq", str(at))
        await self.answer_json(content)


class ImportHandler(DocumentApiHandler):
    """``POST /api/documents/DOC/import`` with an export file (docs/EXPORT.md) as
    the body, of at most ``max_import_bytes``: a new document DOC with the file's
    whole history. Needs write access; 409 when DOC exists; 400 when the file is
    not a whole, valid export."""

    @classmethod
    def max_body_bytes(cls, settings: Settings) -> int:
        return settings.max_import_bytes

    async def prepare(self) -> None:
        await super().prepare()  # the token and the declared size, before the body is read
        # So are the grant and the creation cap: a refused import is not read.
        doc = self.path_args[0]
        identity = self.require_write(doc)
        try:
            # A new document: counted against its user's creation cap.
            self.server.rooms.creations.admit_user(identity.user, doc)
        except RateLimited as exc:
            raise tornado.web.HTTPError(429, exc.message) from None
        self._lines = archive.LineSplitter()

    def data_received(self, chunk: bytes) -> None:
        self._lines.feed(chunk)  # held once, as lines

    async def post(self, doc: str) -> None:
        identity = self.identity()
        try:
            # Its updates say who imported them (the file's authors are its own word).
            name, count = await archive.import_document(
                self.server.store,
                self._lines.lines(),
                name=doc,
                max_name_bytes=self.server.settings.max_document_name_bytes,
                importer=identity.user,
                cadence=Cadence.of(self.server.settings),
                trim_memory=self.server.settings.memory_trim_s > 0,
            )
        except archive.DocumentExists as exc:
            raise tornado.web.HTTPError(409, str(exc)) from None
        except archive.ArchiveError as exc:
            raise tornado.web.HTTPError(400, str(exc)) from None
        except StoreError as exc:
            self.on_store_error(exc)
        self.write_json({"doc": name, "updates": count}, 201)


class VersionHandler(DocumentApiHandler):
    """``GET /api/documents/DOC/versions/SEQ``: the content after update SEQ."""

    async def get(self, doc: str, raw_seq: str) -> None:
        seq = seq_value(raw_seq, "the version (a seq)")
        try:
            info = await self.require_document(doc)
        except StoreError as exc:
            self.on_store_error(exc)
        if seq > info.head_seq:
            raise tornado.web.HTTPError(
                400, f"seq {seq} is past the document's latest version ({info.head_seq})"
            )
        await self.send_version(doc, seq)


class VersionAtHandler(DocumentApiHandler):
    """``GET /api/documents/DOC/versions?at=ISO-8601``: the content at that time
    (after the last update accepted at or before it)."""

    async def get(self, doc: str) -> None:
        raw = self.get_query_argument("at", None)
        if raw is None:
            raise tornado.web.HTTPError(400, "give the time as at=<ISO 8601 time>")
        try:
            moment_s = history.timestamp_of(raw)
        except ValueError:
            raise tornado.web.HTTPError(400, f"at={raw!r} is not an ISO 8601 time") from None
        try:
            info = await self.require_document(doc)
            seq = await history.seq_at_time(self.server.store, doc, moment_s, info.head_seq)
        except StoreError as exc:
            self.on_store_error(exc)
        await self.send_version(doc, seq)


class HistoryHandler(DocumentApiHandler):
    """``GET /api/documents/DOC/history?after=&limit=``: every update, a page at a
    time. ``group=session``: a timeline of changes (one user's consecutive updates
    with no pause longer than ``gap_s``)."""

    async def get(self, doc: str) -> None:
        after = self.int_argument("after", 0) or 0
        limit = self.limit_argument()
        group = self.get_query_argument("group", None)
        if group not in (None, "session"):
            raise tornado.web.HTTPError(400, "group must be session")
        include = self.get_query_argument("include", None)
        if include not in (None, "update"):
            raise tornado.web.HTTPError(400, "include must be update")
        gap_s = self._gap_argument()
        try:
            await self.require_document(doc)
            # Versions from this seq on can be shown; the log starts after it.
            first = await history.retained_from(self.server.store, doc)
            settings = self.server.settings
            if group == "session":
                changes, next_after = await history.changes(
                    self.server.store,
                    doc,
                    after_seq=after,
                    limit=limit,
                    gap_s=gap_s,
                    max_rows=settings.max_read_updates,
                )
                await self.answer_json(
                    {
                        "doc": doc,
                        "retained_from": first,
                        "changes": [self._change(c) for c in changes],
                        "next_after": next_after,
                    }
                )
                return
            # The page ends early past max_read_bytes of updates (at least one).
            page, more = await history.page_of_updates(
                self.server.store,
                doc,
                after_seq=after,
                limit=limit,
                max_bytes=settings.max_read_bytes,
            )
        except StoreError as exc:
            self.on_store_error(exc)
        await self.answer_json(
            {
                "doc": doc,
                "retained_from": first,
                "updates": [
                    {
                        "seq": u.seq,
                        "time_s": u.time_s,
                        "time": _iso(u.time_s),
                        "bytes": len(u.data),
                        "origin": u.author.as_dict(),
                        **({"update": base64.b64encode(u.data).decode()} if include else {}),
                    }
                    for u in page
                ],
                "next_after": page[-1].seq if more else None,
            }
        )

    def _gap_argument(self) -> float:
        raw = self.get_query_argument("gap_s", None)
        if raw is None:
            return DEFAULT_GAP_S
        try:
            gap_s = float(raw)
        except ValueError:
            raise tornado.web.HTTPError(400, "gap_s must be a number of seconds") from None
        if not 0 <= gap_s <= 365 * 86400:
            raise tornado.web.HTTPError(400, "gap_s must be between 0 and a year")
        return gap_s

    @staticmethod
    def _change(change: history.Change) -> dict[str, Any]:
        return {
            "first_seq": change.first_seq,
            "last_seq": change.last_seq,
            "first_time_s": change.first_time_s,
            "last_time_s": change.last_time_s,
            "first_time": _iso(change.first_time_s),
            "last_time": _iso(change.last_time_s),
            "user": change.user,
            "clients": list(change.clients),
            "updates": change.updates,
            "bytes": change.bytes,
        }


class DiffHandler(DocumentApiHandler):
    """``GET /api/documents/DOC/diff?from=SEQ&to=SEQ[&root=NAME]``: a text root's
    changes between two versions, as kept, inserted and deleted spans, each
    change with who made it (collab.core.diff)."""

    async def get(self, doc: str) -> None:
        from_seq = self.int_argument("from", None)
        to_seq = self.int_argument("to", None)
        root = self.get_query_argument("root", None)
        try:
            info = await self.require_document(doc)
            from_seq = 0 if from_seq is None else from_seq
            to_seq = info.head_seq if to_seq is None else to_seq
            if to_seq > info.head_seq:
                raise tornado.web.HTTPError(
                    400, f"seq {to_seq} is past the document's latest version ({info.head_seq})"
                )
            with self.expensive(hint="narrow the range (from, to)") as budget:
                name, spans = await diff.text_diff(
                    self.server.store,
                    doc,
                    from_seq,
                    to_seq,
                    root,
                    budget=budget,
                    executor=self.server.reads.executor,
                )
        except diff.DiffError as exc:
            raise tornado.web.HTTPError(400, str(exc)) from None
        except StoreError as exc:
            self.on_store_error(exc)
        await self.answer_json(
            {
                "doc": doc,
                "root": name,
                "from": from_seq,
                "to": to_seq,
                "spans": spans,
            }
        )


class AuthorsHandler(DocumentApiHandler):
    """``GET /api/documents/DOC/authors[?seq=SEQ]``: who wrote what. Each text and
    rich-text root of the version as runs of text, each with the author of the
    update that inserted it (collab.core.authors)."""

    async def get(self, doc: str) -> None:
        seq = self.int_argument("seq", None)
        try:
            info = await self.require_document(doc)
            if seq is not None and not 0 <= seq <= info.head_seq:
                raise tornado.web.HTTPError(
                    400, f"seq must be between 0 and the latest version ({info.head_seq})"
                )
            with self.expensive() as budget:
                found = await authors.authors_at(
                    self.server.store,
                    doc,
                    seq,
                    budget=budget,
                    executor=self.server.reads.executor,
                )
        except StoreError as exc:
            self.on_store_error(exc)
        await self.answer_json({"doc": doc, **found.to_json()})


class StateHandler(DocumentApiHandler):
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
            with self.expensive() as budget:
                at, state = await history.state_at(
                    self.server.store,
                    doc,
                    seq,
                    waiting=waiting == "yes",
                    budget=budget,
                    executor=self.server.reads.executor,
                )
        except StoreError as exc:
            self.on_store_error(exc)
        self.set_header("X-Collab-Seq", str(at))
        await self.answer(state, OCTET_STREAM)


class RestoreHandler(DocumentApiHandler):
    """``POST /api/documents/DOC/restore`` with ``{"seq": N}`` (or ``{"name":
    "Sent to legal"}``, a named version): one new update that brings the content
    back to version N, stored and sent to every peer like any edit, attributed to
    the caller. Needs write access."""

    @classmethod
    def max_body_bytes(cls, settings: Settings) -> int:
        return SMALL_JSON_BYTES

    async def post(self, doc: str) -> None:
        identity = self.require_write(doc)
        named = self._name_from_body()
        seq = self._seq_from_body() if named is None else -1
        try:
            info = await self.require_document(doc)
            if named is not None:
                found = [n for n in await self.server.store.version_names(doc) if n.name == named]
                if not found:
                    raise tornado.web.HTTPError(404, f"no version of {doc!r} is named {named!r}")
                seq = found[-1].seq  # the newest of that name
            if seq > info.head_seq:
                raise tornado.web.HTTPError(
                    400, f"seq {seq} is past the document's latest version ({info.head_seq})"
                )
            origin = Origin(
                OriginKind.API,
                identity.user,
                f"api:restore:{self.request.remote_ip}",
                self.server.settings.instance_id,
            )
            restored, new_seq = await api_edits.restore_version(
                self.server.rooms,
                doc,
                seq,
                origin,
                timeout_s=self.server.settings.restore_timeout_s,
                epoch=info.epoch,
            )
        except StoreError as exc:
            self.on_store_error(exc)
        except (Overloaded, LoadFailed) as exc:
            raise tornado.web.HTTPError(503, exc.message) from None
        except InvalidUpdate as exc:
            if exc.code is ErrorCode.TOO_LARGE:  # it costs more than one update may
                raise tornado.web.HTTPError(
                    422, f"the restore was refused, the document is unchanged: {exc.message}"
                ) from None
            # the restore's own update: a fault here, not the caller's
            raise tornado.web.HTTPError(500, f"the restore could not be applied: {exc}") from None
        except TimeoutError:
            raise tornado.web.HTTPError(
                503, "the restore was applied but not yet stored; check the history"
            ) from None
        except CollabError as exc:  # an extension's before_update: refused, or failed
            status = 403 if exc.code is ErrorCode.UPDATE_REFUSED else 503
            raise tornado.web.HTTPError(status, f"the restore was refused: {exc.message}") from None
        self.write_json(
            {"doc": doc, "restored_seq": restored, "seq": new_seq, "changed": new_seq is not None}
        )

    def _name_from_body(self) -> str | None:
        try:
            body = json.loads(self.body) if self.body else None
        except ValueError:
            return None  # _seq_from_body says what is wrong
        name = body.get("name") if isinstance(body, dict) else None
        if name is not None and not isinstance(name, str):
            raise tornado.web.HTTPError(400, "name must be a string")
        return name

    def _seq_from_body(self) -> int:
        raw: Any = self.get_query_argument("seq", None)
        if raw is None and self.body:
            try:
                body = json.loads(self.body)
            except ValueError:
                raise tornado.web.HTTPError(400, 'the body must be JSON: {"seq": N}') from None
            raw = body.get("seq") if isinstance(body, dict) else None
        if raw is None:
            raise tornado.web.HTTPError(400, 'give the version to restore: {"seq": N}')
        return seq_value(raw, "seq")


END_GRACE_S = 5.0  # an ended stream's reader may take this long to read its last events
# At the server's stop, a stream's reader may take this long to take what was
# written (the end of the response included) before its connection is dropped: a
# reader that does not read would otherwise hold the whole stop (2 s).
STOP_GRACE_S = 0.5


T = TypeVar("T")


class EventStreamHandler(DocumentApiHandler):
    """What every Server-Sent Events route shares: the stream ends when its token
    expires or its user is revoked (:meth:`while_allowed`), its headers and the
    reconnection delay (:meth:`open_stream`), the event that says why it ended
    (:meth:`end_stream`), and a reader that went away or is sent away."""

    _closed = False

    def initialize(self, server: Any) -> None:
        super().initialize(server)
        self._gone = asyncio.Event()  # the client went away, or may not read any more
        self._ended: str | None = None  # why the stream was ended: expired, revoked

    async def while_allowed(self, identity: Identity, stream: Awaitable[None]) -> None:
        """Run ``stream`` until it ends, or until the token expires or its user is
        revoked (``_gone`` is set: the stream stops at its next wait)."""
        loop = asyncio.get_running_loop()
        expiry = None
        if identity.expires_s is not None:
            expiry = loop.call_later(
                max(0.0, identity.expires_s - time.time()), self._end, "expired"
            )

        def revoked(user: str) -> None:
            if user == identity.user:
                self._end("revoked")

        self.server.revocation_listeners.add(revoked)
        try:
            await stream
        finally:
            self.server.revocation_listeners.discard(revoked)
            if expiry is not None:
                expiry.cancel()

    def _end(self, why: str) -> None:
        """The token expired or was revoked: the stream ends (an EventSource
        reconnects, with whatever token its URL holds). A reader that does not read
        (the stream waits for it to take what was written) is dropped after a grace."""
        self._ended = why
        self._gone.set()
        asyncio.get_running_loop().call_later(END_GRACE_S, self._drop_if_open)

    def on_server_stop(self) -> None:
        # Ends as a finished stream (no event says why): its reader reconnects, to
        # another instance or to this one restarted, from its Last-Event-ID.
        self._gone.set()
        asyncio.get_running_loop().call_later(STOP_GRACE_S, self._drop_if_open)

    def _drop_if_open(self) -> None:
        # Finished or not, what was written may still wait for the reader. Once all
        # of it was written (Tornado's _finish_future: this request's connection),
        # the stream may carry the client's next request: left alone.
        connection = self.request.connection
        written = getattr(connection, "_finish_future", None)
        if written is not None and written.done():
            return
        stream = connection.stream  # type: ignore[union-attr]
        if not stream.closed() and stream.writing():
            self._abort()

    async def pump(self, stream: AsyncIterator[list[T]], render: Callable[[T], str]) -> None:
        """Write what ``stream`` yields, each item as ``render`` makes it an event,
        until it ends or the reader goes: a keep-alive comment for an empty batch,
        and the reader takes each ``events_buffer_bytes`` written before more is
        read. Raises StreamClosedError when the reader went away."""
        limit = self.server.settings.events_buffer_bytes
        await self.flush()
        async with contextlib.aclosing(stream) as batches:
            async for batch in batches:
                if self._closed:
                    break
                if not batch:
                    self.write(": keep-alive\n\n")
                held = 0
                for item in batch:
                    text = render(item)
                    self.write(text)
                    held += len(text)
                    if held >= limit:
                        await self.flush()
                        held = 0
                await self.flush()

    def error_event(self, message: str) -> None:
        self.write(f"event: error\ndata: {json.dumps({'error': message})}\n\n")

    def open_stream(self) -> None:
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("X-Accel-Buffering", "no")  # nginx: pass events on at once
        self.write("retry: 1000\n\n")

    def end_stream(self) -> None:
        """Say why the stream ended, if the token did, and finish."""
        if self._ended is not None and not self._closed:
            message = (
                f"the access token was {self._ended}"
                if self._ended == "revoked"
                else ("the access token has expired")
            )
            self.write(f"event: {self._ended}\ndata: {json.dumps({'error': message})}\n\n")
        if not self._closed:
            with contextlib.suppress(StreamClosedError):
                self.finish()

    def _abort(self) -> None:
        """The reader fell too far behind: drop the connection (a write waiting for
        it to read ends with StreamClosedError)."""
        self._closed = True
        stream = self.request.connection.stream  # type: ignore[union-attr]
        stream.close()

    def on_connection_close(self) -> None:
        super().on_connection_close()  # a cut body (a GET may send one) ends the request
        self._closed = True
        self._gone.set()


class EventsHandler(EventStreamHandler):
    """``GET /api/documents/DOC/events``: Server-Sent Events, one per stored update
    (``id:`` its seq), from ``Last-Event-ID`` or ``?after=SEQ`` on (replayed from
    the log, then live), or from now on. A comment line keeps a quiet stream open;
    a reader that falls more than ``events_buffer_bytes`` behind is disconnected
    (it resumes with Last-Event-ID)."""

    async def get(self, doc: str) -> None:
        after = self._after()
        identity = self.identity()
        try:
            info = await self.require_document(doc)
        except StoreError as exc:
            self.on_store_error(exc)
        await self.while_allowed(identity, self._stream(doc, info, after))

    async def _stream(self, doc: str, info: DocumentInfo, after: int | None) -> None:
        if after is not None and after > info.head_seq:
            raise tornado.web.HTTPError(
                400, f"seq {after} is past the document's latest version ({info.head_seq})"
            )
        if after is not None:
            try:
                first = await history.retained_from(self.server.store, doc)
            except StoreError as exc:
                self.on_store_error(exc)
            if after < first:
                raise tornado.web.HTTPError(
                    410, f"updates before seq {first + 1} are no longer kept (retention)"
                )
        settings = self.server.settings
        self.open_stream()
        stream = events.follow(
            self.server.rooms,
            doc,
            after,
            buffer_bytes=settings.events_buffer_bytes,
            idle_s=settings.events_keepalive_s,
            on_overflow=self._abort,
            stop=self._gone,
        )
        try:
            await self.pump(stream, lambda record: self._event(record, info.epoch))
        except (StreamClosedError, events.StreamOverflow):
            pass  # the client went away, or was sent away for not reading
        except events.DocumentReplaced as exc:
            # id 0: a reader that reconnects (EventSource does) starts the next
            # document of this name from its beginning, not from an old seq.
            self.write(f"id: 0\nevent: deleted\ndata: {json.dumps({'error': str(exc)})}\n\n")
        except StoreError as exc:
            self.error_event(str(exc))
        except CollabError as exc:  # the document could not be loaded
            self.error_event(exc.message)
        self.end_stream()

    def _after(self) -> int | None:
        raw = self.request.headers.get("Last-Event-ID") or self.get_query_argument("after", None)
        return None if raw is None else seq_value(raw, "Last-Event-ID or after")

    @staticmethod
    def _event(record: UpdateRecord, epoch: str) -> str:
        data = {
            "epoch": epoch,  # a reader that resumed across a deletion sees it change
            "seq": record.seq,
            "time_s": record.time_s,
            "origin": record.author.as_dict(),
            "update": base64.b64encode(record.data).decode(),
        }
        return (
            f"id: {record.seq}\nevent: update\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
        )
