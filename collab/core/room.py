"""A room: one document's live state and everyone editing it.

The room owns the document (a :class:`Replica`: a ``pycrdt.Doc`` and the update
parts waiting for their dependencies), the awareness states, the sessions joined to it
and the persistence cursor (the last seq assigned). Nothing else mutates the doc.
Every method is synchronous: an update is validated, applied, broadcast and
queued for the writer in one step of the event loop, so peers see edits in seq
order and nothing waits on I/O here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pycrdt

from collab.config import Settings
from collab.core.session import FrameCodec, Session, SessionState
from collab.core.writer import PendingWrite, Writer
from collab.errors import CollabError, DocumentDamaged, ErrorCode, InvalidUpdate, StoreError
from collab.store.base import LoadedDocument, UpdateRecord
from collab.wire.replica import Replica
from collab.wire.yformat import FormatError, decode_awareness_update, decode_state_vector

log = logging.getLogger("collab.rooms")


@dataclass(frozen=True, slots=True)
class JoinReply:
    epoch: str
    seq: int
    missing: bytes  # what the peer lacks (sync step 2)
    state_vector: bytes  # the room's state vector (sync step 1)
    awareness: bytes | None  # every known awareness state, if any


def build_replica(loaded: LoadedDocument, settings: Settings) -> Replica:
    """The document a load describes: its snapshot, then the log after it. CPU-bound:
    run it in an executor. Raises StoreError when a stored entry cannot be applied
    (``collab check`` finds such entries and ``--repair`` sets them aside)."""
    replica = Replica(name=loaded.name, max_waiting_bytes=settings.max_waiting_bytes)
    parts = [("snapshot", loaded.snapshot)] if loaded.snapshot is not None else []
    parts += [("update", record) for record in loaded.updates]
    for kind, entry in parts:
        try:
            # Stored entries load whatever waits already: the bound is for new ones.
            replica.apply(entry.data, bounded=False)
        except InvalidUpdate as exc:
            raise StoreError(
                f"{loaded.name!r}: stored {kind} at seq {entry.seq} cannot be applied: "
                f"{exc.message}"
            ) from None
    return replica


class Room:
    def __init__(
        self,
        loaded: LoadedDocument,
        replica: Replica,
        writer: Writer,
        settings: Settings,
        on_damaged: Callable[[Room, CollabError], None],
    ) -> None:
        self.name = loaded.name
        self.epoch = loaded.epoch
        self.head_seq = loaded.head_seq
        self.sessions: dict[Session, None] = {}  # insertion-ordered set
        self._replica = replica
        self._writer = writer
        self._settings = settings
        self._on_damaged = on_damaged
        self.damaged = False
        self._awareness = pycrdt.Awareness(replica.doc)
        self._awareness.set_local_state(None)  # the server is not an editor
        self._awareness_subscription = self._awareness.observe(self._on_awareness_change)
        self._since_snapshot_updates = len(loaded.updates)
        self._since_snapshot_bytes = sum(len(u.data) for u in loaded.updates)
        self.pending_writes = 0
        self._flushed = asyncio.Event()
        self._flushed.set()

    # -- membership ---------------------------------------------------------------------

    def join(self, session: Session, state_vector: bytes | None) -> JoinReply:
        missing = self.missing_for(state_vector or b"\x00")
        self.sessions[session] = None
        session.room = self
        session.state = SessionState.ACTIVE
        return JoinReply(
            epoch=self.epoch,
            seq=self.head_seq,
            missing=missing,
            state_vector=self._replica.doc.get_state(),
            awareness=self.awareness_snapshot(),
        )

    def leave(self, session: Session) -> None:
        """Remove a session and, for everyone else, the awareness states it set."""
        if session not in self.sessions:
            return
        del self.sessions[session]
        session.state = SessionState.CLOSED
        if session.awareness_clients:
            self._awareness.remove_awareness_states(
                sorted(session.awareness_clients), origin=session
            )

    @property
    def idle(self) -> bool:
        return not self.sessions and self.pending_writes == 0

    async def flushed(self) -> None:
        """Wait until every update applied so far is durable."""
        await self._flushed.wait()

    def close(self) -> None:
        self._awareness.unobserve(self._awareness_subscription)

    # -- document -----------------------------------------------------------------------

    def missing_for(self, state_vector: bytes) -> bytes:
        """What a peer with ``state_vector`` lacks (sync step 2)."""
        try:
            decode_state_vector(state_vector)  # stricter than Yrs: trailing bytes, ranges
            return self._replica.encode(state_vector)
        except (FormatError, InvalidUpdate) as exc:
            raise InvalidUpdate(
                f"the state vector could not be used: {exc}",
                code=ErrorCode.INVALID_STATE_VECTOR,
                doc=self.name,
            ) from None

    def apply_update(
        self,
        session: Session,
        update: bytes,
        on_durable: Callable[[int], None] | None = None,
    ) -> int | None:
        """Check, apply, broadcast and queue a peer's update. Returns the seq
        assigned, or None when the update changes nothing (it is then not logged,
        but ``on_durable`` still runs, with the seq that covers it, once that is
        durable). Raises InvalidUpdate or Overloaded; the document is then
        unchanged."""
        if not update:
            raise InvalidUpdate("the update is empty", doc=self.name)
        ranges = self._replica.check(update)  # the one gate: collab.wire.yformat
        self._writer.admit(len(update), doc=self.name)
        try:
            stored = self._replica.apply(update, ranges)
        except DocumentDamaged as exc:
            # The doc may hold part of an update that will never be logged: it is
            # no longer the stored document. Drop it; it reloads from the store.
            self.damaged = True
            log.error("%r: %s; reloading it from the store", self.name, exc.message)
            self._on_damaged(self, exc)
            raise
        if stored is None:
            self._queue_write(session, None, on_durable)
            return None
        update = stored  # without what the document had already, if the peer resent it

        self.head_seq += 1
        seq = self.head_seq
        record = UpdateRecord(self.name, seq, update, time.time(), session.origin)
        self._broadcast(lambda codec: codec.update_frame(self.name, seq, update), exclude=session)
        self._since_snapshot_updates += 1
        self._since_snapshot_bytes += len(update)
        snapshot_due = (
            self._since_snapshot_updates >= self._settings.snapshot_every_updates
            or self._since_snapshot_bytes >= self._settings.snapshot_every_bytes
        )
        if snapshot_due:
            self._since_snapshot_updates = self._since_snapshot_bytes = 0
        self._queue_write(session, record, on_durable, snapshot_after=snapshot_due)
        return seq

    def covers(self, update: bytes) -> bool:
        """True when the room holds every struct ``update`` carries and every item
        its deletions refer to. Raises InvalidUpdate for bytes the strict reader
        refuses."""
        return self._replica.check(update).integrated_in(self._replica.state())

    def encode_state(self) -> bytes:
        """The whole document as one update (what waits for dependencies included)."""
        return self._replica.encode()

    def _queue_write(
        self,
        session: Session,
        record: UpdateRecord | None,
        on_durable: Callable[[int], None] | None,
        *,
        snapshot_after: bool = False,
    ) -> None:
        seq = self.head_seq

        def durable() -> None:
            self.pending_writes -= 1
            if self.pending_writes == 0:
                self._flushed.set()
            session.write_durable()
            if on_durable is not None:
                on_durable(seq)

        self._writer.submit(PendingWrite(self.name, record, durable, snapshot_after))
        self.pending_writes += 1
        self._flushed.clear()
        session.write_submitted()

    # -- awareness ------------------------------------------------------------------------

    def apply_awareness(self, session: Session, update: bytes) -> None:
        try:
            decode_awareness_update(update)
        except FormatError as exc:
            raise InvalidUpdate(
                f"the awareness update could not be decoded: {exc}",
                code=ErrorCode.INVALID_AWARENESS,
                doc=self.name,
            ) from None
        try:
            self._awareness.apply_awareness_update(update, session)
        except Exception as exc:  # pycrdt's awareness is Python: no panics, but guard it
            raise InvalidUpdate(
                f"the awareness update could not be applied: {exc}",
                code=ErrorCode.INVALID_AWARENESS,
                doc=self.name,
            ) from None

    def awareness_snapshot(self) -> bytes | None:
        clients = list(self._awareness.states)
        return self._awareness.encode_awareness_update(clients) if clients else None

    def _on_awareness_change(self, topic: str, args: tuple[dict[str, list[int]], Any]) -> None:
        if topic != "update":
            return
        changes, origin = args
        if isinstance(origin, Session):
            self._track_awareness_owner(origin, changes)
        changed = changes["added"] + changes["updated"] + changes["removed"]
        payload = self._awareness.encode_awareness_update(changed)
        # Sent to the origin too, as y-websocket servers do: a y-websocket client
        # that hears nothing for 30 s reconnects, and its own awareness renewal
        # (every 15 s) is what it hears when it is alone.
        self._broadcast(lambda codec: codec.awareness_frame(self.name, payload), exclude=None)

    def _track_awareness_owner(self, session: Session, changes: dict[str, list[int]]) -> None:
        # The session that last set a client's state owns it and removes it when it
        # leaves. A client that reconnected before its old socket was found dead
        # takes its state over, so the old socket's close does not remove it.
        session.awareness_clients.difference_update(changes["removed"])
        for client_id in changes["added"] + changes["updated"]:
            if client_id in session.awareness_clients:
                continue
            for other in self.sessions:
                other.awareness_clients.discard(client_id)
            session.awareness_clients.add(client_id)

    # -- fan-out --------------------------------------------------------------------------

    def _broadcast(self, encode: Callable[[FrameCodec], bytes], *, exclude: Session | None) -> None:
        frames: dict[FrameCodec, bytes] = {}
        for session in self.sessions:
            if session is exclude:
                continue
            frame = frames.get(session.codec)
            if frame is None:
                frame = frames[session.codec] = encode(session.codec)
            session.send(frame)

    def __repr__(self) -> str:
        return f"<Room {self.name!r} seq={self.head_seq} sessions={len(self.sessions)}>"
