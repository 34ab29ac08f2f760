"""Snapshots: what one is made of, when one is due, which are kept, and the task
that writes them (:class:`Snapshotter`). One place for live documents (the writer
feeds it the heads of what it commits), imports and loads, so that a document's
snapshots and checkpoints do not depend on how it got its history.

Snapshots are written after the updates they cover are durable, by one instance at
a time per document (a lease in the store), from the store's log, so they never
miss an update committed by another instance.

A snapshot at ``seq`` is the replica's state after update ``seq`` (pycrdt's
encoding of what was integrated, and what waits); its checkpoint is what changed
since the previous checkpoint (collab.core.history rebuilds any version from a
snapshot and a chain of them). Encoding is CPU-bound, a pass over the whole
document: :func:`encode` runs in an executor, never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from collab import memory
from collab.config import Settings
from collab.core import authors
from collab.core.history import Sources, gather_sources, rebuild
from collab.core.thinning import snapshots_to_drop
from collab.store import Checkpoint, DocumentHead, SnapshotRecord, Store, UpdateRecord
from collab.tasks import TaskGroup
from collab.wire import yformat
from collab.wire.replica import Replica

log = logging.getLogger("collab.store")

EMPTY_STATE_VECTOR = b"\x00"


@dataclass(frozen=True, slots=True)
class Cadence:
    """When a snapshot is due (``snapshot_every_updates`` updates or
    ``snapshot_every_bytes`` update bytes since the last one) and how many of
    the newest are kept whole (``snapshot_keep_recent``)."""

    every_updates: int
    every_bytes: int
    keep_recent: int

    @classmethod
    def of(cls, settings: Settings) -> Cadence:
        return cls(
            settings.snapshot_every_updates,
            settings.snapshot_every_bytes,
            settings.snapshot_keep_recent,
        )

    def due(self, updates_since: int, bytes_since: int) -> bool:
        return updates_since >= self.every_updates or bytes_since >= self.every_bytes

    @property
    def checkpoint_window(self) -> int:
        """How far back (in seqs) a checkpoint looks for the one it builds on."""
        return 4 * self.every_updates

    def points(self, sizes: Iterable[int], after_seq: int = 0) -> Iterator[int]:
        """The seqs at which snapshots fall in a log of updates of ``sizes`` bytes
        (seqs ``after_seq + 1, ...``), one the moment each is due."""
        updates = size = 0
        for seq, length in enumerate(sizes, after_seq + 1):
            updates += 1
            size += length
            if self.due(updates, size):
                yield seq
                updates = size = 0

    def kept(self, points: Iterable[int], existing: Iterable[int] = ()) -> set[int]:
        """Which of the snapshots at ``points`` are still kept after each was
        written in turn and the document's snapshots thinned (as the writer
        thins after every snapshot): the only ones worth writing when all the
        points are known beforehand (an import)."""
        held = set(existing)
        for seq in points:
            held.add(seq)
            held.difference_update(snapshots_to_drop(sorted(held), self.keep_recent))
        return held


@dataclass(frozen=True, slots=True)
class Encoded:
    """A snapshot and its checkpoint, encoded from one state of a replica; either
    may be left out."""

    snapshot: SnapshotRecord | None
    checkpoint: Checkpoint | None


def encode(
    replica: Replica,
    doc: str,
    seq: int,
    epoch: str | None,
    *,
    snapshot: bool = True,
    checkpoint_base: tuple[int, bytes] | None = None,
    authors: bytes | None = None,
) -> Encoded:
    """The snapshot at ``seq`` of ``replica`` (which holds the state after update
    ``seq``), and with ``checkpoint_base`` ``(base_seq, its state vector)`` the
    checkpoint from there (``(0, EMPTY_STATE_VECTOR)``: everything); ``authors``:
    the authors index at ``seq`` kept with the snapshot. CPU-bound:
    run it in an executor."""
    waiting = replica.waiting or b""
    record = None
    if snapshot:
        record = SnapshotRecord(
            doc, seq, replica.doc.get_update(), time.time(), waiting, epoch, authors=authors
        )
    made = None
    if checkpoint_base is not None:
        base_seq, base_vector = checkpoint_base
        if base_vector == EMPTY_STATE_VECTOR and record is not None:
            data = record.data  # the same bytes: not a second copy of the document
        else:
            data = replica.doc.get_update(base_vector)
        made = Checkpoint(doc, seq, base_seq, data, waiting, replica.doc.get_state(), epoch)
    return Encoded(record, made)


class Snapshotter:
    """Writes the snapshots that fall due, one document at a time, in the background:
    :meth:`committed` is told where each document's log stands after a commit, and
    :meth:`offer` takes a snapshot made elsewhere (by a load that replayed a long
    log). A failed snapshot costs load time, not data: the log holds it all."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self._store = store
        self._settings = settings
        self._cadence = Cadence.of(settings)
        # Per document, the seq to snapshot from the log, or a snapshot made already.
        self._due: dict[str, int | SnapshotRecord] = {}
        self._writing: set[str] = set()
        # Per document being written, the last head its commits reported meanwhile:
        # a snapshot may fall due again before the one under way is stored.
        self._behind: dict[str, int] = {}
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False
        self._tasks = TaskGroup(log)

    def start(self) -> None:
        self._tasks.spawn(self._loop(), name="snapshots")

    async def stop(self, timeout_s: float) -> None:
        """Write the snapshots that are due, within ``timeout_s``; then stop."""
        self._stopping = True
        try:
            await asyncio.wait_for(self._idle.wait(), max(0.0, timeout_s))
        except TimeoutError:
            log.warning("shutdown: snapshots left unwritten; the next load replays more log")
        await self._tasks.close()

    def committed(self, heads: Mapping[str, DocumentHead]) -> None:
        """Where documents' logs stand after a commit: snapshot those that are due."""
        for doc, head in heads.items():
            if doc in self._writing:
                self._behind[doc] = max(head.head_seq, self._behind.get(doc, 0))
                continue
            if self._cadence.due(head.head_seq - head.snapshot_seq, head.bytes_since_snapshot):
                self._due[doc] = head.head_seq
                self._idle.clear()
                self._wakeup.set()

    def offer(self, snapshot: SnapshotRecord) -> None:
        """Store a snapshot made elsewhere (a load that replayed a long log made it
        from the replica it built: a document imported by an older server, or
        written while snapshots failed, is not replayed whole at every load),
        unless one of that document is due or being written already."""
        if self._stopping or snapshot.doc in self._writing or snapshot.doc in self._due:
            return
        self._due[snapshot.doc] = snapshot
        self._idle.clear()
        self._wakeup.set()

    async def _loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._due:
                doc, due = self._due.popitem()
                seq = due if isinstance(due, int) else due.seq
                self._writing.add(doc)
                try:
                    if isinstance(due, int):
                        await self.write(doc, due)
                    else:
                        await self._store_made(due)
                except Exception as exc:
                    log.warning("snapshot of %r at seq %d failed: %s", doc, seq, exc)
                finally:
                    self._writing.discard(doc)
                    self._due_again(doc, seq)
            self._idle.set()

    def _due_again(self, doc: str, written: int) -> None:
        """After a snapshot at ``written``: whether the commits made meanwhile put the
        document due again (by their count; what they weigh is known at its next
        commit). Without this, a document whose writes stopped during a snapshot
        would wait for its next write for the next snapshot."""
        head = self._behind.pop(doc, None)
        if head is not None and doc not in self._due and self._cadence.due(head - written, 0):
            self._due[doc] = head

    async def _store_made(self, snapshot: SnapshotRecord) -> None:
        """Store a snapshot made elsewhere (see :meth:`offer`) as :meth:`write`
        stores its own: under the lease, thinned after. (No checkpoint: the next one
        written starts a new chain from the empty document, as after any gap.)"""
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

    async def write(self, doc: str, seq: int) -> bool:
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
        # Who inserted what, kept with the snapshot: the log it is made of may go.
        authors_base, authors_log = await authors.index_sources(
            self._store, doc, at, nearest=sources.nearest, known=sources.updates
        )
        loop = asyncio.get_running_loop()
        # Rebuilt and encoded on a thread: both are passes over the whole document.
        encoded = await loop.run_in_executor(
            None,
            _rebuild_and_encode,
            sources,
            doc,
            at,
            info.epoch,
            base,
            (authors_base, authors_log),
        )
        assert encoded.snapshot is not None and encoded.checkpoint is not None
        await self._store.save_snapshot(encoded.snapshot)
        size = len(encoded.snapshot.data)
        log.debug("snapshot of %r at seq %d (%d bytes)", doc, at, size)
        await self._store.save_checkpoint(encoded.checkpoint)
        del encoded, sources, authors_log
        await self._thin(doc)
        if size >= memory.TRIM_AFTER_BYTES and s.memory_trim_s > 0:
            await loop.run_in_executor(None, memory.trim)
        return True

    async def _checkpoint_base(self, doc: str, at: int) -> tuple[int, bytes]:
        """What the checkpoint at ``at`` builds on: the previous checkpoint, so that
        versions between thinned-out snapshots are rebuilt from a few checkpoints,
        not thousands of log entries. Without a previous one near, the checkpoint
        holds everything."""
        window = self._cadence.checkpoint_window
        recent = await self._store.checkpoints(doc, after_seq=max(0, at - window), until_seq=at - 1)
        return (recent[-1].seq, recent[-1].state_vector) if recent else (0, EMPTY_STATE_VECTOR)

    async def _thin(self, doc: str) -> None:
        named = [n.seq for n in await self._store.version_names(doc)]
        drop = snapshots_to_drop(
            await self._store.snapshot_seqs(doc), self._cadence.keep_recent, named
        )
        await self._store.delete_snapshots(doc, drop)


def _rebuild_and_encode(
    sources: Sources,
    doc: str,
    at: int,
    epoch: str,
    base: tuple[int, bytes],
    authors_from: tuple[bytes | None, list[UpdateRecord]],
) -> Encoded:
    checks = yformat.CheckedUpdates()  # both passes read the same log
    replica = rebuild(sources.snapshot, sources.updates, sources.chain, checks=checks)
    index = authors.index_at(*authors_from, checks=checks)
    return encode(replica, doc, at, epoch, checkpoint_base=base, authors=index)
