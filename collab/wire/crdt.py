"""Every call into pycrdt with bytes from outside goes through here.

pycrdt raises ``ValueError`` when it cannot decode bytes (nothing was changed),
``RuntimeError`` when integrating a decoded update failed, and, from a Rust
panic, ``pyo3_runtime.PanicException``, which derives from ``BaseException`` and
so slips past ``except Exception``. The last two may leave a document half
changed. The strict reader (collab.wire.yformat) runs first, so none of this
should happen; if it does, it is an error report here, never a crash.
"""

from __future__ import annotations

import pycrdt

from collab.errors import DocumentDamaged, InvalidUpdate
from collab.wire import yformat, ysplit


def is_panic(exc: BaseException) -> bool:
    """True for pyo3's PanicException (not importable: pyo3 creates it lazily)."""
    return type(exc).__name__ == "PanicException"


def apply_update(doc: pycrdt.Doc, update: bytes, *, doc_name: str | None = None) -> None:
    """Apply an update. Raises InvalidUpdate when pycrdt cannot decode it (the doc is
    unchanged), DocumentDamaged when it failed while integrating."""
    try:
        doc.apply_update(update)
    except ValueError as exc:
        raise InvalidUpdate(f"the update could not be applied: {exc}", doc=doc_name) from None
    except BaseException as exc:
        if isinstance(exc, RuntimeError) or is_panic(exc):
            raise DocumentDamaged(
                f"the update could not be integrated: {exc}", doc=doc_name
            ) from None
        raise


# Shorter updates hold neither a run pycrdt merges at a cost (ysplit.SQUASH_FROM
# items, 3 bytes each at least) nor ysplit.LEVELED_FROM deleted ranges (2 bytes each).
REWRITTEN_FROM_BYTES = 128


def apply_logged(doc: pycrdt.Doc, update: bytes, *, doc_name: str | None = None) -> None:
    """Apply an update from a document's log to a plain pycrdt document (not a
    replica) at what the replica's way costs: a run of items pycrdt would merge
    written as two (ysplit.squash_runs: records stored before the replica did so
    hold such runs), many deletions level by level (ysplit.leveled). Raises as
    :func:`apply_update`."""
    ranges = None
    if len(update) >= REWRITTEN_FROM_BYTES:
        try:
            ranges = yformat.check_update(update)
            squashed = ysplit.squash_runs(update, ranges)
            if squashed is not None:
                update, ranges = squashed, yformat.check_update(squashed)
        except yformat.FormatError:
            ranges = None  # as it is: pycrdt says what is wrong with it
    apply_checked(doc, update, ranges, doc_name=doc_name)


def apply_checked(
    doc: pycrdt.Doc,
    update: bytes,
    ranges: yformat.UpdateRanges | None,
    *,
    doc_name: str | None = None,
) -> None:
    """Apply an update the strict reader read as ``ranges`` (None: not read, applied
    as it is); one deleting many ranges level by level (ysplit.leveled). Raises as
    :func:`apply_update`."""
    parts = ysplit.leveled(update, ranges) if ranges is not None else None
    for part in parts or (update,):
        apply_update(doc, part, doc_name=doc_name)


def diff(doc: pycrdt.Doc, state_vector: bytes, *, doc_name: str | None = None) -> bytes:
    """What a peer with ``state_vector`` lacks. Raises InvalidUpdate."""
    try:
        return doc.get_update(state_vector)
    except BaseException as exc:
        if isinstance(exc, (ValueError, RuntimeError)) or is_panic(exc):
            raise InvalidUpdate(
                f"the state vector could not be used: {exc}", doc=doc_name
            ) from None
        raise


# Updates merged in one call. pycrdt's merge costs more than linearly in their
# number (26,000 one-character updates: 3.4 s at once, 25 ms as merges of merges
# of 64), so longer runs are merged in a tree.
MERGE_FANOUT = 64


def merge(updates: list[bytes]) -> bytes:
    """Merge checked updates into one (an encoding step: nothing is integrated)."""
    try:
        while len(updates) > MERGE_FANOUT:
            updates = [
                pycrdt.merge_updates(*group) if len(group) > 1 else group[0]
                for group in (
                    updates[start : start + MERGE_FANOUT]
                    for start in range(0, len(updates), MERGE_FANOUT)
                )
            ]
        return pycrdt.merge_updates(*updates)
    except BaseException as exc:
        if isinstance(exc, (ValueError, RuntimeError)) or is_panic(exc):
            raise InvalidUpdate(f"the updates could not be merged: {exc}") from None
        raise
