"""Group-commit writer: persistence off the message path.

Rooms apply and broadcast an update at once and hand the append to the writer.
One task drains the queue in batches (everything queued while the previous batch
was being committed goes into the next one), commits each batch in one store
transaction, and only then runs each entry's ``on_durable`` callback, which sends
the ACK. A failed write keeps its batch queued and is retried with backoff, so
nothing is acknowledged that is not stored and nothing queued is dropped.

The queue is bounded in bytes (``write_queue_bytes``): rooms ask :meth:`Writer.admit`
before they apply an update, and past the bound, or while the store is failing,
the update is refused (``Overloaded``) before anything changes, so a store that
stops writing (a full disk) costs no memory and loses nothing acknowledged.

Snapshots are written by a second task, after the updates they cover are durable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice

from collab.config import Settings
from collab.core.history import state_at
from collab.errors import Overloaded, SeqConflict, StoreError
from collab.store.base import SnapshotRecord, Store, UpdateRecord
from collab.tasks import TaskGroup

log = logging.getLogger("collab.store")

RETRY_FIRST_S = 0.05


@dataclass(slots=True)
class PendingWrite:
    """One entry of the queue. ``record`` None: nothing to store, but
    ``on_durable`` runs only after every earlier entry is durable."""

    doc: str
    record: UpdateRecord | None
    on_durable: Callable[[], None] | None = None
    snapshot_after: bool = False


class Writer:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        on_conflict: Callable[[str, SeqConflict], None],
    ) -> None:
        self._store = store
        self._settings = settings
        self._on_conflict = on_conflict
        self._queue: deque[PendingWrite] = deque()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._snapshots_due: dict[str, int] = {}
        self._snapshot_wakeup = asyncio.Event()
        self._snapshots_idle = asyncio.Event()
        self._snapshots_idle.set()
        self._tasks = TaskGroup(log)
        self._stopping = False
        self._queued_bytes = 0
        self.failure: Exception | None = None  # the store error of the current episode
        self._failing_since = 0.0
        self.batches_committed = 0

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    def admit(self, size: int, *, doc: str | None = None) -> None:
        """Raise Overloaded unless an update of ``size`` bytes may be queued now."""
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

    def start(self) -> None:
        self._tasks.spawn(self._commit_loop(), name="writer-commit")
        self._tasks.spawn(self._snapshot_loop(), name="writer-snapshots")

    def submit(self, entry: PendingWrite) -> None:
        if self._stopping:
            raise StoreError("the writer is shutting down")
        self._queue.append(entry)
        if entry.record is not None:
            self._queued_bytes += len(entry.record.data)
        self._idle.clear()
        self._wakeup.set()

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
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch = list(islice(self._queue, self._settings.write_batch_max_updates))
                records = [e.record for e in batch if e.record is not None]
                try:
                    if records:
                        await self._store.append(records)
                except SeqConflict as exc:
                    if self._drop_conflicting(exc):
                        continue
                    self._failed(exc, delay)
                except Exception as exc:
                    self._failed(exc, delay)
                else:
                    delay = first_delay
                    self._recovered()
                    self._complete(batch)
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

    def _recovered(self) -> None:
        if self.failure is not None:
            log.warning(
                "store writes recovered after %.1fs", time.monotonic() - self._failing_since
            )
            self.failure = None

    def _complete(self, batch: list[PendingWrite]) -> None:
        self.batches_committed += 1
        for entry in batch:
            self._queue.popleft()
            if entry.record is not None:
                self._queued_bytes -= len(entry.record.data)
        for entry in batch:
            if entry.on_durable is not None:
                try:
                    entry.on_durable()
                except Exception:
                    log.exception("on_durable callback failed for %s", entry.doc)
            if entry.snapshot_after and entry.record is not None:
                self._snapshots_due[entry.doc] = entry.record.seq
                self._snapshots_idle.clear()
                self._snapshot_wakeup.set()

    def _drop_conflicting(self, exc: SeqConflict) -> bool:
        """Drop the conflicting document's queued entries; False if it had none."""
        # Another writer owns this document's log: retrying cannot succeed. Its
        # entries were never acknowledged; the room is reloaded from the store.
        doc = exc.doc
        kept = [e for e in self._queue if e.doc != doc]
        if len(kept) == len(self._queue):
            return False
        log.error("store rejected updates for %r: %s", doc, exc)
        self._queue.clear()
        self._queue.extend(kept)
        self._queued_bytes = sum(len(e.record.data) for e in kept if e.record is not None)
        try:
            self._on_conflict(doc, exc)
        except Exception:
            log.exception("handling the conflict on %r failed", doc)
        return True

    # -- snapshots ----------------------------------------------------------------------

    async def _snapshot_loop(self) -> None:
        while True:
            await self._snapshot_wakeup.wait()
            self._snapshot_wakeup.clear()
            while self._snapshots_due:
                doc, seq = self._snapshots_due.popitem()
                try:
                    await self.write_snapshot(doc, seq)
                except Exception as exc:
                    # A missed snapshot costs load time, not data: the log has it all.
                    log.warning("snapshot of %r at seq %d failed: %s", doc, seq, exc)
            self._snapshots_idle.set()

    async def write_snapshot(self, doc: str, seq: int) -> None:
        at, state = await state_at(self._store, doc, seq)
        await self._store.save_snapshot(SnapshotRecord(doc, at, state, time.time()))
        log.debug("snapshot of %r at seq %d (%d bytes)", doc, at, len(state))
