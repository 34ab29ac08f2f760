"""History: a document's state at any seq, rebuilt from the store alone.

The state after update ``seq`` is the nearest snapshot at or before ``seq`` with
the logged updates after it applied. Snapshots are built the same way, so a
snapshot is exactly the state at its seq.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pycrdt

from collab.store.base import Store, UpdateRecord
from collab.wire.yformat import decode_state_vector, update_ranges

EMPTY_UPDATE = b"\x00\x00"


def squash(updates: Sequence[bytes]) -> bytes:
    """Merge updates into one compact update, losing nothing.

    A Doc encodes its state compactly, but Yrs leaves out structs still waiting for
    their dependencies ("pending"); such updates are carried along unmerged so
    that they apply once their dependencies arrive.
    """
    doc = pycrdt.Doc()
    for update in updates:
        doc.apply_update(update)
    state = doc.get_update()
    integrated = decode_state_vector(doc.get_state())
    pending = [u for u in updates if not update_ranges(u).integrated_in(integrated)]
    if pending:
        state = pycrdt.merge_updates(state, *pending)
    return state


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
