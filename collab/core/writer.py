"""Group-commit writer: persistence off the message path.

Rooms check and apply a peer's update at once and hand it to the writer as a
:class:`Submission`. One task drains the queue in batches (everything queued while
the previous batch was being committed goes into the next one), commits each batch
in one store transaction, where the store gives every update its seq, and then
reports each submission committed, with its stored record, to its
:class:`WriteReport` (its room), which broadcasts it in seq order and acknowledges
it. A failed write keeps its batch queued and is retried with backoff,
so nothing is acknowledged that is not stored and nothing queued is dropped.

The queue is bounded in bytes (``write_queue_bytes``). Rooms ask :meth:`Writer.admit`
before they apply an update: past the bound, or while the store is failing, the
update is refused (``Overloaded``) before anything changes, so a store that stops
writing (a full disk) costs no memory and loses nothing acknowledged. Below that,
a queue more than half full slows the writers down instead: a connection stops
reading its socket until the queue drains (:meth:`Writer.backpressure`).

Snapshots are written by a second task, after the updates they cover are durable,
by one instance at a time (a lease in the store), from the store's log, so they
never miss an update committed by another instance.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from itertools import islice
from typing import Protocol

from collab import memory
from collab.config import Settings
from collab.core.history import Sources, gather_sources, rebuild
from collab.core.session import Session
from collab.core.snapshots import EMPTY_STATE_VECTOR, Cadence, Encoded, encode
from collab.core.thinning import snapshots_to_drop
from collab.errors import DocumentChanged, Overloaded, SeqConflict, StoreError
from collab.metrics import Metrics
from collab.store import (
    DocumentHead,
    NewUpdate,
    SnapshotRecord,
    Store,
    UpdateRecord,
)
from collab.tasks import TaskGroup

log = logging.getLogger("collab.store")

RETRY_FIRST_S = 0.05
MAX_IMMEDIATE_RETRIES = 10  # lost seq races retried at once before backing off


class WriteReport(Protocol):
    """What the writer tells whoever queued a submission (a room), in queue order."""

    def committed(self, submission: Submission, record: UpdateRecord | None) -> None:
        """Stored, as ``record`` (None for a submission with nothing to store: every
        entry queued before it is stored)."""

    def dropped(self, submission: Submission) -> None:
        """Not stored, and not retried: the document (that ``epoch`` of it) is gone."""


@dataclass(slots=True, eq=False)
class Submission:
    """One entry of the queue: an update of a peer on its way to the store, and what
    to do once it is durable. The writer reads ``doc``, ``epoch`` and ``update``
    and reports to ``report``; the rest is the reporter's."""

    doc: str
    epoch: str | None  # the generation it was made for (None: no check)
    update: NewUpdate | None  # None: it changed nothing (a replay): nothing to store
    report: WriteReport
    session: Session | None = None  # its sender
    on_durable: Callable[[int], None] | None = None  # told the seq that covers it
    effect: bytes = b""  # what applying it integrated: what the other peers are sent


