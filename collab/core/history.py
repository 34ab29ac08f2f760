"""History: a document's state at any seq, rebuilt from the store alone.

The state after update ``seq`` is the nearest snapshot at or before ``seq`` with
the logged updates after it applied, through a replica exactly as the live
document applied them. Snapshots are built the same way, so a snapshot is exactly
the state at its seq.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from collab.core import render
from collab.core.limits import CpuMeter, ReadBudget, cpu_meter
from collab.errors import InvalidUpdate, StoreError
from collab.store import Author, Checkpoint, SnapshotRecord, Store, UpdateRecord
from collab.wire import crdt, yformat
from collab.wire.replica import EMPTY_UPDATE, Replica
from collab.wire.yformat import FormatError

MERGED_BYTES = 256 * 1024  # of logged updates applied as one
# And at most this many: pycrdt's merge costs the square of the updates merged
# (500 one-character updates: 1 ms, 2,000: 18 ms, 20,000: 2 s), all of it
# holding the GIL, so the event loop waits for it even on another thread.
MERGED_UPDATES = 500
MAX_CLIENTS_LISTED = 20  # in one change of a timeline


class NotRetained(StoreError):
    """The version asked for is older than the history the store keeps
    (``history_retention_s``): it cannot be rebuilt, and no other state is given
    in its place."""

    def __init__(self, doc: str, seq: int, first_seq: int) -> None:
        super().__init__(
            f"{doc!r}: versions before seq {first_seq} are no longer kept (retention); "
            f"seq {seq} cannot be shown"
        )
        self.first_seq = first_seq


async def retained_from(store: Store, doc: str) -> int:
    """The oldest seq whose version can be rebuilt: 0 while the whole log is kept,
    else the snapshot the kept history starts from."""
    first = await store.read_updates(doc, after_seq=0, limit=1)
    if first and first[0].seq == 1:
        return 0
    seqs = await store.snapshot_seqs(doc)
    if seqs:
        return seqs[0]
    return 0 if not first else first[0].seq - 1


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


@dataclass(frozen=True, slots=True)
class Sources:
    """What makes a version: a snapshot (or nothing: the empty document), a chain
    of checkpoints on top of it, then the log entries after the last of them.
    ``nearest``: the newest snapshot at or before the version, as read, also when
    the chain starts from the empty document instead (who needs it besides, the
    authors index, need not read it again); a worker process is not given it."""

    snapshot: SnapshotRecord | None
    chain: tuple[Checkpoint, ...]
    updates: list[UpdateRecord]
    nearest: SnapshotRecord | None = None

    @property
    def seq(self) -> int:
        if self.updates:
            return self.updates[-1].seq
        if self.chain:
            return self.chain[-1].seq
        return self.snapshot.seq if self.snapshot else 0

    def __reduce__(self) -> tuple[Any, ...]:
        # To a worker process, the log goes as tuples: pickle writes those in C,
        # dataclasses in Python, holding the GIL the event loop needs (20,000
        # records: 33 ms against 230).
        return (Sources, (self.snapshot, self.chain, Log(self.updates)))


class Log(list[UpdateRecord]):
    """Log entries that pickle as tuples (a worker process's arguments)."""

    def __reduce__(self) -> tuple[Any, ...]:
        rows = [
            (r.doc, r.seq, r.data, r.time_s, r.author.user, r.author.client, r.author.instance)
            for r in self
        ]
        return (_log_of, (rows,))


def _log_of(rows: list[tuple[Any, ...]]) -> Log:
    return Log(
        UpdateRecord(doc, seq, data, time_s, Author(user, client, instance))
        for doc, seq, data, time_s, user, client, instance in rows
    )


def rebuild(
    snapshot: SnapshotRecord | None,
    updates: Sequence[UpdateRecord],
    chain: Sequence[Checkpoint] = (),
    meter: CpuMeter | None = None,
    checks: yformat.CheckedUpdates | None = None,
) -> Replica:
    """The replica a snapshot, checkpoints and the updates after them make.
    CPU-bound: run it in an executor. ``meter``: the CPU time it takes is charged
    to a request's budget as it goes (BudgetExceeded past it)."""
    replica = Replica()
    if snapshot is not None:
        restore(replica, snapshot)
    for checkpoint in chain:
        _apply_checkpoint(replica, checkpoint, checkpoint.data)
        if meter is not None:
            meter.check()
    if chain and chain[-1].waiting:
        # What waited at the last checkpoint (it may have come in since the snapshot).
        _apply_checkpoint(replica, chain[-1], chain[-1].waiting)
    apply_log(replica, updates, meter, checks)
    return replica


def apply_log(
    replica: Replica,
    updates: Sequence[UpdateRecord],
    meter: CpuMeter | None = None,
    checks: yformat.CheckedUpdates | None = None,
) -> None:
    """Apply logged updates in seq order as the live document did: as one merged
    update where that gives the same, else one by one. Raises StoreError.
    ``checks``: the strict reader's results, shared with another pass over them."""
    if not _apply_merged(replica, updates, meter, checks):
        for record in updates:
            apply_stored(replica, record)
            if meter is not None:
                meter.check()


class LogOrder:
    """Whether the updates of a log, taken in turn, each need only what the
    document (its state vector at the start) and the updates before hold: every
    struct's dependencies and every deleted item come earlier, so none would wait
    on its way in. Sans-IO: it is told each update's check (``check_update``)."""

    def __init__(self, state: dict[int, int] | None = None) -> None:
        self._known = dict(state or {})
        self.in_order = True  # every update taken so far was

    def take(self, ranges: yformat.UpdateRanges) -> bool:
        """Take the next update; False (from then on) once one is out of order."""
        if not self.in_order:
            return False
        known = self._known
        for group in ranges.groups:
            for struct in group:
                if struct.clock > known.get(struct.client, 0) or any(
                    clock >= known.get(client, 0) for client, clock in struct.needs
                ):
                    self.in_order = False
                    return False
                known[struct.client] = max(known.get(struct.client, 0), struct.end)
        if any(end > known.get(client, 0) for client, _, end in ranges.deletes):
            self.in_order = False
        return self.in_order


def _apply_merged(
    replica: Replica,
    updates: Sequence[UpdateRecord],
    meter: CpuMeter | None = None,
    checks: yformat.CheckedUpdates | None = None,
) -> bool:
    """Apply a run of logged updates as one, when that is sure to give what
    applying them in turn gives: nothing waits, and the updates are in order
    (LogOrder), so no update would have waited on its way in. (pycrdt's cost per
    applied update grows with the document; one merged update costs about one.)
    False: nothing was applied."""
    if len(updates) < 2 or replica.waiting is not None:
        return False
    order = LogOrder(replica.state())
    check = yformat.check_update if checks is None else checks.check
    for index, record in enumerate(updates):
        try:
            ranges = check(record.data)
        except yformat.FormatError:
            return False  # applied in turn, it gets its own error
        if meter is not None and index % 100 == 99:
            meter.check()
        if not order.take(ranges):
            return False
    apply_in_order(replica, updates, meter)
    return True


def apply_in_order(
    replica: Replica, updates: Sequence[UpdateRecord], meter: CpuMeter | None = None
) -> None:
    """Apply logged updates known to be in order from the replica's state, with
    nothing waiting (LogOrder, from its state vector), as merged runs. Raises
    StoreError."""
    # In runs of at most MERGED_BYTES: a merged update keeps the content of what
    # later updates of the run delete, which applying them in turn would let go.
    chunks: list[list[UpdateRecord]] = [[]]
    size = 0
    for record in updates:
        if chunks[-1] and (
            size + len(record.data) > MERGED_BYTES or len(chunks[-1]) >= MERGED_UPDATES
        ):
            chunks.append([])
            size = 0
        chunks[-1].append(record)
        size += len(record.data)
    for index, chunk in enumerate(chunks):
        if not chunk:
            continue
        try:
            data = [record.data for record in chunk]
            replica.apply(crdt.merge(data) if len(data) > 1 else data[0], bounded=False)
        except InvalidUpdate:
            # Refused before anything changed: the rest in turn (each with its error).
            for record in (r for rest in chunks[index:] for r in rest):
                apply_stored(replica, record)
            return
        if meter is not None:
            meter.check()


def _apply_checkpoint(replica: Replica, checkpoint: Checkpoint, data: bytes) -> None:
    try:
        replica.apply(data, bounded=False)
    except InvalidUpdate as exc:
        raise StoreError(
            f"{checkpoint.doc!r}: the checkpoint at seq {checkpoint.seq} cannot be applied: "
            f"{exc.message}"
        ) from None


async def replica_at(store: Store, doc: str, seq: int | None = None) -> tuple[int, Replica]:
    """``(seq, replica)``: the document after update ``seq`` (default: the latest).
    ``seq`` is clamped to the document's head."""
    sources = await gather_sources(store, doc, seq)
    loop = asyncio.get_running_loop()
    replica = await loop.run_in_executor(
        None, rebuild, sources.snapshot, sources.updates, sources.chain
    )
    return sources.seq, replica


def checkpoint_chain(
    start: int, checkpoints: Sequence[Checkpoint]
) -> tuple[int, tuple[Checkpoint, ...]]:
    """The longest way from version ``start`` (or from the empty document, 0)
    through ``checkpoints`` (by seq), each based on the one before: ``(where it
    starts, the chain)``."""
    reached: dict[int, tuple[int, tuple[Checkpoint, ...]]] = {start: (start, ()), 0: (0, ())}
    best = reached[start]
    for checkpoint in checkpoints:
        came = reached.get(checkpoint.base_seq)
        if came is None:
            continue
        reached[checkpoint.seq] = (came[0], (*came[1], checkpoint))
        best = reached[checkpoint.seq]
    return best


async def gather_sources(
    store: Store, doc: str, seq: int | None, *, budget: ReadBudget | None = None
) -> Sources:
    """What makes the version after ``seq``: the nearest snapshot, the checkpoints
    after it, the log after them. Raises NotRetained rather than build a version
    from anything less than all of it; BudgetExceeded when what it reads (and the
    rebuild would apply) is more than ``budget`` allows, before the log is read
    past it."""
    doing = f"rebuilding the version at seq {seq}" if seq is not None else "rebuilding the document"
    nearest = snapshot = await charged_snapshot(store, doc, seq, budget, doing)
    base = snapshot.seq if snapshot else 0
    checkpoints = await store.checkpoints(doc, after_seq=base, until_seq=seq)
    if budget is not None:
        budget.charge(doing, bytes_=sum(len(c.data) + len(c.waiting) for c in checkpoints))
    begins, chain = checkpoint_chain(base, checkpoints)
    if chain:
        base = chain[-1].seq
        if begins == 0:
            snapshot = None  # the chain starts from the empty document
    updates = await read_log(store, doc, base, seq, budget, doing)
    if updates and updates[0].seq != base + 1:
        raise NotRetained(doc, seq if seq is not None else updates[-1].seq, updates[0].seq - 1)
    if not updates and snapshot is None and not chain and seq != 0:
        first = await retained_from(store, doc)
        if first > 0 and (seq is None or seq < first):
            raise NotRetained(doc, seq or 0, first)
    return Sources(snapshot, chain, updates, nearest)


async def charged_snapshot(
    store: Store, doc: str, at_or_before_seq: int | None, budget: ReadBudget | None, doing: str
) -> SnapshotRecord | None:
    """The newest snapshot at or before ``at_or_before_seq`` (None: the newest),
    charged to ``budget`` whole: the store reads all it holds, whatever is used."""
    snapshot = await store.latest_snapshot(doc, at_or_before_seq=at_or_before_seq)
    if budget is not None and snapshot is not None:
        held = (snapshot.data, snapshot.waiting or b"", snapshot.authors or b"")
        budget.charge(doing, bytes_=sum(len(part) for part in held))
    return snapshot


async def read_log(
    store: Store,
    doc: str,
    after_seq: int,
    until_seq: int | None,
    budget: ReadBudget | None,
    doing: str,
) -> list[UpdateRecord]:
    """The log entries ``after_seq < seq <= until_seq``, charged to ``budget``:
    read no further than it allows (BudgetExceeded past it)."""
    if budget is None:
        return await store.read_updates(doc, after_seq=after_seq, until_seq=until_seq)
    # One more than the budget allows: a range that holds more is refused unread.
    updates = await store.read_updates(
        doc, after_seq=after_seq, until_seq=until_seq, limit=max(0, budget.updates_left) + 1
    )
    budget.charge(doing, updates=len(updates), bytes_=sum(len(u.data) for u in updates))
    return updates


async def state_at(
    store: Store,
    doc: str,
    seq: int | None = None,
    *,
    waiting: bool = True,
    budget: ReadBudget | None = None,
    executor: Executor | None = None,
) -> tuple[int, bytes]:
    """``(seq, state)``: the document's state after update ``seq`` (default: the
    latest) as one Yjs update, what waits for dependencies included (``waiting``
    False: only what is integrated, what its peers hold). Rebuilt and encoded on
    ``executor`` (default: the loop's; a process pool will do: what it runs and
    is given can be pickled), charging ``budget``."""
    sources = await gather_sources(store, doc, seq, budget=budget)
    if sources.seq == 0:
        return 0, EMPTY_UPDATE
    loop = asyncio.get_running_loop()
    return sources.seq, await loop.run_in_executor(executor, _encoded, sources, waiting, budget)


def _encoded(sources: Sources, waiting: bool, budget: ReadBudget | None) -> bytes:
    meter = cpu_meter(budget, f"rebuilding the version at seq {sources.seq}")
    replica = rebuild(sources.snapshot, sources.updates, sources.chain, meter)
    state = replica.encode() if waiting else replica.doc.get_update()
    if meter is not None:
        meter.check()
    return state


LOG_CHUNK = 100  # log entries read at once for a page bounded in bytes


def update_bytes(record: UpdateRecord) -> int:
    return len(record.data)


async def page_of_updates(
    store: Store,
    doc: str,
    *,
    after_seq: int = 0,
    until_seq: int | None = None,
    limit: int = 100,
    max_bytes: int | None = None,
    size_of: Callable[[UpdateRecord], int] = update_bytes,
) -> tuple[list[UpdateRecord], bool]:
    """One page of the update log after ``after_seq`` (up to ``until_seq``), oldest
    first: at most ``limit`` entries, ending early once the next would take it past
    ``max_bytes`` as ``size_of`` counts them (at least one is in it, so that paging
    goes on; the caller checks that one fits where it goes); and whether more
    follow. The HTTP history route and the native protocol's history pages."""
    page: list[UpdateRecord] = []
    size = 0
    while True:
        want = limit + 1 - len(page)
        if max_bytes is not None:
            want = min(LOG_CHUNK, want)  # read no further ahead than a chunk
        chunk = await store.read_updates(doc, after_seq=after_seq, until_seq=until_seq, limit=want)
        for record in chunk:
            cost = size_of(record)
            if len(page) == limit or (max_bytes is not None and page and size + cost > max_bytes):
                return page, True
            page.append(record)
            size += cost
        if len(chunk) < want:
            return page, False
        after_seq = chunk[-1].seq


@dataclass(frozen=True, slots=True)
class Version:
    """A document's content after update ``seq`` (accepted at ``time_s``)."""

    seq: int
    time_s: float | None
    kinds: dict[str, str]
    content: dict[str, Any]


def _render(sources: Sources, budget: ReadBudget | None = None) -> Version:
    meter = cpu_meter(budget, f"rendering the version at seq {sources.seq}")
    replica = rebuild(sources.snapshot, sources.updates, sources.chain, meter)
    try:
        kinds, values = render.content(replica.doc.get_update())
    except FormatError as exc:  # the strict reader refuses what pycrdt wrote back
        raise StoreError(f"the rebuilt document cannot be read: {exc}") from None
    if meter is not None:
        meter.check()
    return Version(0, None, kinds, values)


async def version_at(
    store: Store,
    doc: str,
    seq: int | None = None,
    *,
    budget: ReadBudget | None = None,
    executor: Executor | None = None,
) -> Version:
    """The document's content after update ``seq`` (default: the latest), rendered
    as JSON (collab.core.render). ``seq`` is clamped to the document's head.
    ``budget`` and ``executor`` as for :func:`state_at`."""
    sources = await gather_sources(store, doc, seq, budget=budget)
    at = sources.seq
    if sources.updates:
        time_s: float | None = sources.updates[-1].time_s
    elif at > 0:
        own = await store.read_updates(doc, after_seq=at - 1, until_seq=at, limit=1)
        time_s = own[0].time_s if own else None
    else:
        time_s = None
    loop = asyncio.get_running_loop()
    version = await loop.run_in_executor(executor, _render, sources, budget)
    return Version(at, time_s, version.kinds, version.content)


def timestamp_of(text: str) -> float:
    """Unix seconds of an ISO 8601 time; one without a zone is UTC. Raises ValueError."""
    moment = datetime.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


async def seq_at_time(store: Store, doc: str, time_s: float, head_seq: int) -> int:
    """The last update accepted at or before ``time_s`` (0: none was), by binary
    search over seqs: times follow seq order (up to the clock skew between
    instances, under which the answer is one of the updates about then). Raises
    NotRetained for a time before the history kept."""
    first = await retained_from(store, doc)
    low, high = first, head_seq  # the answer lies in [low, high]
    while low < high:
        middle = (low + high + 1) // 2
        found = await store.read_updates(doc, after_seq=middle - 1, until_seq=middle, limit=1)
        if found and found[0].time_s <= time_s:
            low = middle
        else:
            high = middle - 1
    if low == first > 0:
        # The update at ``first`` is gone with the history before it; its snapshot,
        # taken after it, says whether the time is surely past it.
        kept = await store.latest_snapshot(doc, at_or_before_seq=first)
        if kept is None or kept.seq != first or kept.time_s > time_s:
            raise NotRetained(doc, first, first)
    return low


@dataclass(frozen=True, slots=True)
class Change:
    """Consecutive updates of one author, each within ``gap_s`` of the one before.
    The author is the user, or without one (no access tokens) the client label:
    each guest's updates are a change of their own."""

    first_seq: int
    last_seq: int
    first_time_s: float
    last_time_s: float
    user: str | None
    clients: tuple[str, ...]
    updates: int
    bytes: int


def _author_key(record: UpdateRecord) -> tuple[str | None, str | None]:
    """Who a change belongs to: the user, or for guests (no user) the client label,
    which names the guest (the page sends ``web:NAME``, again after a rename)."""
    if record.author.user is not None:
        return (record.author.user, None)
    return (None, record.author.client)


async def changes(
    store: Store,
    doc: str,
    *,
    after_seq: int = 0,
    limit: int = 100,
    gap_s: float = 60.0,
    page: int = 5000,
    max_rows: int | None = None,
) -> tuple[list[Change], int | None]:
    """A coarse timeline: at most ``limit`` changes after ``after_seq``, and the
    seq to continue from (None at the end of the log). A change ends where another
    author's update comes, or after a pause longer than ``gap_s``; and where the
    ``max_rows`` log entries one call may read run out: the timeline goes on from
    there (one user's long run then shows as consecutive changes)."""
    found: list[Change] = []
    # The change being gathered: its first and last update, count, bytes, clients
    # (only these: one user's run may span the whole log).
    first: UpdateRecord | None = None
    last: UpdateRecord | None = None
    count = size = 0
    clients: dict[str, None] = {}

    def close() -> None:
        nonlocal first, count, size
        assert first is not None and last is not None
        found.append(
            Change(
                first.seq,
                last.seq,
                first.time_s,
                last.time_s,
                first.author.user,
                tuple(clients)[:MAX_CLIENTS_LISTED],
                count,
                size,
            )
        )
        first, count, size = None, 0, 0
        clients.clear()

    cursor = after_seq
    rows_left = max_rows
    while True:
        want = page if rows_left is None else min(page, rows_left)
        if want <= 0:
            if first is not None:
                close()  # cut where the reading stops: the next call goes on after it
            return found, cursor
        records = await store.read_updates(doc, after_seq=cursor, limit=want)
        if rows_left is not None:
            rows_left -= len(records)
        for record in records:
            if (
                last is not None
                and first is not None
                and (
                    _author_key(record) != _author_key(last) or record.time_s - last.time_s > gap_s
                )
            ):
                close()
                if len(found) == limit:
                    return found, found[-1].last_seq
            if first is None:
                first = record
            last = record
            count += 1
            size += len(record.data)
            if record.author.client is not None and len(clients) < MAX_CLIENTS_LISTED:
                clients[record.author.client] = None
        if len(records) < want:
            break
        cursor = records[-1].seq
    if first is not None:
        close()
    return found, None
