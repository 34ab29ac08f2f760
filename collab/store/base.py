"""The store interface: an append-only update log, snapshots and presence, per
document, shared by every server instance that uses the store.

A Store is the only thing that touches disk or a database. Every backend keeps
the same contract (tests/store_contract.py checks it):

- ``append`` is atomic: a batch is stored completely or not at all, and once it
  returns the updates survive a crash of the process.
- ``append`` assigns the seqs: per document strictly increasing from 1, without
  gaps, whichever instance appends. Instances appending to one document at once
  all succeed; the backend serialises them (SQLite's write lock) or renumbers the
  loser of a race and retries (MongoDB). A seq names one stored update forever.
- ``load`` returns the latest snapshot and every update after it, so that the
  document's state is the snapshot with those updates applied.
- ``follow`` yields the records every instance commits, in commit order, after a
  position; positions are opaque and only ever compared by the backend. An
  instance saves its position now and then, and follows on from it after a
  restart.
- The log is history: updates are never rewritten or dropped by snapshots.
"""

from __future__ import annotations

import abc
import itertools
import secrets
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from collab.errors import FeedLost, SeqConflict

__all__ = [
    "AppendResult",
    "Author",
    "AwarenessChange",
    "DocumentHead",
    "DocumentInfo",
    "FeedLost",
    "FeedPosition",
    "LoadedDocument",
    "NewUpdate",
    "QuarantinedEntry",
    "Repair",
    "SeqConflict",
    "SnapshotRecord",
    "Store",
    "StoreStats",
    "UpdateRecord",
]

FeedPosition = Any  # a backend's place in its feed: an int for SQLite, a token for MongoDB


MAX_SEQ = 2**63 - 1  # seqs are SQLite INTEGERs and MongoDB longs: signed 64 bits


@dataclass(frozen=True, slots=True)
class Author:
    """Who made an update: the authenticated user, the client (connection or
    client id) and the server instance that accepted it."""

    user: str | None = None
    client: str | None = None
    instance: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        """As every answer that shows an author names its fields."""
        return {"user": self.user, "client": self.client, "instance": self.instance}


@dataclass(frozen=True, slots=True)
class NewUpdate:
    """An update to append; the store gives it its seq. ``submission`` tells a
    retried append of this very update (after an unknown outcome) from any other,
    however alike: a store that cannot know whether a commit happened looks for it."""

    doc: str
    data: bytes = field(repr=False)
    time_s: float
    author: Author = Author()
    submission: bytes = field(default_factory=lambda: new_submission(), repr=False, compare=False)
    # The generation of the document it was made for: an append refuses it (with
    # DocumentChanged) once the document has another epoch or was deleted. None:
    # no check (an import; a new document is created).
    epoch: str | None = field(default=None, compare=False)
    # Made for a document that was not stored when it was loaded: if there is still
    # none of that name, the append creates it with ``epoch`` (a document is created
    # by its first write, never by a read); if one was created meanwhile (another
    # writer's first write), the update joins it (what it holds was made on an empty
    # document, so nothing of an older generation comes back) and its record carries
    # that document's epoch.
    create: bool = field(default=False, compare=False)


_PROCESS_TOKEN = secrets.token_bytes(8)
_submissions = itertools.count()


def new_submission() -> bytes:
    """16 bytes no other update of any process has: this process's random token
    and a counter."""
    return _PROCESS_TOKEN + next(_submissions).to_bytes(8, "big")


@dataclass(frozen=True, slots=True)
class UpdateRecord:
    """A stored update: ``seq`` names it forever."""

    doc: str
    seq: int
    data: bytes = field(repr=False)
    time_s: float
    author: Author = Author()
    # The document generation it was stored in, where the store's feed may still
    # carry records of a deleted one (None: not known, or no such feed).
    epoch: str | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class DocumentHead:
    """Where a document's log stands after an append, for deciding snapshots."""

    head_seq: int
    snapshot_seq: int  # the newest snapshot's seq, 0 without one
    bytes_since_snapshot: int


@dataclass(frozen=True, slots=True)
class AppendResult:
    records: list[UpdateRecord]  # one per appended update, in the order given
    heads: dict[str, DocumentHead]