class Writer:
    def __init__(self, store: Store, settings: Settings, metrics: Metrics | None = None) -> None:
        self._store = store
        self._settings = settings
        self._metrics = metrics or Metrics()
        self._queue: deque[Submission] = deque()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._drained = asyncio.Event()  # the queue is at most half full
        self._drained.set()
        # Per document, the seq to snapshot from the log, or a snapshot made
        # already (by a load that replayed a long log) to be stored.
        self._snapshots_due: dict[str, int | SnapshotRecord] = {}
        self._snapshotting: set[str] = set()
        self._snapshot_wakeup = asyncio.Event()
        self._snapshots_idle = asyncio.Event()
        self._snapshots_idle.set()
        self._tasks = TaskGroup(log)
        self._stopping = False
        self._queued_bytes = 0
        self.failure: Exception | None = None  # the store error of the current episode
        self._failing_since = 0.0
        self.batches_committed = 0
        # Told (doc, epoch) when a document's queued updates were dropped because
        # that generation of it is gone.
        self.on_document_changed: list[Callable[[str, str], None]] = []

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    def start(self) -> None:
        self._tasks.spawn(self._commit_loop(), name="writer-commit")
        self._tasks.spawn(self._snapshot_loop(), name="writer-snapshots")

    def admit(self, size: int, *, doc: str | None = None) -> None:
        """Raise Overloaded unless an update of ``size`` bytes may be queued now."""
        if self._stopping:
            raise Overloaded("the server is shutting down; send the update again later", doc=doc)
        if self.failure is not None:
            raise Overloaded(
                "the store is failing; the update was not applied, send it again later",
                doc=doc,
            )
        limit = self._settings.write_queue_bytes
        if self._queued_bytes and self._queued_bytes + size > limit:
            raise Overloaded(
                "the write queue is full; the update was not applied, send it again later",
                doc=doc,
            )

    def submit(self, entry: Submission) -> None:
        """Queue an entry; call :meth:`admit` first. Never raises."""
        self._queue.append(entry)
        if entry.update is not None:
            self._queued_bytes += len(entry.update.data)
            if self._queued_bytes > self._pause_bytes:
                self._drained.clear()
        self._idle.clear()
        self._wakeup.set()

    @property
    def _pause_bytes(self) -> int:
        return self._settings.write_queue_bytes // 2

    def backpressure(self) -> Awaitable[None] | None:
        """While the queue is more than half full, an awaitable that is done once it
        is not: a connection awaits it before reading its next message. None when
        there is no need to wait (and while the store fails: updates are refused
        then, and reading on is how the peers hear of it)."""
        if self._drained.is_set() or self.failure is not None:
            return None
        return self._drained.wait()

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until everything queued is stored and acknowledged; False when the
        time ran out first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        """Flush what is queued and write the snapshots that are due, within the
        shutdown timeout; then stop."""
        self._stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.shutdown_flush_timeout_s
        try:
            await asyncio.wait_for(self._idle.wait(), deadline - loop.time())
            await asyncio.wait_for(self._snapshots_idle.wait(), max(0.0, deadline - loop.time()))
        except TimeoutError:
            if self._queue:
                log.error(
                    "shutdown: %d updates could not be stored and were not acknowledged",
                    len(self._queue),
                )
            else:
                log.warning("shutdown: snapshots left unwritten; the next load replays more log")
        await self._tasks.close()

    # -- commits ----------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        first_delay = min(RETRY_FIRST_S, self._settings.write_retry_max_s)
        delay = first_delay
        races = 0
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch = list(islice(self._queue, self._settings.write_batch_max_updates))
                updates = [e.update for e in batch if e.update is not None]
                started = time.monotonic()
                try:
                    result = await self._store.append(updates) if updates else None
                    if result is not None and len(result.records) != len(updates):
                        raise StoreError(
                            f"the store returned {len(result.records)} records "
                            f"for {len(updates)} updates"
                        )
                except DocumentChanged as exc:
                    if self._drop(exc.stale):
                        continue  # the rest of the batch is tried again at once
                    self._failed(exc, delay)  # nothing to drop: a store fault
                except SeqConflict as exc:
                    # Another instance took the seq: the store renumbers the batch
                    # on the next try, which is at once. Not a failing store, unless
                    # it keeps happening.
                    races += 1
                    if races <= MAX_IMMEDIATE_RETRIES:
                        log.debug("lost a seq race, retrying: %s", exc)
                        continue
                    self._failed(exc, delay)
                except Exception as exc:
                    self._failed(exc, delay)
                else:
                    if updates:
                        self._metrics.commit_seconds.observe(time.monotonic() - started)
                        self._metrics.commit_batch_updates.observe(len(updates))
                    delay = first_delay
                    races = 0
                    self._recovered()
                    self._complete(batch, result.records if result else [])
                    if result is not None:
                        self._consider_snapshots(result.heads)
                    continue
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._settings.write_retry_max_s)
            self._idle.set()

    def _failed(self, exc: Exception, delay: float) -> None:
        """A commit failed: logged once per episode, with the store's own error."""
        if self.failure is None:
            self._failing_since = time.monotonic()
            log.error(
                "store writes are failing (%d updates, %d bytes queued; new updates are "
                "refused until it recovers; retrying every %.2f-%.1fs): %s",
                len(self._queue),
                self._queued_bytes,
                delay,
                self._settings.write_retry_max_s,
                exc,
                exc_info=None if isinstance(exc, StoreError) else exc,
            )
        else:
            log.debug("store write failed again, retrying in %.2fs: %s", delay, exc)
        self.failure = exc
        self._drained.set()  # paused connections read on, and hear the refusals

    def _recovered(self) -> None:
        if self.failure is not None:
            log.warning(
                "store writes recovered after %.1fs", time.monotonic() - self._failing_since
            )
            self.failure = None

    def _drop(self, stale: dict[str, str]) -> int:
        """Take the entries made for documents that are gone out of the queue;
        returns how many."""
        kept: deque[Submission] = deque()
        dropped: list[Submission] = []
        for entry in self._queue:
            if entry.epoch is not None and stale.get(entry.doc) == entry.epoch:
                dropped.append(entry)
                if entry.update is not None:
                    self._queued_bytes -= len(entry.update.data)
            else:
                kept.append(entry)
        self._queue = kept
        if self._queued_bytes <= self._pause_bytes:
            self._drained.set()
        log.warning(
            "%d queued updates dropped: their documents were deleted or replaced (%s)",
            sum(1 for e in dropped if e.update is not None),
            ", ".join(sorted(stale)),
        )
        for entry in dropped:
            try:
                entry.report.dropped(entry)
            except Exception:
                log.exception("reporting a dropped update of %s failed", entry.doc)
        for doc, epoch in stale.items():
            for listener in self.on_document_changed:
                listener(doc, epoch)
        return len(dropped)

    def _complete(self, batch: list[Submission], records: list[UpdateRecord]) -> None:
        self.batches_committed += 1
        stored = iter(records)
        for entry in batch:
            self._queue.popleft()
            if entry.update is not None:
                self._queued_bytes -= len(entry.update.data)
        if self._queued_bytes <= self._pause_bytes:
            self._drained.set()
        for entry in batch:
            record = next(stored) if entry.update is not None else None
            try:
                entry.report.committed(entry, record)
            except Exception:
                log.exception("reporting a committed update of %s failed", entry.doc)

    # -- snapshots ----------------------------------------------------------------------

    def _consider_snapshots(self, heads: dict[str, DocumentHead]) -> None:
        cadence = Cadence.of(self._settings)
        for doc, head in heads.items():
            due = cadence.due(head.head_seq - head.snapshot_seq, head.bytes_since_snapshot)
            if due and doc not in self._snapshotting:
                self._snapshots_due[doc] = head.head_seq
                self._snapshots_idle.clear()
                self._snapshot_wakeup.set()

    def offer_snapshot(self, snapshot: SnapshotRecord) -> None:
        """Store a snapshot made elsewhere (a load that replayed a long log made it
        from the replica it built: a document imported by an older server, or
        written while snapshots failed, is not replayed whole at every load),
        unless one of that document is due or being written already."""
        if self._stopping or snapshot.doc in self._snapshotting:
            return
        if snapshot.doc not in self._snapshots_due:
            self._snapshots_due[snapshot.doc] = snapshot
            self._snapshots_idle.clear()
            self._snapshot_wakeup.set()

    async def _snapshot_loop(self) -> None:
        while True:
            await self._snapshot_wakeup.wait()
            self._snapshot_wakeup.clear()
            while self._snapshots_due:
                doc, due = self._snapshots_due.popitem()
                seq = due if isinstance(due, int) else due.seq
                self._snapshotting.add(doc)
                try:
                    if isinstance(due, int):
                        await self.write_snapshot(doc, due)
                    else:
                        await self._store_snapshot(due)
                except Exception as exc:
                    # A missed snapshot costs load time, not data: the log has it all.
                    log.warning("snapshot of %r at seq %d failed: %s", doc, seq, exc)
                finally:
                    self._snapshotting.discard(doc)
            self._snapshots_idle.set()

    async def _store_snapshot(self, snapshot: SnapshotRecord) -> None:
        """Store a snapshot made elsewhere (see :meth:`offer_snapshot`), as
        write_snapshot stores its own: under the lease, thinned after. (No
        checkpoint: the next one written starts a new chain from the empty
        document, as after any gap.)"""
        s = self._settings
        if not await self._store.lease_snapshot(snapshot.doc, s.instance_id, s.snapshot_lease_s):
            return
        await self._store.save_snapshot(snapshot)
        log.info(
            "snapshot of %r at seq %d (%d bytes), made by its load",
            snapshot.doc,
            snapshot.seq,
            len(snapshot.data),
        )
        await self._thin(snapshot.doc)

    async def write_snapshot(self, doc: str, seq: int) -> bool:
        """Snapshot ``doc`` at ``seq`` from the store's log, unless another instance
        holds the document's snapshot lease. True when written."""
        s = self._settings
        if not await self._store.lease_snapshot(doc, s.instance_id, s.snapshot_lease_s):
            log.debug("snapshot of %r left to the instance that holds its lease", doc)
            return False
        # Its epoch before reading: if it is deleted meanwhile, the store keeps
        # nothing of what was read.
        info = await self._store.get_document(doc)
        if info is None:
            return False
        sources = await gather_sources(self._store, doc, seq)
        at = sources.seq
        base = await self._checkpoint_base(doc, at)
        loop = asyncio.get_running_loop()
        # Rebuilt and encoded on a thread: both are passes over the whole document.
        encoded = await loop.run_in_executor(
            None, self._rebuild_and_encode, sources, doc, at, info.epoch, base
        )
        assert encoded.snapshot is not None and encoded.checkpoint is not None
        await self._store.save_snapshot(encoded.snapshot)
        size = len(encoded.snapshot.data)
        log.debug("snapshot of %r at seq %d (%d bytes)", doc, at, size)
        await self._store.save_checkpoint(encoded.checkpoint)
        del encoded, sources
        await self._thin(doc)
        if size >= memory.TRIM_AFTER_BYTES and s.memory_trim_s > 0:
            await loop.run_in_executor(None, memory.trim)
        return True

    @staticmethod
    def _rebuild_and_encode(
        sources: Sources, doc: str, at: int, epoch: str, base: tuple[int, bytes]
    ) -> Encoded:
        replica = rebuild(sources.snapshot, sources.updates, sources.chain)
        return encode(replica, doc, at, epoch, checkpoint_base=base)

    async def _checkpoint_base(self, doc: str, at: int) -> tuple[int, bytes]:
        """What the checkpoint at ``at`` builds on: the previous checkpoint, so that
        versions between thinned-out snapshots are rebuilt from a few checkpoints,
        not thousands of log entries. Without a previous one near, the checkpoint
        holds everything."""
        window = Cadence.of(self._settings).checkpoint_window
        recent = await self._store.checkpoints(doc, after_seq=max(0, at - window), until_seq=at - 1)
        return (recent[-1].seq, recent[-1].state_vector) if recent else (0, EMPTY_STATE_VECTOR)

    async def _thin(self, doc: str) -> None:
        keep = self._settings.snapshot_keep_recent
        drop = snapshots_to_drop(await self._store.snapshot_seqs(doc), keep)
        await self._store.delete_snapshots(doc, drop)
