"""History: a document's state at any seq, rebuilt from the store alone.

The state after update ``seq`` is the nearest snapshot at or before ``seq`` with
the logged updates after it applied, through a replica exactly as the live
document applied them. Snapshots are built the same way, so a snapshot is exactly
the state at its seq.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from collab.errors import InvalidUpdate, StoreError
from collab.store.base import SnapshotRecord, Store, UpdateRecord
from collab.wire.replica import EMPTY_UPDATE, Replica


def restore(replica: Replica, snapshot: SnapshotRecord) -> None:
    """Load a stored snapshot into an empty replica. Raises StoreError."""
    try:
        replica.restore(snapshot.data, snapshot.waiting)
    except InvalidUpdate as exc:
        raise StoreError(
            f"{snapshot.doc!r}: the snapshot at seq {snapshot.seq} cannot be applied: {exc.message}"
        ) from None


def apply_stored(replica: Replica, record: UpdateRecord) -> None:
    """Apply a logged update as the live document did. Raises StoreError (``collab
    check`` finds such entries and ``--repair`` sets them aside)."""
    try:
        # Stored entries load whatever waits already: the bound is for new ones.
        replica.apply(record.data, bounded=False)
    except InvalidUpdate as exc:
        raise StoreError(
            f"{record.doc!r}: the update at seq {record.seq} cannot be applied: {exc.message}"
        ) from None


def rebuild(snapshot: SnapshotRecord | None, updates: Sequence[UpdateRecord]) -> Replica:
    """The replica a snapshot and the updates after it make. CPU-bound: run it in an
    executor."""
    replica = Replica()
    if snapshot is not None:
        restore(replica, snapshot)
    for record in updates:
        apply_stored(replica, record)
    return replica


async def replica_at(store: Store, doc: str, seq: int | None = None) -> tuple[int, Replica]:
    """``(seq, replica)``: the document after update ``seq`` (default: the latest).
    ``seq`` is clamped to the document's head."""
    snapshot = await store.latest_snapshot(doc, at_or_before_seq=seq)
    updates = await store.read_updates(
        doc, after_seq=snapshot.seq if snapshot else 0, until_seq=seq
    )
    if updates:
        at = updates[-1].seq
    else:
        at = snapshot.seq if snapshot else 0
    loop = asyncio.get_running_loop()
    return at, await loop.run_in_executor(None, rebuild, snapshot, updates)


async def state_at(store: Store, doc: str, seq: int | None = None) -> tuple[int, bytes]:
    """``(seq, state)``: the document's state after update ``seq`` (default: the
    latest) as one Yjs update, what waits for dependencies included."""
    at, replica = await replica_at(store, doc, seq)
    if at == 0:
        return at, EMPTY_UPDATE
    return at, replica.encode()


async def list_updates(
    store: Store, doc: str, *, after_seq: int = 0, limit: int = 100
) -> list[UpdateRecord]:
    """One page of the update log, oldest first."""
    return await store.read_updates(doc, after_seq=after_seq, limit=limit)
