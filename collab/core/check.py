"""``collab check``: read every document of a store, replay its log and snapshots
with the strict reader, and report (or, with ``repair``, set aside) what cannot be
read.

A log entry that fails is quarantined and replaced in the log, under the same seq
so that seqs stay gap-free, by its readable part (an update followed by stray
bytes keeps the update) or else by an empty update. Snapshots that cannot be read,
and every snapshot at or after the first bad entry (it may hold that entry's
content), are quarantined too; loads then replay from an older snapshot. The
repaired document gets a new epoch, so that clients holding the bad content drop
their copy and load the repaired one. Nothing is deleted: ``quarantined()`` on the
store returns every original.

Run it while no server has the document open (or stop the servers): a server that
holds the document in memory keeps its own copy until the document unloads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from collab.core.history import restore
from collab.errors import InvalidUpdate, StoreError
from collab.store import Repair, Store
from collab.wire.replica import EMPTY_UPDATE, Replica
from collab.wire.yformat import readable_prefix

PAGE = 1000


@dataclass(frozen=True, slots=True)
class Problem:
    doc: str
    kind: str  # "update" or "snapshot"
    seq: int
    reason: str


@dataclass(slots=True)
class DocumentReport:
    doc: str
    updates: int = 0
    snapshots: int = 0
    problems: list[Problem] = field(default_factory=list)
    repaired_epoch: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


async def check_store(
    store: Store,
    *,
    repair: bool = False,
    docs: list[str] | None = None,
    progress: Callable[[DocumentReport], None] = lambda report: None,
) -> list[DocumentReport]:
    """Check every document (or ``docs``); returns one report per document."""
    names = docs if docs is not None else [info.name for info in await store.list_documents()]
    reports = []
    for name in names:
        report = await check_document(store, name, repair=repair)
        progress(report)
        reports.append(report)
    return reports


async def check_document(store: Store, doc: str, *, repair: bool = False) -> DocumentReport:
    report = DocumentReport(doc)
    replacements: dict[int, Repair] = {}
    replica = Replica(name=doc)
    async for seq, data in _log(store, doc):
        report.updates += 1
        reason = _unreadable(replica, data)
        if reason is not None:
            report.problems.append(Problem(doc, "update", seq, reason))
            # Later entries may build on the readable part: keep it when it applies.
            prefix = readable_prefix(data)
            kept = prefix if prefix is not None and _unreadable(replica, prefix) is None else None
            replacements[seq] = Repair(kept if kept is not None else EMPTY_UPDATE, reason)
    bad_snapshots: dict[int, str] = {}
    first_bad_update = min(replacements, default=None)
    for seq in await store.snapshot_seqs(doc):
        report.snapshots += 1
        snapshot = await store.latest_snapshot(doc, at_or_before_seq=seq)
        assert snapshot is not None and snapshot.seq == seq
        try:
            restore(Replica(name=doc), snapshot)
        except StoreError as exc:
            reason: str | None = str(exc)
        else:
            reason = None
        if reason is not None:
            report.problems.append(Problem(doc, "snapshot", seq, reason))
            bad_snapshots[seq] = reason
        elif first_bad_update is not None and seq >= first_bad_update:
            bad_snapshots[seq] = f"built over update {first_bad_update}, which was set aside"
    if repair and (replacements or bad_snapshots):
        report.repaired_epoch = await store.repair(doc, replacements, bad_snapshots)
    return report


async def _log(store: Store, doc: str) -> AsyncIterator[tuple[int, bytes]]:
    after = 0
    while page := await store.read_updates(doc, after_seq=after, limit=PAGE):
        for record in page:
            yield record.seq, record.data
        after = page[-1].seq


def _unreadable(replica: Replica, data: bytes) -> str | None:
    """Why ``data`` cannot be read and applied, or None when it can (and was).
    (Should pycrdt fail half-way, DocumentDamaged, the replica is no longer exact
    and later entries may be reported too: the report says which came first.)"""
    try:
        replica.apply(data, bounded=False)
    except InvalidUpdate as exc:
        return exc.message
    return None
