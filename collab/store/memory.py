"""In-memory store: the same contract as the others, gone when the process ends.

Several servers in one process may share one MemoryStore, as several processes
share one SQLite file: its feeds carry each one's commits to the others (tests
use that to run "instances" side by side)."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field

from collab.errors import DocumentChanged, StoreError
from collab.store.base import HeldDocuments, Store, creating, expected_epochs, next_heads
from collab.store.records import (
    AppendResult,
    Author,
    AwarenessChange,
    Checkpoint,
    DeletionRecord,
    DocumentHead,
    DocumentInfo,
    FeedPosition,
    FeedRecord,
    LoadedDocument,
    NewUpdate,
    QuarantinedEntry,
    Repair,
    SnapshotRecord,
    UpdateRecord,
    VersionName,
    WebhookState,
)


@dataclass
class _Document:
    epoch: str
    created_s: float
    updated_s: float
    updates: list[UpdateRecord] = field(default_factory=list)
    snapshots: dict[int, SnapshotRecord] = field(default_factory=dict)
    checkpoints: dict[int, Checkpoint] = field(default_factory=dict)
    quarantine: list[QuarantinedEntry] = field(default_factory=list)
    snapshot_seq: int = 0
    bytes_since_snapshot: int = 0
    lease: tuple[str, float] | None = None  # (instance, until)
    pruned: int = 0  # updates up to this seq were dropped (retention): seq n is at n-1-pruned

    @property
    def head_seq(self) -> int:
        return self.updates[-1].seq if self.updates else self.pruned

    @property
    def head(self) -> DocumentHead:
        return DocumentHead(self.head_seq, self.snapshot_seq, self.bytes_since_snapshot)


class MemoryStore(Store):
    def __init__(self) -> None:
        super().__init__()
        self._docs: dict[str, _Document] = {}
        self._names: dict[str, dict[int, VersionName]] = {}  # doc -> seq -> its name
        self._feed: list[FeedRecord] = []  # every record, in commit order
        self._awareness: dict[tuple[str, int], AwarenessChange] = {}
        self._awareness_feed: list[AwarenessChange] = []
        self._feed_positions: dict[str, FeedPosition] = {}
        self._webhooks: dict[str, WebhookState] = {}
        self._changed = asyncio.Condition()

    def _get_or_create(
        self, name: str, now: float | None = None, epoch: str | None = None
    ) -> _Document:
        document = self._docs.get(name)
        if document is None:
            now = time.time() if now is None else now
            document = self._docs[name] = _Document(epoch or secrets.token_hex(8), now, now)
        return document

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- documents ----------------------------------------------------------------------

    async def load(self, doc: str, *, create: bool = False) -> LoadedDocument:
        if not create and doc not in self._docs:
            return LoadedDocument(doc, secrets.token_hex(8), None, (), stored=False)
        document = self._get_or_create(doc)
        snapshot = await self.latest_snapshot(doc)
        after = snapshot.seq if snapshot else 0
        # seq n lives at index n - 1 - pruned: the log has no gaps.
        updates = tuple(document.updates[max(0, after - document.pruned) :])
        self.stats.log_rows_read += len(updates)
        return LoadedDocument(doc, document.epoch, snapshot, updates)

    async def delete_document(self, doc: str, *, by: Author | None = None) -> bool:
        for key in [key for key in self._awareness if key[0] == doc]:
            del self._awareness[key]
        self._names.pop(doc, None)
        document = self._docs.pop(doc, None)
        if document is None:
            return False
        gone = DeletionRecord(doc, document.epoch, document.head_seq, time.time(), by or Author())
        self._feed.append(gone)
        await self._notify()
        return True

    async def get_document(self, doc: str) -> DocumentInfo | None:
        document = self._docs.get(doc)
        if document is None:
            return None
        return DocumentInfo(
            doc, document.epoch, document.head_seq, document.created_s, document.updated_s
        )

    async def list_documents(
        self, *, prefix: str = "", after: str | None = None, limit: int | None = None
    ) -> list[DocumentInfo]:
        names = [
            name
            for name in sorted(self._docs)
            if name.startswith(prefix) and (after is None or name > after)
        ]
        names = names[:limit]
        self.stats.document_rows_read += len(names)
        return [info for name in names if (info := await self.get_document(name))]

    async def stored_bytes(self, docs: Sequence[str]) -> dict[str, int]:
        return {
            name: sum(len(r.data) for r in document.updates)
            + sum(len(s.data) + len(s.waiting or b"") for s in document.snapshots.values())
            + sum(
                len(c.data) + len(c.waiting) + len(c.state_vector)
                for c in document.checkpoints.values()
            )
            for name in docs
            if (document := self._docs.get(name)) is not None
        }

    async def head_seqs(self, docs: Sequence[str]) -> dict[str, int]:
        return {name: self._docs[name].head_seq for name in docs if name in self._docs}

    # -- the log ------------------------------------------------------------------------

    async def append(self, updates: Sequence[NewUpdate]) -> AppendResult:
        if not updates:
            return AppendResult([], {})
        epochs = expected_epochs(updates)
        # Created by these, or found created meanwhile (by then, by another writer).
        adopted = {
            doc: self._docs[doc].epoch if doc in self._docs else epochs[doc]
            for doc in creating(updates)
        }
        # A first content finds its document created by another writer first.
        seeded = {u.doc: epochs[u.doc] for u in updates if u.first and u.doc in self._docs}
        if seeded:
            raise DocumentChanged(seeded)
        changed = {
            doc: epoch
            for doc, epoch in epochs.items()
            if doc not in adopted and (doc not in self._docs or self._docs[doc].epoch != epoch)
        }
        if changed:
            raise DocumentChanged(changed)
        heads = {
            u.doc: self._docs[u.doc].head if u.doc in self._docs else DocumentHead(0, 0, 0)
            for u in updates
        }
        seqs, after = next_heads(heads, updates)
        records = [
            UpdateRecord(u.doc, seq, u.data, u.time_s, u.author, adopted.get(u.doc, u.epoch))
            for u, seq in zip(updates, seqs, strict=True)
        ]
        for record in records:
            # Created at its first update's time, as the SQLite store does, so that
            # created_s never comes after updated_s.
            document = self._get_or_create(record.doc, record.time_s, record.epoch)
            document.updates.append(record)
            document.updated_s = record.time_s
            document.bytes_since_snapshot += len(record.data)
        self._feed.extend(records)
        self.stats.log_rows_written += len(records)
        self.stats.append_batches += 1
        await self._notify()
        return AppendResult(records, after)

    async def read_updates(
        self,
        doc: str,
        *,
        after_seq: int = 0,
        until_seq: int | None = None,
        limit: int | None = None,
    ) -> list[UpdateRecord]:
        document = self._docs.get(doc)
        if document is None:
            return []
        head = document.head_seq
        end = head if until_seq is None else min(until_seq, head)
        start = max(after_seq, document.pruned)
        if limit is not None:
            end = min(end, start + limit)
        rows = document.updates[start - document.pruned : max(start, end) - document.pruned]
        self.stats.log_rows_read += len(rows)
        return rows

    # -- the feed -----------------------------------------------------------------------

    async def feed_position(self) -> FeedPosition:
        return len(self._feed)

    async def follow(
        self,
        after: FeedPosition,
        *,
        poll_s: float,
        exclude_instance: str | None = None,
        deletions: bool = False,
        documents: HeldDocuments | None = None,
    ) -> AsyncIterator[tuple[FeedPosition, list[FeedRecord]]]:
        position = after
        yield position, []  # open at once
        while True:
            start = position
            async with self._changed:
                await self._changed.wait_for(lambda start=start: len(self._feed) > start)
            records, position = self._feed[start:], len(self._feed)
            if not deletions:
                records = [r for r in records if isinstance(r, UpdateRecord)]
            if exclude_instance is not None:
                records = [r for r in records if r.author.instance != exclude_instance]
            if documents is not None:
                held = documents()
                records = [r for r in records if r.doc in held]
            yield position, records

    async def save_feed_position(self, instance: str, position: FeedPosition) -> None:
        self._feed_positions[instance] = position

    async def saved_feed_position(self, instance: str) -> FeedPosition | None:
        return self._feed_positions.get(instance)

    # -- snapshots ----------------------------------------------------------------------

    def _generation(self, doc: str, epoch: str | None) -> _Document | None:
        """The document, if it is still of ``epoch`` (None: any; created if missing)."""
        if epoch is None:
            return self._get_or_create(doc)
        document = self._docs.get(doc)
        return document if document is not None and document.epoch == epoch else None

    async def save_snapshot(self, snapshot: SnapshotRecord) -> None:
        document = self._generation(snapshot.doc, snapshot.epoch)
        if document is None:
            return  # deleted meanwhile: a snapshot of what is gone is not kept
        if snapshot.seq not in document.snapshots:
            document.snapshots[snapshot.seq] = snapshot
            self.stats.snapshots_written += 1
        if snapshot.seq > document.snapshot_seq:
            document.snapshot_seq = snapshot.seq
            document.bytes_since_snapshot = sum(
                len(u.data) for u in document.updates[snapshot.seq :]
            )
        document.lease = None

    async def latest_snapshot(
        self, doc: str, *, at_or_before_seq: int | None = None
    ) -> SnapshotRecord | None:
        document = self._docs.get(doc)
        if document is None:
            return None
        seqs = [s for s in document.snapshots if at_or_before_seq is None or s <= at_or_before_seq]
        return document.snapshots[max(seqs)] if seqs else None

    async def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        document = self._generation(checkpoint.doc, checkpoint.epoch)
        if document is not None:
            document.checkpoints.setdefault(checkpoint.seq, checkpoint)

    async def checkpoints(
        self, doc: str, *, after_seq: int = 0, until_seq: int | None = None
    ) -> list[Checkpoint]:
        document = self._docs.get(doc)
        if document is None:
            return []
        return [
            document.checkpoints[seq]
            for seq in sorted(document.checkpoints)
            if seq > after_seq and (until_seq is None or seq <= until_seq)
        ]

    async def prune_history(self, doc: str, through_seq: int) -> None:
        document = self._docs.get(doc)
        if document is None or through_seq not in document.snapshots:
            raise StoreError(f"{doc!r}: no snapshot at seq {through_seq} to keep history from")
        if through_seq <= document.pruned:
            return
        del document.updates[: through_seq - document.pruned]
        document.pruned = through_seq
        for seq in [s for s in document.snapshots if s < through_seq]:
            del document.snapshots[seq]
        for seq in [s for s in document.checkpoints if s < through_seq]:
            del document.checkpoints[seq]

    async def snapshot_seqs(self, doc: str) -> list[int]:
        document = self._docs.get(doc)
        return sorted(document.snapshots) if document else []

    async def delete_snapshots(self, doc: str, seqs: Sequence[int]) -> None:
        document = self._docs.get(doc)
        if document is not None:
            for seq in seqs:
                document.snapshots.pop(seq, None)

    async def lease_snapshot(self, doc: str, instance: str, lease_s: float) -> bool:
        document = self._docs.get(doc)
        if document is None:
            return False  # deleted (a lease never creates a document)
        now = time.time()
        if document.lease is not None and document.lease[0] != instance and document.lease[1] > now:
            return False
        document.lease = (instance, now + lease_s)
        return True

    # -- presence -------------------------------------------------------------------------

    async def publish_awareness(self, changes: Sequence[AwarenessChange]) -> None:
        for change in changes:
            self._awareness[(change.doc, change.client_id)] = change
        self._awareness_feed.extend(changes)
        await self._notify()

    async def awareness_of(self, doc: str) -> list[AwarenessChange]:
        now = time.time()
        return [c for (d, _), c in self._awareness.items() if d == doc and c.expires_s > now]

    async def awareness_position(self) -> FeedPosition:
        return len(self._awareness_feed)

    async def follow_awareness(
        self, after: FeedPosition, *, poll_s: float
    ) -> AsyncIterator[tuple[FeedPosition, list[AwarenessChange]]]:
        position = after
        while True:
            start = position
            async with self._changed:
                await self._changed.wait_for(lambda start=start: len(self._awareness_feed) > start)
            changes, position = self._awareness_feed[start:], len(self._awareness_feed)
            yield position, changes

    # -- repairs ------------------------------------------------------------------------

    async def repair(
        self, doc: str, updates: Mapping[int, Repair], snapshots: Mapping[int, str]
    ) -> str:
        document = self._docs[doc]
        now = time.time()
        for seq, repair in sorted(updates.items()):
            original = document.updates[seq - 1 - document.pruned]
            document.quarantine.append(
                QuarantinedEntry(doc, "update", seq, original.data, repair.reason, now)
            )
            document.updates[seq - 1 - document.pruned] = dataclasses.replace(
                original, data=repair.data
            )
        for seq, reason in sorted(snapshots.items()):
            snapshot = document.snapshots.pop(seq)
            document.quarantine.append(
                QuarantinedEntry(doc, "snapshot", seq, snapshot.data, reason, now)
            )
        document.snapshot_seq = max(document.snapshots, default=0)
        document.epoch = secrets.token_hex(8)
        return document.epoch

    async def quarantined(self, doc: str) -> list[QuarantinedEntry]:
        document = self._docs.get(doc)
        return list(document.quarantine) if document else []

    # -- version names ----------------------------------------------------------------------

    async def name_version(self, name: VersionName) -> None:
        self._names.setdefault(name.doc, {})[name.seq] = name

    async def unname_version(self, doc: str, seq: int) -> bool:
        return self._names.get(doc, {}).pop(seq, None) is not None

    async def version_names(self, doc: str) -> list[VersionName]:
        return sorted(self._names.get(doc, {}).values(), key=lambda n: n.seq)

    # -- webhooks -------------------------------------------------------------------------

    async def lease_webhook(self, name: str, instance: str, lease_s: float) -> WebhookState | None:
        now = time.time()
        state = self._webhooks.get(name, WebhookState(name))
        if state.lease_instance not in (None, instance) and state.lease_until_s > now:
            return None
        state = self._webhooks[name] = dataclasses.replace(
            state, lease_instance=instance, lease_until_s=now + lease_s
        )
        return state

    async def save_webhook(self, state: WebhookState, instance: str) -> bool:
        held = self._webhooks.get(state.name)
        if held is None or held.lease_instance != instance:
            return False
        self._webhooks[state.name] = dataclasses.replace(
            state, lease_instance=held.lease_instance, lease_until_s=held.lease_until_s
        )
        return True

    async def release_webhook(self, name: str, instance: str) -> None:
        held = self._webhooks.get(name)
        if held is not None and held.lease_instance == instance:
            self._webhooks[name] = dataclasses.replace(held, lease_instance=None, lease_until_s=0.0)

    async def webhook_states(self) -> list[WebhookState]:
        return [self._webhooks[name] for name in sorted(self._webhooks)]
