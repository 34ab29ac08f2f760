"""The store interface: an append-only update log and snapshots, per document.

A Store is the only thing that touches disk or a database. Every backend keeps
the same contract (tests/store_contract.py checks it):

- ``append`` is atomic: a batch is stored completely or not at all, and once it
  returns the updates survive a crash of the process.
- ``seq`` is strictly increasing per document, starting at 1, without gaps; an
  append that does not continue at ``head_seq + 1`` raises :class:`SeqConflict`
  and stores nothing.
- ``load`` returns the latest snapshot and every update after it, so that the
  document's state is the snapshot with those updates applied.
- The log is history: updates are never rewritten or dropped by snapshots.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from collab.errors import SeqConflict

__all__ = [
    "DocumentInfo",
    "LoadedDocument",
    "Origin",
    "QuarantinedEntry",
    "Repair",
    "SeqConflict",
    "SnapshotRecord",
    "Store",
    "StoreStats",
    "UpdateRecord",
]


@dataclass(frozen=True, slots=True)
class Origin:
    """Who made an update: the authenticated user, the client (connection or
    client id) and the server instance that accepted it."""

    user: str | None = None
    client: str | None = None
    instance: str | None = None


@dataclass(frozen=True, slots=True)
class UpdateRecord:
    doc: str
    seq: int
    data: bytes = field(repr=False)
    time_s: float
    origin: Origin = Origin()


@dataclass(frozen=True, slots=True)
class SnapshotRecord:
    """The document's merged state after update ``seq``."""

    doc: str
    seq: int
    data: bytes = field(repr=False)
    time_s: float


@dataclass(frozen=True, slots=True)
class LoadedDocument:
    name: str
    epoch: str
    snapshot: SnapshotRecord | None
    updates: tuple[UpdateRecord, ...]

    @property
    def head_seq(self) -> int:
        if self.updates:
            return self.updates[-1].seq
        return self.snapshot.seq if self.snapshot else 0


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    name: str
    epoch: str
    head_seq: int
    created_s: float
    updated_s: float


@dataclass(frozen=True, slots=True)
class Repair:
    """What ``collab check --repair`` puts in place of a log entry it sets aside."""

    data: bytes = field(repr=False)  # the readable part of the entry, or an empty update
    reason: str


@dataclass(frozen=True, slots=True)
class QuarantinedEntry:
    """A log entry or snapshot set aside by a repair, as it was stored."""

    doc: str
    kind: str  # "update" or "snapshot"
    seq: int
    data: bytes = field(repr=False)
    reason: str
    quarantined_s: float


@dataclass(slots=True)
class StoreStats:
    """Counters for tests and metrics."""

    log_rows_read: int = 0
    log_rows_written: int = 0
    append_batches: int = 0
    snapshots_written: int = 0


class Store(abc.ABC):
    """Async interface; implementations never block the event loop."""

    def __init__(self) -> None:
        self.stats = StoreStats()

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Prepare the backend (create schema, connect)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. Safe to call twice."""

    @abc.abstractmethod
    async def load(self, doc: str) -> LoadedDocument:
        """Latest snapshot plus the updates after it. A document that does not
        exist yet is created, with a new epoch."""

    @abc.abstractmethod
    async def append(self, updates: Sequence[UpdateRecord]) -> None:
        """Store a batch (possibly for several documents) in one atomic step."""

    @abc.abstractmethod
    async def save_snapshot(self, snapshot: SnapshotRecord) -> None:
        """Store a snapshot; writing one that exists already is a no-op."""

    @abc.abstractmethod
    async def latest_snapshot(
        self, doc: str, *, at_or_before_seq: int | None = None
    ) -> SnapshotRecord | None:
        """The newest snapshot, or the newest one at or before a seq."""

    @abc.abstractmethod
    async def read_updates(
        self,
        doc: str,
        *,
        after_seq: int = 0,
        until_seq: int | None = None,
        limit: int | None = None,
    ) -> list[UpdateRecord]:
        """Updates with ``after_seq < seq <= until_seq``, in seq order."""

    @abc.abstractmethod
    async def get_document(self, doc: str) -> DocumentInfo | None:
        """Metadata of one document, or None if it was never stored."""

    @abc.abstractmethod
    async def list_documents(self) -> list[DocumentInfo]:
        """Every stored document, by name."""

    @abc.abstractmethod
    async def snapshot_seqs(self, doc: str) -> list[int]:
        """The seqs of a document's snapshots, oldest first."""

    @abc.abstractmethod
    async def repair(
        self, doc: str, updates: Mapping[int, Repair], snapshots: Mapping[int, str]
    ) -> str:
        """Set entries aside, in one transaction: each update seq in ``updates`` keeps
        its seq with the repair's data in the log, its original going to quarantine
        with the reason; each snapshot seq in ``snapshots`` moves to quarantine with
        its reason. The document gets a new epoch (clients drop their copies), which
        is returned."""

    @abc.abstractmethod
    async def quarantined(self, doc: str) -> list[QuarantinedEntry]:
        """What repairs set aside for a document, oldest first."""


def check_continuity(doc: str, head_seq: int, seqs: Sequence[int]) -> None:
    """Raise SeqConflict unless ``seqs`` continue ``head_seq`` without gaps."""
    expected = head_seq + 1
    for seq in seqs:
        if seq != expected:
            raise SeqConflict(doc, f"{doc}: expected seq {expected}, got {seq}")
        expected += 1
