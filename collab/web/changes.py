"""``GET /api/events``: the change feed across documents, as Server-Sent Events.

Every update stored for any document the token may read, and every deletion of
one (``event: deleted``), in the order the store committed them (every
instance's), each with the id of its place in the store's feed:
``Last-Event-ID`` (or ``?after=ID``) resumes right after it, on any instance.
Read from the log by position (collab.peers.events.follow_feed), never from what
this instance holds in memory.
"""

from __future__ import annotations

import base64
import json

import tornado.web
from tornado.iostream import StreamClosedError

from collab.auth import Identity
from collab.errors import FeedLost, StoreError
from collab.peers import events
from collab.store import DeletionRecord, FeedRecord
from collab.web.documents import EventStreamHandler


class ChangesHandler(EventStreamHandler):
    """The stream ends (``event: error``) when the store fails, and with ``event:
    lost`` (its id the feed's end) when its place is no longer in the store's
    feed (MongoDB's oplog moved past it): a reader that resumes then has missed
    changes and should read the documents again. It reads the store at the
    reader's pace and holds at most ``events_buffer_bytes`` for it at once."""

    async def get(self) -> None:
        identity = self.identity()
        raw = self.request.headers.get("Last-Event-ID") or self.get_query_argument("after", None)
        after: events.FeedPlace | None = None
        if raw:
            try:
                after = events.parse_feed_id(raw)
            except events.FeedIdError as exc:
                raise tornado.web.HTTPError(400, str(exc)) from None
            try:
                end = await self.server.store.feed_position()
            except StoreError as exc:
                self.on_store_error(exc)
            # A row id on SQLite, a resume token on MongoDB: an id of the other kind
            # was not made by this store (forged, or from another deployment).
            if isinstance(after.position, dict) != isinstance(end, dict):
                raise tornado.web.HTTPError(400, f"{raw[:80]!r} is not an id of this feed")
        await self.while_allowed(identity, self._stream(identity, after))

    async def _stream(self, identity: Identity, after: events.FeedPlace | None) -> None:
        settings = self.server.settings
        self.open_stream()
        stream = events.follow_feed(
            self.server.store,
            after,
            readable=lambda doc: identity.role_for(doc) is not None,
            poll_s=settings.changes_poll_s,
            idle_s=settings.events_keepalive_s,
            stop=self._gone,
        )
        try:
            await self.pump(stream, lambda pair: self._event(*pair))
        except StreamClosedError:
            pass  # the client went away
        except FeedLost as exc:
            await self._lost(exc)
        except StoreError as exc:
            self.error_event(str(exc))
        self.end_stream()

    async def _lost(self, exc: FeedLost) -> None:
        """Its place is gone from the feed: tell the reader, with the feed's end to
        follow on from once it has read the documents again."""
        data = json.dumps({"error": str(exc)})
        try:
            end = events.feed_id(await self.server.store.feed_position())
        except StoreError as error:
            self.error_event(str(error))
            return
        self.write(f"id: {end}\nevent: lost\ndata: {data}\n\n")

    @staticmethod
    def _event(event_id: str, record: FeedRecord) -> str:
        if isinstance(record, DeletionRecord):
            gone = {
                "doc": record.doc,
                "epoch": record.epoch,
                "last_seq": record.last_seq,
                "time_s": record.time_s,
                "origin": record.author.as_dict(),
            }
            text = json.dumps(gone, separators=(",", ":"))
            return f"id: {event_id}\nevent: deleted\ndata: {text}\n\n"
        data = {
            "doc": record.doc,
            "seq": record.seq,
            "time_s": record.time_s,
            "origin": record.author.as_dict(),
            "update": base64.b64encode(record.data).decode(),
        }
        return f"id: {event_id}\nevent: update\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
