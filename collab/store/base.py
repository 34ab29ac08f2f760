"""The store interface: an append-only update log, snapshots and presence, per
document, shared by every server instance that uses the store.

A Store is the only thing that touches disk or a database. Its interface has
eight areas, each an abstract class below whose docstring states its contract
(tests/store_contract.py checks every backend against them):

- :class:`DocumentStore`: which documents there are; loading and deleting one.
- :class:`LogStore`: appending updates, which gives them their seqs; reading them.
- :class:`FeedStore`: following what every instance commits.
- :class:`SnapshotStore`: snapshots, checkpoints, retention, the snapshot lease.
- :class:`PresenceStore`: awareness states, shared between instances, not durable.
- :class:`RepairStore`: setting damaged entries aside (``collab check --repair``).
- :class:`VersionNameStore`: the names people give versions.
- :class:`WebhookStore`: each webhook's feed position and delivery lease.

:class:`Store` is all eight, with ``open`` and ``close``. The records they take and
give are collab.store.records'; the package (``collab.store``) names both. After
the interface come the rules every backend applies alike (seqs of a batch, ranges
of names).
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Callable, Mapping, Sequence, Set

from collab.store.records import (
    AppendResult,
    Author,
    AwarenessChange,
    Checkpoint,
    DocumentHead,
    DocumentInfo,
    FeedPosition,
    FeedRecord,
    LoadedDocument,
    NewUpdate,
    QuarantinedEntry,
    Repair,
    SnapshotRecord,
    StoreStats,
    UpdateRecord,
    VersionName,
    WebhookState,
)

# The documents a follower of the feed holds now (FeedStore.follow's ``documents``).
HeldDocuments = Callable[[], Set[str]]


class DocumentStore(abc.ABC):
    """Documents by name. A document is created by its first append (or by a load
    that asks for it); it has an epoch, its generation, which a deletion ends: a
    new document of that name gets a new epoch.

    ``load`` returns the latest snapshot and every update after it, so that the
    document's state is the snapshot with those updates applied."""

    @abc.abstractmethod
    async def load(self, doc: str, *, create: bool = False) -> LoadedDocument:
        """Latest snapshot plus the updates after it, read consistently. A document
        that does not exist is not created (``stored`` False, a new epoch, nothing
        in it), unless ``create``: then it is, empty, with a new epoch."""

    @abc.abstractmethod
    async def delete_document(self, doc: str, *, by: Author | None = None) -> bool:
        """Delete a document: its log, snapshots and presence. False when there was
        none. An append of updates made for it (``NewUpdate.epoch``) is refused from
        then on; a new document of that name gets a new epoch. In the same step the
        feed gets a :class:`DeletionRecord` (the generation, its head, the time and
        ``by``), after every update of that generation and before any of the next
        one, so that what follows the feed learns of it after a restart too. The
        generation's updates may be gone from the feed from then on (SQLite's go
        with their rows) or still in it (MongoDB's change stream): never after it,
        but for an append that raced the deletion and was taken back."""

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


class LogStore(abc.ABC):
    """Each document's log of updates, which is its history.

    - ``append`` is atomic: a batch is stored completely or not at all, and once
      it returns the updates survive a crash of the process.
    - ``append`` assigns the seqs: per document strictly increasing from 1,
      without gaps, whichever instance appends. Instances appending to one
      document at once all succeed; the backend serialises them (SQLite's write
      lock) or renumbers the loser of a race and retries (MongoDB). A seq names
      one stored update forever."""

    max_update_bytes: int | None = None  # the largest update the backend can store

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


