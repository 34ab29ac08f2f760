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

After each commit the writer tells ``on_heads`` where each document's log stands
(collab.core.snapshots writes the snapshots that fall due).
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

from collab.backoff import RETRY_FIRST_S, Backoff
from collab.config import Settings
from collab.core.session import Session
from collab.errors import DocumentChanged, Overloaded, SeqConflict, StoreError
from collab.metrics import Metrics
from collab.store import (
    DocumentHead,
    NewUpdate,
    Store,
    UpdateRecord,
)
from collab.tasks import TaskGroup

log = logging.getLogger("collab.store")

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
    def __init__(
        self,
        store: Store,
        settings: Settings,
        metrics: Metrics | None = None,
        *,
        on_heads: Callable[[dict[str, DocumentHead]], None] | None = None,
    ) -> None:
        self._store = store
        self._settings = settings
        self._metrics = metrics or Metrics()
        self._on_heads = on_heads  # where documents' logs stand after each commit
        self._queue: deque[Submission] = deque()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._drained = asyncio.Event()  # the queue is at most half full
        self._drained.set()
        self._tasks = TaskGroup(log)
        self._stopping = False
        self._queued_bytes = 0
        self.failure: Exception | None = None  # the store error of the current episode
        self._failing_since = 0.0
        self.batches_committed = 0
        # Told (doc, epoch) when a document's queued updates were dropped because
        # that generation of it is gone.
        self.on_document_changed: list[Callable[[str, str], None]] = []
        # Told the records of each commit, after the rooms (extensions' observers).
        self.on_commit: list[Callable[[list[UpdateRecord]], None]] = []

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    def start(self) -> None:
        self._tasks.spawn(self._commit_loop(), name="writer-commit")

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

    async def stop(self, timeout_s: float | None = None) -> None:
        """Flush what is queued, within ``timeout_s`` (default: the shutdown flush
        timeout); then stop."""
        self._stopping = True
        if timeout_s is None:
            timeout_s = self._settings.shutdown_flush_timeout_s
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            log.error(
                "shutdown: %d updates could not be stored and were not acknowledged",
                len(self._queue),
            )
        await self._tasks.close()

    # -- commits ----------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        backoff = Backoff(RETRY_FIRST_S, self._settings.write_retry_max_s)
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
                    self._failed(exc, backoff)  # nothing to drop: a store fault
                except SeqConflict as exc:
                    # Another instance took the seq: the store renumbers the batch
                    # on the next try, which is at once. Not a failing store, unless
                    # it keeps happening.
                    races += 1
                    if races <= MAX_IMMEDIATE_RETRIES:
                        log.debug("lost a seq race, retrying: %s", exc)
                        continue
                    self._failed(exc, backoff)
                except Exception as exc:
                    self._failed(exc, backoff)
                else:
                    if updates:
                        self._metrics.commit_seconds.observe(time.monotonic() - started)
                        self._metrics.commit_batch_updates.observe(len(updates))
                    backoff.reset()
                    races = 0
                    self._recovered()
                    self._complete(batch, result.records if result else [])
                    if result is not None and self._on_heads is not None:
                        self._on_heads(result.heads)
                    if result is not None:
                        for listener in self.on_commit:
                            listener(result.records)
                    continue
                await backoff.wait()
            self._idle.set()

    def _failed(self, exc: Exception, backoff: Backoff) -> None:
        """A commit failed: logged once per episode, with the store's own error."""
        if self.failure is None:
            self._failing_since = time.monotonic()
            log.error(
                "store writes are failing (%d updates, %d bytes queued; new updates are "
                "refused until it recovers; retrying every %.2f-%.1fs): %s",
                len(self._queue),
                self._queued_bytes,
                backoff.next_s,
                backoff.max_s,
                exc,
                exc_info=None if isinstance(exc, StoreError) else exc,
            )
        else:
            log.debug("store write failed again, retrying in %.2fs: %s", backoff.next_s, exc)
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
