"""The records a store takes and gives: updates to append and as stored, snapshots
and checkpoints, documents, presence, repairs, and the store's counters, as
dataclasses that name their fields. The interface that moves them is
collab.store.base."""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass, field
from typing import Any

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
    # With ``create``: the document's first content (an extension's seed), stored
    # only by the append that creates the document; if one of that name exists
    # already the append refuses it (DocumentChanged), so that two writers seeding
    # a new document at once store one seed, not two.
    first: bool = field(default=False, compare=False)


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
class DeletionRecord:
    """A document's deletion, as the store's feed carries it (``follow(...,
    deletions=True)``): after every update of the generation it ended, before any
    of the next one of that name."""

    doc: str
    epoch: str  # the generation deleted
    last_seq: int  # its head when it was deleted (0: it had no update)
    time_s: float
    author: Author = Author()  # who deleted it


FeedRecord = UpdateRecord | DeletionRecord  # what follow(..., deletions=True) yields


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
    # Who inserted each item up to ``seq`` (collab.core.authors: an encoded IdMap
    # of Yjs client clock ranges to authors), kept with the snapshot so that
    # authorship outlives the log that retention drops. None: not recorded.
    authors: bytes | None = field(default=None, repr=False, compare=False)


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


@dataclass(frozen=True, slots=True)
class VersionName:
    """A name someone gave a version ("Sent to legal"): the document after ``seq``."""

    doc: str
    seq: int
    name: str
    user: str | None  # who named it (None without access tokens)
    time_s: float  # when


@dataclass(frozen=True, slots=True)
class WebhookState:
    """A webhook as the store keeps it (collab.webhooks): the feed position its
    deliveries follow on from, which instance holds its lease (delivers), and how
    its deliveries go, for ``collab webhooks status``."""

    name: str
    position: FeedPosition | None = None  # None: delivery has not started
    lease_instance: str | None = None
    lease_until_s: float = 0.0  # Unix seconds
    delivered: int = 0  # deliveries the endpoint accepted
    failures: int = 0  # failed attempts since the last success
    last_error: str | None = None
    last_attempt_s: float | None = None
    last_success_s: float | None = None


@dataclass(slots=True)
class StoreStats:
    """Counters for tests and metrics."""

    log_rows_read: int = 0
    log_rows_written: int = 0
    append_batches: int = 0
    snapshots_written: int = 0
    document_rows_read: int = 0  # by list_documents
