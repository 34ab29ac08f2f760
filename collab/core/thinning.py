"""Which snapshots to keep: the newest few, and older ones spaced out
exponentially, so that a document's snapshots take at most its size times
``keep_recent + log2(updates) + 1`` while every version stays reachable (from an
older snapshot, or the start, plus the log, which keeps every update).

Ages are counted back from the newest snapshot: of the snapshots whose age
falls in ``[2^k, 2^(k+1))``, the oldest is kept. (Keeping the oldest is what makes
this stable as new snapshots come: a kept snapshot only moves on to the next
range, where it is again the oldest, so older ones are not thinned away one
after another.) A version far back in history is then at most about its own age
away from a snapshot: recent versions load fast, old ones replay more log.

A named version ("Sent to legal") pins the snapshot it loads from (the newest at or
before it): thinning keeps that one, so a named version stays as quick to open as
when it was named.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence


def snapshots_to_drop(
    seqs: Sequence[int], keep_recent: int, pinned: Iterable[int] = ()
) -> list[int]:
    """The seqs of the snapshots thinning drops, of a document's ``seqs``; the
    newest snapshot at or before each ``pinned`` seq (named versions) is kept."""
    ascending = sorted(set(seqs))
    held = set()
    for seq in pinned:
        at = bisect.bisect_right(ascending, seq)
        if at > 0:
            held.add(ascending[at - 1])
    ordered = ascending[::-1]
    if len(ordered) <= keep_recent:
        return []
    newest = ordered[0]
    oldest_in: dict[int, int] = {}  # age range -> its oldest snapshot
    for seq in ordered[keep_recent:]:  # newest first: the last one seen is the oldest
        oldest_in[(newest - seq).bit_length()] = seq
    kept = set(oldest_in.values()) | held
    return sorted(seq for seq in ordered[keep_recent:] if seq not in kept)
