"""A room: one document's live state and everyone editing it on this instance.

The room owns the document (a :class:`Replica`: a ``pycrdt.Doc`` and the update
parts waiting for their dependencies), the sessions joined to it, and
``head_seq``: the last seq its peers were sent. Nothing else mutates the doc. Its
awareness states are :class:`~collab.core.awareness.RoomAwareness`'s, and what it
sends goes through its :class:`~collab.core.fanout.Fanout` (batched per pass of
the event loop).

The path of an update, and why seqs come out right:

- A peer's update is checked and applied to the doc at once (:meth:`Room.submit`:
  a bad one is refused before anything changes, and the sender's next edit builds
  on it; a large one is checked on a thread first), then queued for the writer as
  a :class:`~collab.core.writer.Submission`. The store gives it its seq when it
  commits the batch, and the writer reports it back (:meth:`Room.committed`).
- Updates are sent to peers only once they are committed, in seq order: a
  committed record, this instance's or another's (from the store's feed), waits
  in ``_ahead`` until every earlier seq has been sent. When a seq is missing (it
  was committed by another instance and the feed has not brought it yet), the
  room reads it from the log. So every peer of every instance receives every
  update once, with its seq, in seq order, and the sender's ack comes in that
  order too. A record from another instance is integrated into the doc when it
  is sent on; this instance's own are in it already.
- A seq shown to a peer (sync, update, ack) is therefore always a stored one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

from collab.backoff import Backoff
from collab.config import Settings
from collab.core.awareness import PublishAwareness, RoomAwareness
from collab.core.fanout import Fanout
from collab.core.history import apply_log, restore
from collab.core.session import Session, SessionState
from collab.core.writer import Submission, Writer
from collab.errors import (
    CollabError,
    DocumentDamaged,
    ErrorCode,
    InvalidUpdate,
    StoreError,
)
from collab.metrics import Metrics
from collab.store import LoadedDocument, NewUpdate, UpdateRecord
from collab.tasks import TaskGroup
from collab.wire import crdt
from collab.wire.long_items import CutMeter
from collab.wire.replica import EMPTY_UPDATE, Prepared, Replica
from collab.wire.yformat import (
    FormatError,
    TooManyStructs,
    UpdateRanges,
    check_update,
    decode_state_vector,
)

log = logging.getLogger("collab.rooms")

FetchLog = Callable[[str, int, int | None], Awaitable[list[UpdateRecord]]]
StoredEpoch = Callable[[str], Awaitable[str | None]]
LOG_PAGE = 1000
SHARED_ANSWER_BYTES = 1024 * 1024  # sync answers this large are shared by peers joining together
SHARED_ANSWER_S = 2.0  # for this long after one is made


class SyncMode(StrEnum):
    """How a joining peer is brought up to date (docs/PROTOCOL.md, resume)."""

    DIFF = "diff"  # what its state vector lacks
    LOG = "log"  # the log records after the seq it holds (smaller than the diff)
    RESET = "reset"  # its copy has another epoch: drop it; this is the whole document


@dataclass(frozen=True, slots=True)
class Resume:
    """What a resubscribing peer holds: every update up to ``seq`` of ``epoch``."""

    seq: int
    epoch: str | None
    fetched: tuple[UpdateRecord, ...] = ()  # records after ``seq`` read from the store


@dataclass(frozen=True, slots=True)
class JoinReply:
    epoch: str
    seq: int
    missing: bytes  # what the peer lacks (sync step 2)
    state_vector: bytes  # the room's state vector (sync step 1)
    awareness: bytes | None  # every known awareness state, if any
    mode: SyncMode = SyncMode.DIFF


@dataclass(slots=True)
class _Delivery:
    """A committed record on its way to the room's peers; ``submission`` is how it
    came, when a peer of this instance wrote it (its sender, what to tell it, and
    what its apply integrated)."""

    record: UpdateRecord
    submission: Submission | None = None


def build_replica(loaded: LoadedDocument, settings: Settings) -> Replica:
    """The document a load describes: its snapshot, then the log after it. CPU-bound:
    run it in an executor. Raises StoreError when a stored entry cannot be applied
    (``collab check`` finds such entries and ``--repair`` sets them aside)."""
    replica = Replica(
        name=loaded.name,
        max_waiting_bytes=settings.max_waiting_bytes,
        max_cut_values=settings.max_cut_values,
    )
    if loaded.snapshot is not None:
        restore(replica, loaded.snapshot)
    apply_log(replica, loaded.updates)
    return replica


# Updates this large are checked and prepared on a thread: 16 KiB of the costliest
# structs (items that wait for one another, or become GC) take the loop ~20 ms.
OFF_LOOP_CHECK_BYTES = 16 * 1024
PREPARE_ATTEMPTS = 3  # tries at preparing an update on a thread while the document changes


async def check_off_loop(update: bytes, doc: str, max_structs: int) -> UpdateRanges:
    """Check an update (as Room.apply_update would) on a thread: reading a large one
    takes tens of milliseconds that the event loop owes every other peer. Reading
    stops past ``max_structs`` structs or deleted ranges. Raises InvalidUpdate
    (code ``too_large`` past the count)."""
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(None, check_update, update, max_structs)
    except TooManyStructs as exc:
        raise InvalidUpdate(
            f"{exc}: send it in smaller parts", code=ErrorCode.TOO_LARGE, doc=doc
        ) from None
    except FormatError as exc:
        raise InvalidUpdate(f"the update is not a valid Yjs v1 update: {exc}", doc=doc) from None


class Room:
    def __init__(
        self,
        loaded: LoadedDocument,
        replica: Replica,
        writer: Writer,
        settings: Settings,
        *,
        fetch_log: FetchLog,
        stored_epoch: StoredEpoch,
        publish_awareness: PublishAwareness,
        on_damaged: Callable[[Room, CollabError], None],
        metrics: Metrics | None = None,
        admit_creation: Callable[[Session], None] | None = None,
        on_adopt: Callable[[Room, str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = loaded.name
        self._clock = clock  # Unix seconds, for the time of each update
        self.epoch = loaded.epoch
        # False until its first update is stored: a document is created by a
        # write, never by subscribing to it (its epoch is stored with that write).
        self.stored = loaded.stored
        self._creating = False  # a creating write was admitted
        self._admit_creation = admit_creation
        self._on_adopt = on_adopt
        self.head_seq = loaded.head_seq  # the last seq sent to this room's peers
        self.sessions: dict[Session, None] = {}  # insertion-ordered set
        self._replica = replica
        self._writer = writer
        self._settings = settings
        self._instance = settings.instance_id
        self._fetch_log = fetch_log
        self._stored_epoch = stored_epoch
        self._epochs_checked: set[str] = set()  # created elsewhere? asked the store once each
        self._on_damaged = on_damaged
        self._metrics = metrics or Metrics()
        self.damaged = False
        self._known_seq = self.head_seq  # the highest seq known to be committed
        self._ahead: dict[int, _Delivery] = {}  # committed, waiting for earlier seqs
        self._reading: asyncio.Task[None] | None = None
        self._read_again = False
        self._waiting_acks: list[tuple[int, Callable[[], None]]] = []
        self._tasks = TaskGroup(log)
        self.fanout = Fanout(self.sessions, self._metrics.updates_out)
        self.awareness = RoomAwareness(
            self.name, replica.doc, self.sessions, self.fanout, settings, publish_awareness
        )
        # A large sync answer, for peers joining with the same state vector while
        # the document is at the same version: (version, state vector, answer).
        self._shared_answer: tuple[int, bytes, bytes] | None = None
        self._forget_answer: asyncio.TimerHandle | None = None
        # The latest records sent to peers, for resuming ones that were away briefly.
        self._recent: deque[UpdateRecord] = deque()
        self._recent_bytes = 0
        self.pending_writes = 0
        self.changes = 0  # updates applied to the document so far (a change counter)
        # This room's updates sent to the store and not yet reported back by the
        # writer, by their bytes: a log read or the feed may show one first, and it
        # is delivered with its sender (acknowledged, not echoed) once reported.
        self._in_flight: Counter[bytes] = Counter()
        self._flushed = asyncio.Event()
        self._flushed.set()
        # Called with every record as it is sent to the peers, in seq order (an
        # event stream of the document follows it so), and with None when the room
        # is dropped (the document was deleted or must be reloaded).
        self.watchers: dict[Callable[[UpdateRecord | None], None], None] = {}

    # -- membership ---------------------------------------------------------------------

    def join(
        self, session: Session, state_vector: bytes | None, resume: Resume | None = None
    ) -> JoinReply:
        """Add a session; the reply brings its peer up to date (no await in here:
        nothing reaches the peer before the reply)."""
        mode = SyncMode.DIFF
        if resume is not None and resume.epoch is not None and resume.epoch != self.epoch:
            mode = SyncMode.RESET
            missing = self.missing_for(b"\x00")
        else:
            missing = self.missing_for(state_vector or b"\x00")
            if resume is not None and state_vector is not None:
                logged = self._records_since(resume, state_vector)
                # The diff carries the document's whole delete set; records carry
                # only their own deletions (and need no pass over the document).
                if logged is not None and len(logged) <= len(missing):
                    mode, missing = SyncMode.LOG, logged
        self.fanout.flush()  # what is queued is in the reply: not for the new peer
        self.sessions[session] = None
        session.room = self
        session.state = SessionState.ACTIVE
        return JoinReply(
            epoch=self.epoch,
            seq=self.head_seq,
            missing=missing,
            state_vector=self._replica.doc.get_state(),
            awareness=self.awareness.snapshot(),
            mode=mode,
        )

    def attach(self, session: Session) -> None:
        """Add a session that needs no sync: the server's own (an API call's edit)."""
        self.fanout.flush()
        self.sessions[session] = None
        session.room = self
        session.state = SessionState.ACTIVE

    def needs_log_for(self, resume_seq: int) -> bool:
        """Whether resuming from ``resume_seq`` needs records older than the ring."""
        first = self._recent[0].seq if self._recent else self.head_seq + 1
        return resume_seq < self.head_seq and resume_seq + 1 < first

    def _records_since(self, resume: Resume, state_vector: bytes) -> bytes | None:
        """The records after ``resume.seq`` as one update, or None when they cannot
        bring a peer up to date: some are not at hand, some part ever waited for its
        dependencies here (peers were then sent less than the records hold, and what
        was released later is in earlier records), or the peer's state vector and
        the records together lack structs this document has (its seq was wrong)."""
        if resume.seq > self.head_seq or self._replica.ever_waited:
            return None
        if resume.seq == self.head_seq:
            return EMPTY_UPDATE
        by_seq = {r.seq: r.data for r in resume.fetched}
        by_seq.update((r.seq, r.data) for r in self._recent)
        wanted = range(resume.seq + 1, self.head_seq + 1)
        if any(seq not in by_seq for seq in wanted):
            return None
        updates = [by_seq[seq] for seq in wanted]
        try:
            merged = updates[0] if len(updates) == 1 else crdt.merge(updates)
            held = decode_state_vector(state_vector)
            for client, _start, end in self._replica.check(merged).structs:
                held[client] = max(held.get(client, 0), end)
        except (InvalidUpdate, FormatError):
            return None
        if any(held.get(client, 0) < clock for client, clock in self._replica.state().items()):
            return None
        return merged

    def leave(self, session: Session) -> None:
        """Remove a session and, for everyone else, the awareness states it set."""
        if session not in self.sessions:
            return
        del self.sessions[session]
        session.state = SessionState.CLOSED
        self.awareness.leave(session)

    @property
    def idle(self) -> bool:
        return (
            not self.sessions
            and not self.watchers
            and self.pending_writes == 0
            and self._reading is None
        )

    async def flushed(self) -> None:
        """Wait until every update of this room's peers so far is stored and sent."""
        await self._flushed.wait()

    async def settled(self) -> None:
        """Wait until every update of this room's peers so far is stored and sent and
        no read of the log is under way (the room may be unloaded, if idle)."""
        while True:
            await self._flushed.wait()
            reading = self._reading
            if reading is None:
                return
            await asyncio.wait([reading])  # its outcome is the room's own

    async def close(self) -> None:
        self._drop_shared_answer()
        self.fanout.flush()  # acks waited for (a restore's among them) still run
        self.awareness.close()
        await self._tasks.close()

    # -- document -----------------------------------------------------------------------

    def missing_for(self, state_vector: bytes) -> bytes:
        """What a peer with ``state_vector`` lacks (sync step 2). A large answer is
        shared for a moment with the peers that join with the same state vector
        before the document changes (peers opening a large document together)."""
        shared = self._shared_answer
        if shared is not None and shared[:2] == (self._replica.version, state_vector):
            return shared[2]
        try:
            decode_state_vector(state_vector)  # stricter than Yrs: trailing bytes, ranges
            answer = self._replica.diff(state_vector)
        except (FormatError, InvalidUpdate) as exc:
            raise InvalidUpdate(
                f"the state vector could not be used: {exc}",
                code=ErrorCode.INVALID_STATE_VECTOR,
                doc=self.name,
            ) from None
        if len(answer) >= SHARED_ANSWER_BYTES:
            self._share(state_vector, answer)
        return answer

    def _share(self, state_vector: bytes, answer: bytes) -> None:
        # Each joining peer's copy of a large document is the document's size
        # again (and its encoding costs the event loop ~5 ms a MiB): peers that
        # join together get one. Kept only a moment: an idle document does not
        # hold a copy of itself.
        self._shared_answer = (self._replica.version, state_vector, answer)
        if self._forget_answer is not None:
            self._forget_answer.cancel()
        self._forget_answer = asyncio.get_running_loop().call_later(
            SHARED_ANSWER_S, self._drop_shared_answer
        )

    def _drop_shared_answer(self) -> None:
        self._shared_answer = None
        if self._forget_answer is not None:
            self._forget_answer.cancel()
            self._forget_answer = None

    def encode_state(self) -> bytes:
        """The whole document as one update (what waits for dependencies included)."""
        return self._replica.encode()

    def cut_meter(self) -> CutMeter | None:
        """A meter of what changes made on a copy of the document, with pycrdt
        directly, cost in cuts (None: no budget): make it with the copy's state."""
        return self._replica.cut_meter()

    async def covers(self, update: bytes) -> bool:
        """True when the room holds every struct ``update`` carries and every item
        its deletions refer to (a read-only peer's update: nothing to refuse).
        Checked on a thread when large. Raises InvalidUpdate for bytes the strict
        reader refuses, or past max_update_structs."""
        if len(update) >= OFF_LOOP_CHECK_BYTES:
            ranges = await check_off_loop(update, self.name, self._settings.max_update_structs)
        else:
            ranges = self._replica.check(update, self._settings.max_update_structs)
        return ranges.integrated_in(self._replica.state())

    def submit(
        self,
        session: Session,
        update: bytes,
        on_durable: Callable[[int], None] | None = None,
    ) -> Awaitable[None] | None:
        """Check and apply a peer's update and queue it for the store. Once it is
        stored it is sent to the other peers, and ``on_durable(seq)`` runs, in seq
        order; an update that changes nothing is not stored, and ``on_durable`` runs
        with the seq that covers it. Raises InvalidUpdate, Overloaded or RateLimited;
        the document is then unchanged.

        A large update is checked, and what applying it reads is prepared, on a
        thread: then this returns an awaitable, done once it is applied (or raising
        as above), and its sender must send nothing more before (a socket is not
        read meanwhile), so that a peer's updates still apply in order."""
        if len(update) >= OFF_LOOP_CHECK_BYTES:
            return self._submit_large(session, update, on_durable)
        self._apply(session, update, on_durable)
        return None

    async def _submit_large(
        self, session: Session, update: bytes, on_durable: Callable[[int], None] | None
    ) -> None:
        ranges = await check_off_loop(update, self.name, self._settings.max_update_structs)
        if session.state is not SessionState.ACTIVE:
            return  # its peer left meanwhile: it sends it again if it comes back
        prepared = await self._prepare(update, ranges)
        if session.state is SessionState.ACTIVE:
            self._apply(session, update, on_durable, ranges, prepared)

    async def _prepare(self, update: bytes, ranges: UpdateRanges) -> Prepared | None:
        """Make on a thread what applying ``update`` reads of the document before
        changing it (Replica.prepare): cutting a large update, say one whose items
        wait for one another, costs the event loop too much. Done again (a few times
        at most, then _apply does it) if the document changed meanwhile."""
        loop = asyncio.get_running_loop()
        prepared = None
        for _ in range(PREPARE_ATTEMPTS):
            prepared = await loop.run_in_executor(None, self._replica.prepare(update, ranges))
            if prepared is None or prepared.version == self._replica.version:  # current
                break
        return prepared

    def _apply(
        self,
        session: Session,
        update: bytes,
        on_durable: Callable[[int], None] | None,
        ranges: UpdateRanges | None = None,
        prepared: Prepared | None = None,
    ) -> None:
        """``submit`` on the event loop (``ranges``: the update's check, ``prepared``
        what applying it reads, when made beforehand on a thread)."""
        if not update:
            raise InvalidUpdate("the update is empty", doc=self.name)
        if ranges is None:
            # The one gate (collab.wire.yformat); it stops reading past the count.
            ranges = self._replica.check(update, self._settings.max_update_structs)
        structs = sum(map(len, ranges.groups))  # (deletions are cheap: applied by levels)
        if structs > self._settings.max_update_structs:
            # Applying costs the event loop about 1.5 us a struct: refused before
            # it is applied, so that one update cannot stall every other peer.
            raise InvalidUpdate(
                f"the update carries {structs} structs, more than "
                f"{self._settings.max_update_structs}: send it in smaller parts",
                code=ErrorCode.TOO_LARGE,
                doc=self.name,
            )
        if not self.stored and not self._creating and self._admit_creation is not None:
            state = self._replica.state()
            if not ranges.integrated_in(state) or ranges.deletes:
                self._admit_creation(session)  # may raise: the per-user creation cap
                self._creating = True
        self._writer.admit(len(update), doc=self.name)
        try:
            applied = self._replica.apply(update, ranges, prepared=prepared)
            self.changes += 1
        except DocumentDamaged as exc:
            self._damaged(exc)
            raise
        self.pending_writes += 1
        self._flushed.clear()
        session.write_submitted()
        if applied is None:
            submission = Submission(self.name, self.epoch, None, self, session, on_durable)
            self._writer.submit(submission)
            return
        new = NewUpdate(
            self.name,
            applied.stored,
            self._clock(),
            session.origin.author,
            epoch=self.epoch,
            create=not self.stored,
        )
        self._in_flight[new.data] += 1
        self._writer.submit(
            Submission(self.name, self.epoch, new, self, session, on_durable, applied.effect)
        )

    # -- what the writer reports (collab.core.writer.WriteReport) ---------------------------

    def committed(self, submission: Submission, record: UpdateRecord | None) -> None:
        if record is None:
            # A replay: everything queued before it is stored. It is acknowledged
            # once what is known to be stored has been sent, with the seq covering it.
            target = self._known_seq

            def acknowledge() -> None:
                self._acknowledged(submission, self.head_seq)

            if self.head_seq >= target:
                acknowledge()
            else:
                self._waiting_acks.append((target, acknowledge))
            return
        if not self.stored and record.epoch is not None and record.epoch != self.epoch:
            self._adopt(record.epoch)
        self.stored = True
        self._landed(record.data)
        self._offer(_Delivery(record, submission))

    def dropped(self, submission: Submission) -> None:
        # Never stored (the document was deleted or replaced): not acknowledged;
        # the peer sends it again after it resubscribes.
        self.pending_writes -= 1
        if self.pending_writes == 0:
            self._flushed.set()
        if submission.session is not None:
            submission.session.write_durable()
        if submission.update is not None:
            self._landed(submission.update.data)
            self._drain()

    def _landed(self, data: bytes) -> None:
        count = self._in_flight[data] - 1
        if count > 0:
            self._in_flight[data] = count
        else:
            self._in_flight.pop(data, None)

    def _damaged(self, exc: CollabError) -> None:
        # The doc may hold part of an update that will never be logged: it is no
        # longer the stored document. Drop it; it reloads from the store.
        self.damaged = True
        log.error("%r: %s; reloading it from the store", self.name, exc.message)
        self._on_damaged(self, exc)

    # -- committed records, in seq order ---------------------------------------------------

    def receive(self, record: UpdateRecord) -> None:
        """A record from the store's feed. This instance's own come through the
        writer, with their senders, and are left out here."""
        if record.epoch is not None and record.epoch != self.epoch:
            # Of a deleted generation of this document, or, while this room has not
            # stored its document yet, of the one another instance just created:
            # the store says which (a lagging feed may still carry a deleted one's).
            if not self.stored and record.epoch not in self._epochs_checked:
                self._epochs_checked.add(record.epoch)
                if not self._tasks.closed:
                    self._tasks.spawn(
                        self._adopt_if_stored(record.epoch), name=f"epoch of {self.name}"
                    )
            return
        if record.author.instance != self._instance:
            self._offer(_Delivery(record))

    async def _adopt_if_stored(self, epoch: str) -> None:
        """Another instance's record of an epoch this room does not know, while it has
        not stored its document: if that is the document's stored epoch now, the
        document was created elsewhere, and this room is that one's (it reads the
        log for what it lacks, this record included)."""
        backoff = Backoff()
        while True:
            try:
                stored = await self._stored_epoch(self.name)
                break
            except StoreError as exc:
                log.warning("reading the epoch of %r failed, retrying: %s", self.name, exc)
                await backoff.wait()
        if stored == epoch and not self.stored:
            self._adopt(epoch)
            self.catch_up()

    def _adopt(self, epoch: str) -> None:
        """The document this room had not stored yet was created by another writer
        (another instance's first write): the room is that document's from now on.
        It reads what it lacks of it from the log, as after any gap."""
        log.info("%r: created elsewhere meanwhile, epoch %s is this room's now", self.name, epoch)
        provisional, self.epoch = self.epoch, epoch
        self.stored = True
        if self._on_adopt is not None:
            self._on_adopt(self, provisional)

    @property
    def known_seq(self) -> int:
        """The highest seq this room knows to be committed."""
        return self._known_seq

    def catch_up(self) -> None:
        """Read the log after ``head_seq`` to its end: after a load (commits while it
        loaded) and after the feed was interrupted."""
        self._read_log(until=None)

    def _offer(self, delivery: _Delivery) -> None:
        seq = delivery.record.seq
        if seq <= self.head_seq:
            # Sent on already, read from the log before its writer reported it.
            if delivery.submission is not None:
                self._acknowledged(delivery.submission, seq)
            return
        self._known_seq = max(self._known_seq, seq)
        held = self._ahead.get(seq)
        if held is None or (held.submission is None and delivery.submission is not None):
            self._ahead[seq] = delivery
        self._drain()

    def _drain(self) -> None:
        while (delivery := self._ahead.get(self.head_seq + 1)) is not None:
            if (
                delivery.submission is None
                and delivery.record.author.instance == self._instance
                and delivery.record.data in self._in_flight
            ):
                break  # this room's own, read before the writer reported it: wait for that
            del self._ahead[self.head_seq + 1]
            self.head_seq += 1
            self._deliver(delivery)
        if self._waiting_acks:
            ready = [ack for seq, ack in self._waiting_acks if seq <= self.head_seq]
            self._waiting_acks = [(s, a) for s, a in self._waiting_acks if s > self.head_seq]
            for acknowledge in ready:
                acknowledge()
        if self._ahead and min(self._ahead) > self.head_seq + 1:  # a gap: read it
            self._read_log(until=min(self._ahead) - 1)

    def _deliver(self, delivery: _Delivery) -> None:
        record, submission = delivery.record, delivery.submission
        if submission is not None:
            effect = submission.effect
        else:
            # Another instance's (or read from the log): integrate it here too.
            effect = EMPTY_UPDATE
            try:
                applied = self._replica.apply(record.data, bounded=False)
                self.changes += 1
            except DocumentDamaged as exc:
                self._damaged(exc)
                return
            except InvalidUpdate as exc:
                log.error("%r: stored update %d cannot be applied: %s", self.name, record.seq, exc)
            else:
                if applied is not None:
                    effect = applied.effect
        self._remember(record)
        # Peers get what was integrated, so they hold what this document holds; an
        # update that only waits for its dependencies is sent on when they arrive.
        self.fanout.frame(
            lambda codec: codec.update_frame(self.name, record.seq, effect),
            exclude=submission.session if submission is not None else None,
            is_update=True,
        )
        for watch in list(self.watchers):
            watch(record)
        if submission is not None:
            self._metrics.ack_seconds.observe(max(0.0, self._clock() - record.time_s))
            self._acknowledged(submission, record.seq)

    def _remember(self, record: UpdateRecord) -> None:
        """Keep the latest records, bounded in number and bytes, for resumes."""
        self._recent.append(record)
        self._recent_bytes += len(record.data)
        s = self._settings
        while self._recent and (
            len(self._recent) > s.resume_ring_updates or self._recent_bytes > s.resume_ring_bytes
        ):
            self._recent_bytes -= len(self._recent.popleft().data)

    def _acknowledged(self, submission: Submission, seq: int) -> None:
        """Queue the ack of a peer's update behind the frames queued before it (the
        peer must see every lower seq first)."""
        session = submission.session
        assert session is not None  # a room's submissions have their sender

        def acknowledge() -> None:
            self._acknowledge_now(session, submission.on_durable, seq)

        self.fanout.ack(session, acknowledge)

    def _acknowledge_now(
        self, session: Session, on_durable: Callable[[int], None] | None, seq: int
    ) -> None:
        self.pending_writes -= 1
        if self.pending_writes == 0:
            self._flushed.set()
        session.write_durable()
        if on_durable is not None:
            try:
                on_durable(seq)
            except Exception:
                log.exception("acknowledging seq %d of %r failed", seq, self.name)

    def _read_log(self, *, until: int | None) -> None:
        """Read missing records from the log: up to ``until``, or to its end. One
        read at a time; a catch-up asked for meanwhile runs after it."""
        if self._reading is not None:
            if until is None:
                self._read_again = True
            return
        if not self._tasks.closed:
            self._reading = self._tasks.spawn(self._read(until), name=f"read log {self.name}")

    async def _read(self, until: int | None) -> None:
        backoff = Backoff()
        try:
            while True:
                try:
                    records = await self._fetch_log(self.name, self.head_seq, until)
                except StoreError as exc:
                    log.warning("reading the log of %r failed, retrying: %s", self.name, exc)
                else:
                    for record in records:
                        self._offer(_Delivery(record))
                    if len(records) == LOG_PAGE:
                        continue  # more to read
                    if until is None or self.head_seq >= until:
                        return
                    # Committed (a later seq exists) but not visible yet, as with a
                    # store's lagging replica: try again shortly.
                await backoff.wait()
        finally:
            self._reading = None
            if not self._tasks.closed:
                if self._ahead and min(self._ahead) > self.head_seq + 1:
                    self._read_log(until=min(self._ahead) - 1)
                elif self._read_again:
                    self._read_again = False
                    self._read_log(until=None)

    def __repr__(self) -> str:
        return f"<Room {self.name!r} seq={self.head_seq} sessions={len(self.sessions)}>"
