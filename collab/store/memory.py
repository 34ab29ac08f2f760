"""In-memory store: the same contract as the others, gone when the process ends."""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import groupby

from collab.store.base import (
    DocumentInfo,
    LoadedDocument,
    QuarantinedEntry,
    Repair,
    SnapshotRecord,
    Store,
    UpdateRecord,
    check_continuity,
)


@dataclass
class _Document:
    epoch: str
    created_s: float
    updated_s: float
    updates: list[UpdateRecord] = field(default_factory=list)
    snapshots: dict[int, SnapshotRecord] = field(default_factory=dict)
    quarantine: list[QuarantinedEntry] = field(default_factory=list)

    @property
    def head_seq(self) -> int:
        return self.updates[-1].seq if self.updates else 0


class MemoryStore(Store):
    def __init__(self) -> None:
        super().__init__()
        self._docs: dict[str, _Document] = {}

    def _get_or_create(self, name: str, now: float | None = None) -> _Document:
        document = self._docs.get(name)
        if document is None:
            now = time.time() if now is None else now
            document = self._docs[name] = _Document(secrets.token_hex(8), now, now)
        return document

    async def load(self, doc: str) -> LoadedDocument:
        document = self._get_or_create(doc)
        snapshot = await self.latest_snapshot(doc)
        after = snapshot.seq if snapshot else 0
        # seq n lives at index n - 1: the log has no gaps.
        updates = tuple(document.updates[after:])
        self.stats.log_rows_read += len(updates)
        return LoadedDocument(doc, document.epoch, snapshot, updates)

    async def append(self, updates: Sequence[UpdateRecord]) -> None:
        ordered = sorted(updates, key=lambda u: u.doc)
        groups = [(name, list(group)) for name, group in groupby(ordered, key=lambda u: u.doc)]
        # Check every document before changing any, so that a batch is all or nothing.
        for name, group in groups:
            existing = self._docs.get(name)
            check_continuity(name, existing.head_seq if existing else 0, [u.seq for u in group])
        for name, group in groups:
            # Created at its first update's time, as the SQLite store does, so that
            # created_s never comes after updated_s.
            document = self._get_or_create(name, group[0].time_s)
            document.updates.extend(group)
            document.updated_s = group[-1].time_s
        self.stats.log_rows_written += len(updates)
        self.stats.append_batches += 1

    async def save_snapshot(self, snapshot: SnapshotRecord) -> None:
        document = self._get_or_create(snapshot.doc)
        if snapshot.seq not in document.snapshots:
            document.snapshots[snapshot.seq] = snapshot
            self.stats.snapshots_written += 1

    async def latest_snapshot(
        self, doc: str, *, at_or_before_seq: int | None = None
    ) -> SnapshotRecord | None:
        document = self._docs.get(doc)
        if document is None:
            return None
        seqs = [s for s in document.snapshots if at_or_before_seq is None or s <= at_or_before_seq]
        return document.snapshots[max(seqs)] if seqs else None

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
        end = len(document.updates) if until_seq is None else min(until_seq, len(document.updates))
        if limit is not None:
            end = min(end, after_seq + limit)
        rows = document.updates[after_seq:end]
        self.stats.log_rows_read += len(rows)
        return rows

    async def get_document(self, doc: str) -> DocumentInfo | None:
        document = self._docs.get(doc)
        if document is None:
            return None
        return DocumentInfo(
            doc, document.epoch, document.head_seq, document.created_s, document.updated_s
        )

    async def list_documents(self) -> list[DocumentInfo]:
        return [info for name in sorted(self._docs) if (info := await self.get_document(name))]

    async def snapshot_seqs(self, doc: str) -> list[int]:
        document = self._docs.get(doc)
        return sorted(document.snapshots) if document else []

    async def repair(
        self, doc: str, updates: Mapping[int, Repair], snapshots: Mapping[int, str]
    ) -> str:
        document = self._docs[doc]
        now = time.time()
        for seq, repair in sorted(updates.items()):
            original = document.updates[seq - 1]
            document.quarantine.append(
                QuarantinedEntry(doc, "update", seq, original.data, repair.reason, now)
            )
            document.updates[seq - 1] = dataclasses.replace(original, data=repair.data)
        for seq, reason in sorted(snapshots.items()):
            snapshot = document.snapshots.pop(seq)
            document.quarantine.append(
                QuarantinedEntry(doc, "snapshot", seq, snapshot.data, reason, now)
            )
        document.epoch = secrets.token_hex(8)
        return document.epoch

    async def quarantined(self, doc: str) -> list[QuarantinedEntry]:
        document = self._docs.get(doc)
        return list(document.quarantine) if document else []
