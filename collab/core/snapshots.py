"""What a snapshot is made of, when one is due, and which are kept: one place for
the writer (live documents), imports and loads, so that a document's snapshots
and checkpoints do not depend on how it got its history.

A snapshot at ``seq`` is the replica's state after update ``seq`` (pycrdt's
encoding of what was integrated, and what waits); its checkpoint is what changed
since the previous checkpoint (collab.core.history rebuilds any version from a
snapshot and a chain of them). Encoding is CPU-bound, a pass over the whole
document: :func:`encode` runs in an executor, never on the event loop.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from collab.config import Settings
from collab.core.thinning import snapshots_to_drop
from collab.store import Checkpoint, SnapshotRecord
from collab.wire.replica import Replica

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
) -> Encoded:
    """The snapshot at ``seq`` of ``replica`` (which holds the state after update
    ``seq``), and with ``checkpoint_base`` ``(base_seq, its state vector)`` the
    checkpoint from there (``(0, EMPTY_STATE_VECTOR)``: everything). CPU-bound:
    run it in an executor."""
    waiting = replica.waiting or b""
    record = None
    if snapshot:
        record = SnapshotRecord(doc, seq, replica.doc.get_update(), time.time(), waiting, epoch)
    made = None
    if checkpoint_base is not None:
        base_seq, base_vector = checkpoint_base
        if base_vector == EMPTY_STATE_VECTOR and record is not None:
            data = record.data  # the same bytes: not a second copy of the document
        else:
            data = replica.doc.get_update(base_vector)
        made = Checkpoint(doc, seq, base_seq, data, waiting, replica.doc.get_state(), epoch)
    return Encoded(record, made)
