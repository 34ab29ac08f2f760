"""History: a document's state at any seq, rebuilt from the store alone.

The state after update ``seq`` is the nearest snapshot at or before ``seq`` with
the logged updates after it applied. Snapshots are built the same way, so a
snapshot is exactly the state at its seq.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from collab.errors import InvalidUpdate, StoreError
from collab.store.base import Store, UpdateRecord
from collab.wire.replica import EMPTY_UPDATE, Replica


def squash(updates: Sequence[bytes]) -> bytes:
    """Merge updates (a snapshot, then log entries) into one compact update, losing
    nothing: what waits for dependencies is carried along. Raises StoreError when
    one of them cannot be read or applied."""
    replica = Replica()
    for update in updates:
        try:
            replica.apply(update, bounded=False)
        except InvalidUpdate as exc:
            raise StoreError(f"a stored update cannot be applied: {exc.message}") from None
    return replica.encode()


async def state_at(store: Store, doc: str, seq: int | None = None) -> tuple[int, bytes]:
    """``(seq, state)``: the document's state after update ``seq`` (default: the
    latest). ``seq`` is clamped to the document's head."""
    snapshot = await store.latest_snapshot(doc, at_or_before_seq=seq)
    updates = await store.read_updates(
        doc, after_seq=snapshot.seq if snapshot else 0, until_seq=seq
    )
    parts = ([snapshot.data] if snapshot else []) + [u.data for u in updates]
    if updates:
        at = updates[-1].seq
    else:
        at = snapshot.seq if snapshot else 0
    if not parts:
        return at, EMPTY_UPDATE
    loop = asyncio.get_running_loop()
    return at, await loop.run_in_executor(None, squash, parts)


async def list_updates(
    store: Store, doc: str, *, after_seq: int = 0, limit: int = 100
) -> list[UpdateRecord]:
    """One page of the update log, oldest first."""
    return await store.read_updates(doc, after_seq=after_seq, limit=limit)