class FeedStore(abc.ABC):
    """What every instance commits, for the others to follow.

    ``follow`` yields the records every instance commits, in commit order, after a
    position; positions are opaque and only ever compared by the backend. An
    instance saves its position now and then, and follows on from it after a
    restart. An instance follows only the documents it holds (``documents``), so
    that what others commit to the rest costs it nothing, or little."""

    @abc.abstractmethod
    async def feed_position(self) -> FeedPosition:
        """The feed's current end: following from here yields what is committed next."""

    @abc.abstractmethod
    def follow(
        self,
        after: FeedPosition,
        *,
        poll_s: float,
        exclude_instance: str | None = None,
        deletions: bool = False,
        documents: HeldDocuments | None = None,
    ) -> AsyncIterator[tuple[FeedPosition, list[FeedRecord]]]:
        """Records every instance commits after ``after``, in commit order, as
        ``(position, records)`` batches; ``position`` resumes after the batch. The
        first batch comes once the feed is open, and may be empty, as may a batch
        that only moves past ``exclude_instance``'s records (its caller has them
        already) or past documents left out. Runs until closed: consume it under
        ``contextlib.aclosing()``. Raises StoreError when the store fails: follow
        again from the last position; FeedLost when that position cannot be
        followed from any more: follow from :meth:`feed_position` and read the log
        for what was missed.

        With ``deletions``, the batches carry each document's deletion
        (:class:`DeletionRecord`, whoever made it) in its place in that order too;
        without, only updates.

        ``documents`` (None: every document) names the documents the follower holds
        now; the records of the others may be left out, unread. The backend calls it
        on the event loop as each poll or stream starts, and may call it more often.
        From each call on, the records of the documents it returned that come after
        the last position yielded before the call are yielded. So a document that
        joins the set may miss records committed while it joined (up to the position
        yielded before the first call that returned it): once that call is made,
        its follower reads them from the log. Leaving the set needs nothing: the
        records of a document no longer held may still come, to be dropped.
        ``documents`` must be cheap: give the same set object while it does not
        change, and a backend may reuse what it built from it."""

    @abc.abstractmethod
    async def save_feed_position(self, instance: str, position: FeedPosition) -> None:
        """Remember where ``instance`` is in the feed; not durable."""

    @abc.abstractmethod
    async def saved_feed_position(self, instance: str) -> FeedPosition | None:
        """Where ``instance`` last saved its place in the feed, if it did."""


class SnapshotStore(abc.ABC):
    """A document's state at some seqs, so that loading it and reading old versions
    need not replay its whole log.

    The log is history: updates are never rewritten or dropped by snapshots. Only
    retention (``prune_history``) drops history, and only before a snapshot it
    keeps."""

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


class PresenceStore(abc.ABC):
    """Awareness states (cursors, names), shared between instances. Not durable:
    each state expires unless the instance that published it renews it."""

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


class RepairStore(abc.ABC):
    """What ``collab check --repair`` sets aside: unreadable log entries and
    snapshots, kept in quarantine."""

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


class VersionNameStore(abc.ABC):
    """Names given to versions ("Sent to legal"), one per seq of a document, gone
    with the document (``delete_document``). They name versions only: keeping the
    history they need is retention's part (collab.core.manager)."""

    @abc.abstractmethod
    async def name_version(self, name: VersionName) -> None:
        """Give the version ``name.seq`` of ``name.doc`` its name, in place of the
        one it had."""

    @abc.abstractmethod
    async def unname_version(self, doc: str, seq: int) -> bool:
        """Take a version's name away; False when it had none."""

    @abc.abstractmethod
    async def version_names(self, doc: str) -> list[VersionName]:
        """A document's named versions, by seq."""


class WebhookStore(abc.ABC):
    """Webhooks (collab.webhooks) deliver from the feed: each keeps its feed
    position here, so that a restart resumes where delivery stood, and a lease,
    so that one instance at a time delivers it."""

    @abc.abstractmethod
    async def lease_webhook(self, name: str, instance: str, lease_s: float) -> WebhookState | None:
        """Take or renew the webhook's lease for ``lease_s`` seconds from now, and
        return its state; None (and nothing changed) while another instance holds
        a lease that has not expired. A webhook not stored yet is created."""

    @abc.abstractmethod
    async def save_webhook(self, state: WebhookState, instance: str) -> bool:
        """Store the webhook's position and delivery counts (not its lease) if
        ``instance`` holds its lease; False (nothing saved) once another took it."""

    @abc.abstractmethod
    async def release_webhook(self, name: str, instance: str) -> None:
        """Give the lease up, if ``instance`` holds it: another may take it at once."""

    @abc.abstractmethod
    async def webhook_states(self) -> list[WebhookState]:
        """Every stored webhook, by name."""


class Store(
    DocumentStore,
    LogStore,
    FeedStore,
    SnapshotStore,
    PresenceStore,
    RepairStore,
    VersionNameStore,
    WebhookStore,
):
    """Every area of the interface, opened and closed. Async; implementations never
    block the event loop."""

    def __init__(self) -> None:
        self.stats = StoreStats()

    async def open(self) -> None:
        """Prepare the backend (create schema, connect)."""

    async def close(self) -> None:
        """Release connections. Safe to call twice."""


# -- rules every backend applies alike ------------------------------------------------------


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
    # Counted per document, each head made once: a batch is mostly one update for
    # each of many documents, or many updates of a few.
    counts = {doc: [head.head_seq, head.bytes_since_snapshot] for doc, head in heads.items()}
    seqs = []
    for update in updates:
        count = counts[update.doc]
        count[0] += 1
        count[1] += len(update.data)
        seqs.append(count[0])
    after = {
        doc: DocumentHead(seq, heads[doc].snapshot_seq, size) for doc, (seq, size) in counts.items()
    }
    return seqs, after