@dataclass(frozen=True, slots=True)
class SnapshotRecord:
    """The document's state after update ``seq``: ``data`` is what was integrated
    (pycrdt's own encoding of it), ``waiting`` what waited for its dependencies
    (empty: nothing did). ``waiting`` None: a snapshot of an older server, whose
    ``data`` may hold both."""

    doc: str
    seq: int
    data: bytes = field(repr=False)
    time_s: float
    waiting: bytes | None = field(default=None, repr=False)
    # The generation it was made from: a store saves it only while the document
    # still has this epoch (None: no check).
    epoch: str | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What changed in a document from update ``base_seq`` to ``seq``, kept beside
    the snapshots so that any version is a few checkpoints away from one:
    ``data`` is what was integrated by ``seq`` beyond the state vector at
    ``base_seq`` (one Yjs update), ``waiting`` what waited for its dependencies
    at ``seq``, ``state_vector`` the state vector at ``seq`` (the next
    checkpoint's base). Checkpoints are not thinned: together they hold about
    what the document holds."""

    doc: str
    seq: int
    base_seq: int
    data: bytes = field(repr=False)
    waiting: bytes = field(repr=False)
    state_vector: bytes = field(repr=False)
    epoch: str | None = field(default=None, compare=False)  # as a snapshot's


@dataclass(frozen=True, slots=True)
class LoadedDocument:
    name: str
    epoch: str
    snapshot: SnapshotRecord | None
    updates: tuple[UpdateRecord, ...]
    # False: no such document is stored; ``epoch`` is a new one, which its first
    # append stores (NewUpdate.create).
    stored: bool = True

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
class AwarenessChange:
    """One awareness client's state as an instance published it: ``update`` is a
    y-protocols awareness update for that client alone (its state ``null`` when it
    left). Valid until ``expires_s``; the instance renews it while the client is
    connected, so the states of an instance that dies expire."""

    doc: str
    client_id: int
    instance: str
    update: bytes = field(repr=False)
    expires_s: float


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
    document_rows_read: int = 0  # by list_documents


class Store(abc.ABC):
    """Async interface; implementations never block the event loop."""

    max_update_bytes: int | None = None  # the largest update the backend can store

    def __init__(self) -> None:
        self.stats = StoreStats()

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Prepare the backend (create schema, connect)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. Safe to call twice."""

    # -- documents and the log ----------------------------------------------------------

    @abc.abstractmethod
    async def load(self, doc: str, *, create: bool = False) -> LoadedDocument:
        """Latest snapshot plus the updates after it, read consistently. A document
        that does not exist is not created (``stored`` False, a new epoch, nothing
        in it), unless ``create``: then it is, empty, with a new epoch."""

    @abc.abstractmethod
    async def append(self, updates: Sequence[NewUpdate]) -> AppendResult:
        """Store a batch (possibly for several documents) in one atomic step, giving
        each update the next seq of its document."""

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
    async def delete_document(self, doc: str) -> bool:
        """Delete a document: its log, snapshots and presence. False when there was
        none. An append of updates made for it (``NewUpdate.epoch``) is refused from
        then on; a new document of that name gets a new epoch."""

    @abc.abstractmethod
    async def get_document(self, doc: str) -> DocumentInfo | None:
        """Metadata of one document, or None if it was never stored."""

    @abc.abstractmethod
    async def list_documents(
        self, *, prefix: str = "", after: str | None = None, limit: int | None = None
    ) -> list[DocumentInfo]:
        """Stored documents by name: those whose name starts with ``prefix``, after
        the name ``after``, at most ``limit`` of them. A range of the index of
        names (:func:`prefix_end`): the rows read are the rows returned."""

    @abc.abstractmethod
    async def stored_bytes(self, docs: Sequence[str]) -> dict[str, int]:
        """The bytes each document takes in the store: its log and snapshots."""

    @abc.abstractmethod
    async def head_seqs(self, docs: Sequence[str]) -> dict[str, int]:
        """The latest seq of each of ``docs`` that is stored."""

    # -- the feed -----------------------------------------------------------------------

    @abc.abstractmethod
    async def feed_position(self) -> FeedPosition:
        """The feed's current end: following from here yields what is committed next."""

    @abc.abstractmethod
    def follow(
        self, after: FeedPosition, *, poll_s: float, exclude_instance: str | None = None
    ) -> AsyncIterator[tuple[FeedPosition, list[UpdateRecord]]]:
        """Records every instance commits after ``after``, in commit order, as
        ``(position, records)`` batches; ``position`` resumes after the batch. The
        first batch comes once the feed is open, and may be empty, as may a batch
        that only moves past ``exclude_instance``'s records (its caller has them
        already). Runs until closed: consume it under ``contextlib.aclosing()``.
        Raises StoreError when the store fails: follow again from the last
        position; FeedLost when that position cannot be followed from any more:
        follow from :meth:`feed_position` and read the log for what was missed."""

    @abc.abstractmethod
    async def save_feed_position(self, instance: str, position: FeedPosition) -> None:
        """Remember where ``instance`` is in the feed; not durable."""

    @abc.abstractmethod
    async def saved_feed_position(self, instance: str) -> FeedPosition | None:
        """Where ``instance`` last saved its place in the feed, if it did."""

    # -- snapshots ----------------------------------------------------------------------

    @abc.abstractmethod
    async def save_snapshot(self, snapshot: SnapshotRecord) -> None:
        """Store a snapshot; writing one that exists already is a no-op."""

    @abc.abstractmethod
    async def latest_snapshot(
        self, doc: str, *, at_or_before_seq: int | None = None
    ) -> SnapshotRecord | None:
        """The newest snapshot, or the newest one at or before a seq."""

    @abc.abstractmethod
    async def snapshot_seqs(self, doc: str) -> list[int]:
        """The seqs of a document's snapshots, oldest first."""

    @abc.abstractmethod
    async def delete_snapshots(self, doc: str, seqs: Sequence[int]) -> None:
        """Delete some of a document's snapshots (thinning: the log still holds
        every update, so every version stays reachable from an older one)."""

    @abc.abstractmethod
    async def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Store a checkpoint; one that exists at its seq is kept as it is."""

    @abc.abstractmethod
    async def checkpoints(
        self, doc: str, *, after_seq: int = 0, until_seq: int | None = None
    ) -> list[Checkpoint]:
        """A document's checkpoints with ``after_seq < seq <= until_seq``, by seq."""

    @abc.abstractmethod
    async def prune_history(self, doc: str, through_seq: int) -> None:
        """Drop the history before a snapshot (retention): the updates up to and
        including ``through_seq`` and the snapshots and checkpoints before it. The snapshot at
        ``through_seq`` stays, so the document and every version from it on stay
        whole. Raises StoreError when there is no snapshot at ``through_seq``."""

    @abc.abstractmethod
    async def lease_snapshot(self, doc: str, instance: str, lease_s: float) -> bool:
        """Take the right to write the document's next snapshot for ``lease_s``
        seconds, unless another instance holds it: one instance at a time snapshots
        a document. Saving a snapshot releases the lease."""

    # -- presence -------------------------------------------------------------------------

    @abc.abstractmethod
    async def publish_awareness(self, changes: Sequence[AwarenessChange]) -> None:
        """Store the latest awareness state of each (document, client); not durable."""

    @abc.abstractmethod
    async def awareness_of(self, doc: str) -> list[AwarenessChange]:
        """The document's awareness states that have not expired."""

    @abc.abstractmethod
    async def awareness_position(self) -> FeedPosition:
        """The awareness feed's current end."""

    @abc.abstractmethod
    def follow_awareness(
        self, after: FeedPosition, *, poll_s: float
    ) -> AsyncIterator[tuple[FeedPosition, list[AwarenessChange]]]:
        """Awareness changes every instance publishes after ``after``, as
        ``follow`` does for records."""

    # -- repairs ------------------------------------------------------------------------

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


def prefix_end(prefix: str) -> str | None:
    """The first name past every name that starts with ``prefix`` (None: no name
    is), so that those names are the range ``prefix <= name < end``: in code point
    order, which is the order of their UTF-8 bytes (SQLite's and MongoDB's)."""
    stem = prefix.rstrip("\U0010ffff")
    if not stem:
        return None
    after = ord(stem[-1]) + 1
    if 0xD800 <= after <= 0xDFFF:  # surrogates are no characters of a name
        after = 0xE000
    return stem[:-1] + chr(after)


def creating(updates: Sequence[NewUpdate]) -> set[str]:
    """The documents of a batch that its updates may create (NewUpdate.create)."""
    return {u.doc for u in updates if u.create and u.epoch is not None}


def expected_epochs(updates: Sequence[NewUpdate]) -> dict[str, str]:
    """The epoch each document's updates in a batch were made for (documents
    whose updates name none are left out: they are not checked)."""
    epochs: dict[str, str] = {}
    for update in updates:
        if update.epoch is not None:
            epochs.setdefault(update.doc, update.epoch)
    return epochs


def next_heads(
    heads: Mapping[str, DocumentHead], updates: Sequence[NewUpdate]
) -> tuple[list[int], dict[str, DocumentHead]]:
    """The seqs an append gives ``updates`` and the documents' heads after it, from
    the heads before it (``heads`` must cover every document in ``updates``)."""
    current = dict(heads)
    seqs = []
    for update in updates:
        head = current[update.doc]
        current[update.doc] = DocumentHead(
            head.head_seq + 1,
            head.snapshot_seq,
            head.bytes_since_snapshot + len(update.data),
        )
        seqs.append(head.head_seq + 1)
    return seqs, current
