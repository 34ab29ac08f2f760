"""Where a document's long items are, and what an update costs pycrdt to cut them.

pycrdt (Yrs 0.28) cuts an item in two by copying both halves: a list of values at
6-26 ns a value (more for longer lists), a string at about a 64th of that per
UTF-16 unit. An update cuts an item wherever one of its items is inserted inside it
(its origin or right origin names a clock inside it) and at each end of a deleted
range inside it, once per cut, in the order it integrates them. So one update of
80 KB, 20,000 insertions each into the middle of a 200,000-value item, costs 5 s
of pycrdt's time, holding the GIL: every document of the instance waits. (Yjs
copies the same way.) Deletions are applied level by level
(:func:`collab.wire.ysplit.leveled`), which copies an item about log2 of the ranges
in it times; insertions must be integrated in clock order, so their cost is only
known, not lowered.

:class:`LongItems` keeps, for one document, an upper bound of where its long items
are: runs of values or characters of one client that pycrdt may hold as one item
(each item continuing the one before it, its origin that one's last clock, as
pycrdt merges them, until something cuts the run), learnt from each integrated
update. :meth:`LongItems.cost` plays an update's cuts against those runs. The
replica refuses an update that costs more than its budget, before anything
changes.

A cut also moves blocks: pycrdt keeps each client's items (its blocks) in one
array, in clock order, and a cut inserts the new half into it, moving every block
after it along (0.4-0.9 ns each, a copied value costing 2.6-13 ns); deleted
ranges move them again as their blocks are joined. So 2,000 cuts of two-value
items of a client holding a million blocks cost 1.6 s, whatever the length of
what they cut. :class:`LongItems` keeps an upper bound of each client's blocks
too, and what it has deleted, and costs each cut and each range deleted anew the
blocks it may move (a client that reconnects sends every deletion it knows of:
deleting again moves nothing).

:class:`CutMeter` holds the edits the server makes on a copy of a document
(JSON writes, restores) to the same budget, as they are made.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from array import array
from collections.abc import Iterator, Sequence
from typing import NamedTuple

from collab.errors import ErrorCode, InvalidUpdate
from collab.wire.yformat import ANY, GC, ID, STRING, FormatError, Struct, UpdateRanges, check_update
from collab.wire.ysplit import LEVELED_FROM, deletion_levels

# What cutting one unit of an item costs, relative: a value, a UTF-16 unit.
UNIT_COSTS = {ANY: 64, STRING: 1}
VALUE_COST = UNIT_COSTS[ANY]
# Shorter runs are not kept: cutting one costs little (256 values, about 2 µs),
# and what an update can cut of them is bounded by its size.
LONG_FROM = 256 * VALUE_COST
# What moving one block along a client's array of blocks costs, in the same units.
BLOCK_COST = 1
# Where a client's blocks are is kept by buckets of clocks, 2**PLACE_BITS each: a
# cut moves those after it only.
PLACE_BITS = 10


class Run(NamedTuple):
    """Clocks ``start`` to ``end`` (exclusive) of one client, that pycrdt may
    hold as one item of units costing ``unit_cost`` each."""

    start: int
    end: int
    unit_cost: int

    @property
    def cost(self) -> int:
        return (self.end - self.start) * self.unit_cost


class _ClientRuns:
    """One client's long runs, in clock order. Never changed once made (a change
    makes a new one): a thread may read it while the event loop learns an update
    (Replica.prepare)."""

    __slots__ = ("runs", "starts")

    def __init__(self, runs: Sequence[Run] = ()) -> None:
        self.runs: tuple[Run, ...] = tuple(runs)
        self.starts: list[int] = [run.start for run in self.runs]  # for bisection

    def find(self, clock: int) -> int | None:
        """The index of the run ``clock`` is strictly inside of (a cut there would
        split it), if any."""
        at = bisect.bisect_right(self.starts, clock) - 1
        if at >= 0 and self.runs[at].start < clock < self.runs[at].end:
            return at
        return None

    def with_run(self, run: Run) -> _ClientRuns:
        """These runs and ``run``, which may lengthen the one that starts where it does."""
        at = bisect.bisect_left(self.starts, run.start)
        same = at < len(self.runs) and self.starts[at] == run.start
        return _ClientRuns((*self.runs[:at], run, *self.runs[at + same :]))

    def replaced(self, parts: dict[int, list[Run]]) -> _ClientRuns:
        """These runs with run ``i`` replaced by ``parts[i]`` (none: dropped)."""
        runs: list[Run] = []
        for at, run in enumerate(self.runs):
            runs.extend(parts.get(at, (run,)))
        return _ClientRuns(runs)


Cut = tuple[int, int]  # (client, clock): between that client's clock - 1 and clock


def _inside(spans: list[tuple[int, int]], clock: int) -> bool:
    """Whether ``clock`` is in one of ``spans`` (``(start, end)``, in clock order)."""
    at = bisect.bisect_right(spans, (clock, float("inf"))) - 1
    return at >= 0 and spans[at][0] <= clock < spans[at][1]


def cuts_of(ranges: UpdateRanges) -> list[Cut]:
    """Where an update cuts items, in the order pycrdt cuts them: at its items'
    origins and right origins as it integrates them, then at both ends of each
    deleted range (level by level when it is leveled). Not where one of its own
    items starts or ends: no item lies across those while it is integrated (pycrdt
    merges an appended item into the one before it only once all are in)."""
    bounds: set[Cut] = set()
    for group in ranges.groups:
        for struct in group:
            bounds.add((struct.client, struct.clock))
            bounds.add((struct.client, struct.end))
    cuts: list[Cut] = []
    for group in ranges.groups:
        for struct in group:
            if struct.origin is not None:
                cuts.append((struct.origin[0], struct.origin[1] + 1))
            if struct.right_origin is not None:
                cuts.append(struct.right_origin)
    if ranges.deletes:
        levels = (
            deletion_levels(ranges.deletes)
            if len(ranges.deletes) >= LEVELED_FROM
            else [ranges.deletes]
        )
        for level in levels:
            for client, start, end in level:
                cuts += ((client, start), (client, end))
    return [cut for cut in cuts if cut not in bounds] if bounds else cuts


def _cutting_cost(run: Run, clocks: list[int]) -> int:
    """What cutting ``run`` at ``clocks``, in that order (each once), costs: each cut
    copies the part of the run it falls in, between the nearest earlier cuts on
    either side. Found backwards in O(n log n): the last cut's part lies between
    its neighbours among all the cuts; with it taken out, so does the one before's."""
    # A linked list of the sorted cuts, with the run's ends as nodes 0 and n + 1.
    bounds = [run.start, *sorted(clocks), run.end]
    node = {clock: at for at, clock in enumerate(bounds)}
    left = [at - 1 for at in range(len(bounds))]
    right = [at + 1 for at in range(len(bounds))]
    total = 0
    for clock in reversed(clocks):
        at = node[clock]
        total += bounds[right[at]] - bounds[left[at]]
        right[left[at]] = right[at]
        left[right[at]] = left[at]
    return total * run.unit_cost


# The run a client's last item is part of, whatever its length (the client's next
# item may lengthen it): (start, end, unit cost, right origin, closed). pycrdt
# merges an item into the one before it only if both name the same right origin,
# so a run is all of one right origin. ``closed``: whether the next item, even
# continuing the run, is a block of its own: OPEN, CLOSED (an item of another
# client was put right after the last one, between the two; or the last one is
# deleted) or KEYED (the run is a map entry's overwrites: each deletes the one
# before as it is integrated). A tuple: one is made for every item.
Tail = tuple[int, int, int, ID | None, int]
OPEN, CLOSED, KEYED = 0, 1, 2


def _closed(end: int) -> Tail:
    """The tail of a client whose last item nothing merges into."""
    return (end, end, 0, None, CLOSED)


class _Blocks(NamedTuple):
    """What an update does to one client's array of blocks."""

    added: int  # blocks it may add: its items pycrdt merges into none, its splits
    items: int  # its items (appended at the end of the array, moved by every cut)
    cuts: list[int]  # where its items may split a block (in any order)
    splits: list[int]  # where its deleted ranges may split a block (in clock order)
    joins: list[int]  # where its deleted ranges may join blocks, once deleted

    def moves(self, places: array[int] | None, extra: int = 0) -> int:
        """How many blocks it may move along: every block after each cut, split
        and join (of those there are, by ``places``, those an update before it
        adds, ``extra``, and its own). Its items' cuts come in any order (each may
        move all its own new blocks); its deletions are taken in clock order, level
        by level (ysplit.leveled), so a split moves none of the blocks the splits
        of its level made (they are before it) and about half of those of earlier
        levels."""
        cuts, splits, joins = len(self.cuts), len(self.splits), len(self.joins)
        later = self.items + extra  # blocks at the end of the array
        moved = _after(places, self.cuts + self.splits + self.joins)
        moved += cuts * later + cuts * cuts // 2
        later += cuts
        moved += splits * later + splits * splits // 4
        return moved + joins * (later + splits // 2)


def _after(places: array[int] | None, clocks: list[int]) -> int:
    """The blocks ``places`` puts at or after each of ``clocks`` (the whole bucket
    of each clock counted), summed."""
    if not places or not clocks:
        return 0
    suffix = list(itertools.accumulate(reversed(places)))  # blocks from a bucket on
    last = len(places) - 1
    return sum(suffix[last - at] for clock in clocks if (at := clock >> PLACE_BITS) <= last)


def _placed(places: array[int] | None, clocks: list[int]) -> array[int]:
    """``places`` with a block put at each of ``clocks``, as new places (a thread
    may be reading the old ones)."""
    places = array("I", places or ())
    top = max(clocks) >> PLACE_BITS
    if top >= len(places):
        places.extend([0] * (top + 1 - len(places)))
    for clock in clocks:
        places[clock >> PLACE_BITS] += 1
    return places


class _Reading(NamedTuple):
    """What LongItems reads of an update (once: costing and learning it read the
    same ranges)."""

    ranges: UpdateRanges
    made: dict[int, list[Run]]  # the long runs its items make or lengthen, by client
    tails: dict[int, Tail]  # its clients' tails once it is integrated
    cuts: list[Cut]
    added: dict[int, int]  # the blocks it may add, by client
    placed: dict[int, list[int]]  # where the blocks it may add start, by client
    blocks: dict[int, _Blocks]  # what it does to its clients' blocks (none: appends)
    after: set[Cut]  # where another client's item is put right after a client's


class LongItems:
    """A document's long runs and its clients' blocks (see the module)."""

    def __init__(self) -> None:
        self._runs: dict[int, _ClientRuns] = {}
        self._tails: dict[int, Tail] = {}
        self._blocks: dict[int, int] = {}  # an upper bound of each client's blocks
        self._places: dict[int, array[int]] = {}  # where they may start (by bucket)
        # What each client has deleted, as the bounds of its deleted ranges, in clock
        # order (4 bytes a bound): deleting it again moves no block.
        self._deleted: dict[int, array[int]] = {}
        self._last: _Reading | None = None

    def copy(self) -> LongItems:
        """These runs and blocks, as a LongItems of its own (to follow a copy of
        the document)."""
        copy = LongItems()
        copy._runs, copy._tails, copy._blocks = (
            dict(self._runs),
            dict(self._tails),
            dict(self._blocks),
        )
        copy._places = dict(self._places)  # (never changed once made)
        copy._deleted = dict(self._deleted)
        return copy

    def blocks(self, client: int) -> int:
        """The most blocks pycrdt may hold for ``client``."""
        return self._blocks.get(client, 0)

    def place(self, places: dict[int, dict[int, int]]) -> None:
        """Where the blocks of a state learnt in part start (its structs kept out
        of its ranges, which learn put at each client's end): for each client,
        how many start in each bucket of clocks (``clock >> PLACE_BITS``), that
        state being all the document holds of it."""
        for client, buckets in places.items():
            counts = array("I", bytes(4 * (max(buckets) + 1)))
            for bucket, count in buckets.items():
                counts[bucket] = count
            self._places[client] = counts

    def cost(self, ranges: UpdateRanges, then: UpdateRanges | None = None) -> int:
        """What integrating an update would cost pycrdt in cuts of long items and
        moves of blocks, in units of UNIT_COSTS (an upper bound): for each cut, in
        pycrdt's order, the length of what it cuts (as earlier cuts of the update
        left it), and the blocks of its client it may move.

        ``then``: what integrating the update releases of what waits, integrated
        right after it, costed the same way (against the long items there are,
        those the update makes, and its own)."""
        reading = self._read(ranges)
        readings = [reading]
        if then is not None:
            readings.append(self._read(then, tails={**self._tails, **reading.tails}))
        if not any(step.cuts for step in readings):
            return 0  # appended: nothing cut, no block moved (most updates)
        moved = 0
        added: dict[int, int] = {}  # blocks the steps before add, by client
        for step in readings:
            for client, change in step.blocks.items():
                moved += change.moves(self._places.get(client), added.get(client, 0))
            for client, count in step.added.items():
                added[client] = added.get(client, 0) + count
        if not self._runs and not any(step.made for step in readings):
            return moved * BLOCK_COST  # no long item to cut
        made: dict[int, _ClientRuns] = {}
        by_run: dict[tuple[int, int], tuple[Run, dict[int, None]]] = {}
        for step in readings:
            for client, runs in step.made.items():
                known = made.get(client, _ClientRuns())
                for run in runs:
                    known = known.with_run(run)
                made[client] = known
            for client, clock in step.cuts:
                for runs in (made, self._runs):
                    client_runs = runs.get(client)
                    if client_runs is not None and (at := client_runs.find(clock)) is not None:
                        run = client_runs.runs[at]
                        # The run's cuts in order, each once (a dict keeps insertion order).
                        by_run.setdefault((client, run.start), (run, {}))[1][clock] = None
                        break
        cutting = sum(_cutting_cost(run, list(clocks)) for run, clocks in by_run.values())
        return cutting + moved * BLOCK_COST

    def learn(self, ranges: UpdateRanges) -> None:
        """Take note of an integrated update: the runs its items make or lengthen,
        then its cuts (each cut run is two runs from then on: pycrdt never merges
        them again, something now lies between them) and its deletions (a deleted
        run's values are gone; what is left of it costs nothing to cut), and the
        blocks it adds."""
        reading = self._read(ranges)
        self._last = None
        runs, tails = self._runs, self._tails
        for client, made in reading.made.items():
            client_runs = runs.get(client, _ClientRuns())
            for run in made:
                client_runs = client_runs.with_run(run)
            runs[client] = client_runs
        tails.update(reading.tails)
        for client, clock in reading.after:
            tail = tails.get(client)
            if tail is not None and tail[1] == clock and tail[4] == OPEN:
                tails[client] = (*tail[:4], CLOSED)
        for client, added in reading.added.items():
            self._blocks[client] = self._blocks.get(client, 0) + added
            placed = reading.placed.get(client, [])
            if len(placed) < added:  # of a state read in part: put at its end
                end = max((end for c, _start, end in ranges.structs if c == client), default=0)
                placed = [*placed, *[end] * (added - len(placed))]
            if placed:
                self._places[client] = _placed(self._places.get(client), placed)
        cuts: dict[int, list[int]] = {}
        for client, clock in reading.cuts:
            tail = tails.get(client)
            if client in runs or (tail is not None and tail[0] < clock < tail[1]):
                cuts.setdefault(client, []).append(clock)
        for client, clocks in cuts.items():
            self._cut(client, sorted(set(clocks)))
        if ranges.deletes:
            for client, spans in _spans(ranges.deletes).items():
                self._drop_deleted(client, spans)
                self._deleted[client] = _with_deleted(self._deleted.get(client), spans)

    def _read(self, ranges: UpdateRanges, tails: dict[int, Tail] | None = None) -> _Reading:
        """Read an update (kept for the next call, which may be learn's), or, given
        the ``tails`` it would find, read it as if they were the replica's."""
        last = self._last
        if tails is None and last is not None and last.ranges is ranges:
            return last
        keep, known = tails is None, self._tails if tails is None else tails
        groups = ranges.groups
        structs = groups[0] if len(groups) == 1 else [s for group in groups for s in group]
        deleted = _spans(ranges.deletes) if ranges.deletes else {}
        made: dict[int, list[Run]] = {}
        tails = {}
        items: dict[int, int] = {}  # client -> its items that carry something
        merging: list[Cut] = []  # items that continue the block before them
        cuts: set[Cut] = set()  # where its items may split a block
        after: set[Cut] = set()  # where an item of another client is put after one
        counted = bool(ranges.counts)  # (else its items are counted here)
        for struct in structs:
            client = struct.client
            if struct.skip:
                continue
            if not counted:
                items[client] = items.get(client, 0) + 1
            if (origin := struct.origin) is not None and origin[0] != client:
                after.add((origin[0], origin[1] + 1))
            tail = tails.get(client) or known.get(client)
            unit_cost = UNIT_COSTS.get(struct.kind)
            if unit_cost is None:
                tails[client] = _closed(struct.end)
                if struct.kind != GC:
                    _name(cuts, struct)
                continue
            if (
                tail is not None
                and tail[1] == struct.clock
                and tail[2] == unit_cost
                and struct.origin == (client, struct.clock - 1)
                and struct.right_origin == tail[3]
                and not struct.keyed
            ):
                # Merged into the block before it (its origin and right origin are
                # where that block's are), unless something lies between the two or
                # one of them is deleted and the other not.
                spans = deleted.get(client)
                if not (
                    tail[4] != OPEN
                    or (
                        spans is not None
                        and _inside(spans, struct.clock - 1) != _inside(spans, struct.clock)
                    )
                ):
                    merging.append((client, struct.clock))
                tail = (
                    tail[0],
                    struct.end,
                    unit_cost,
                    tail[3],
                    KEYED if tail[4] == KEYED else OPEN,
                )
            else:
                closed = KEYED if struct.keyed else OPEN
                tail = (struct.clock, struct.end, unit_cost, struct.right_origin, closed)
                _name(cuts, struct)
            tails[client] = tail
            if (tail[1] - tail[0]) * unit_cost >= LONG_FROM:
                run = Run(*tail[:3])
                client_made = made.setdefault(client, [])
                if client_made and client_made[-1].start == run.start:
                    client_made[-1] = run
                else:
                    client_made.append(run)
        # pycrdt merges an item only into its neighbour: not when an item of
        # another client is put right after the one before it.
        joined: dict[int, int] = {}  # client -> its items pycrdt merges into the one before
        merged = set()
        for client, clock in merging:
            if (client, clock) not in after:
                joined[client] = joined.get(client, 0) + 1
                merged.add((client, clock))
        placed: dict[int, list[int]] = {}  # where its items that are blocks start
        for struct in structs:
            if not struct.skip and (struct.client, struct.clock) not in merged:
                placed.setdefault(struct.client, []).append(struct.clock)
        if len(ranges.counts) == 1:  # what a group held, its structs kept out too
            items = dict(ranges.counts)
        elif ranges.counts:
            items = {}
            for client, count in ranges.counts:
                items[client] = items.get(client, 0) + count
        if not cuts and not ranges.deletes:  # appended (most updates): nothing moved
            blocks: dict[int, _Blocks] = {}
            added = {client: count - joined.get(client, 0) for client, count in items.items()}
        else:
            blocks = _blocks(ranges, structs, items, joined, cuts, tails, known, self._deleted)
            added = {client: change.added for client, change in blocks.items()}
            for client, change in blocks.items():
                placed.setdefault(client, []).extend(change.cuts + change.splits)
        reading = _Reading(ranges, made, tails, cuts_of(ranges), added, placed, blocks, after)
        if keep:
            self._last = reading
        return reading

    def _cut(self, client: int, clocks: list[int]) -> None:
        """Cut the client's runs (and tail) at ``clocks``, in clock order."""
        tail = self._tails.get(client)
        if tail is not None:
            inside = [clock for clock in clocks if tail[0] < clock < tail[1]]
            if inside:
                self._tails[client] = (inside[-1], *tail[1:])
        client_runs = self._runs.get(client)
        if client_runs is None:
            return
        by_run: dict[int, list[int]] = {}
        for clock in clocks:
            at = client_runs.find(clock)
            if at is not None:
                by_run.setdefault(at, []).append(clock)
        if not by_run:
            return
        parts: dict[int, list[Run]] = {}
        for at, inside in by_run.items():
            run = client_runs.runs[at]
            parts[at] = [
                Run(start, end, run.unit_cost)
                for start, end in itertools.pairwise([run.start, *inside, run.end])
                if (end - start) * run.unit_cost >= LONG_FROM
            ]
        self._keep(client, client_runs.replaced(parts))

    def _drop_deleted(self, client: int, spans: list[tuple[int, int]]) -> None:
        """Forget the runs inside ``spans`` (deleted ranges, in clock order)."""
        tail = self._tails.get(client)
        if tail is not None and _inside(spans, tail[1] - 1):
            self._tails[client] = _closed(tail[1])  # its last item is deleted
        client_runs = self._runs.get(client)
        if client_runs is None:
            return
        dropped: dict[int, list[Run]] = {}
        for start, end in spans:
            at = bisect.bisect_left(client_runs.starts, start)
            while at < len(client_runs.runs) and client_runs.runs[at].end <= end:
                dropped[at] = []
                at += 1
        if dropped:
            self._keep(client, client_runs.replaced(dropped))

    def _keep(self, client: int, client_runs: _ClientRuns) -> None:
        if client_runs.runs:
            self._runs[client] = client_runs
        else:
            del self._runs[client]

    def __len__(self) -> int:
        return sum(len(client_runs.runs) for client_runs in self._runs.values())


class CutMeter:
    """What changes made on a copy of a document with pycrdt directly (the server's
    own edits: JSON writes, restores) cost it in cuts, transaction by transaction as
    they are made: each change is made whole, before anything can cost it, so the
    changes of one request together are held to one update's budget. pycrdt cuts
    and moves blocks on the copy as on the live document, holding the GIL: 1,000
    JSON deletions of one value each in a list of a million took 7 s (26 s with the
    event loop wanting the GIL too, which ran at a fifth of its speed), their
    update cheap to apply once made."""

    def __init__(self, long_items: LongItems, max_cost: int, doc: str | None = None) -> None:
        self._long_items = long_items
        self._max_cost = max_cost
        self._doc = doc
        self.cost = 0

    def add(self, update: bytes) -> None:
        """Count what one transaction made (its update, as pycrdt wrote it). Raises
        InvalidUpdate (``too_large``) once the changes so far cost more than the
        budget: stop making them."""
        try:
            ranges = check_update(update)
        except FormatError:
            return  # the replica refuses what pycrdt makes of it, if anything
        self.cost += self._long_items.cost(ranges)
        self._long_items.learn(ranges)
        if self.cost > self._max_cost:
            raise InvalidUpdate(
                f"the changes cost past max_cut_values ({self._max_cost // VALUE_COST:,}) in "
                "cuts of long runs of values or text and moves of blocks: "
                f"{self.cost // VALUE_COST:,} values' copies; make fewer at once",
                code=ErrorCode.TOO_LARGE,
                doc=self._doc,
            )


def _blocks(
    ranges: UpdateRanges,
    structs: Sequence[Struct],
    items: dict[int, int],
    joined: dict[int, int],
    cuts: set[Cut],
    tails: dict[int, Tail],
    known: dict[int, Tail],
    deleted: dict[int, array[int]],
) -> dict[int, _Blocks]:
    """What an update does to its clients' blocks (see _Blocks): its items
    (``items``, of which ``joined`` are merged into the block before), what they
    may split (at ``cuts``) and what its deletions may split and join: what they
    delete anew (a client sends every deletion it knows of as it syncs), split
    where it does not border on what was deleted already, and joined to it.
    ``tails``: the tails of its clients once it is integrated, ``known`` of the
    others; ``deleted``: the bounds of what each client has deleted."""
    splits: set[Cut] = set()  # where its deletions may split a block
    joins: dict[int, list[int]] = {}  # where its deletions may join blocks, by client
    for client, start, end in ranges.deletes:
        for first, last, after_deleted, before_deleted in _anew(deleted.get(client), start, end):
            if not after_deleted:
                splits.add((client, first))
            if not before_deleted:
                splits.add((client, last))
            # Its blocks are joined to one another and to the deleted blocks it
            # borders on (one clock, bordering on none: one block, nothing joined).
            if last - first > 1 or after_deleted or before_deleted:
                joins.setdefault(client, []).append(first)
    # No block is split where one ends: at a client's first clock or its last
    # item's end, or where one of the update's items starts or ends.
    bounds = {(s.client, s.clock) for s in structs} | {(s.client, s.end) for s in structs}

    def splitting(cuts: set[Cut]) -> dict[int, list[int]]:
        by_client: dict[int, list[int]] = {}
        for client, clock in cuts:
            tail = tails.get(client) or known.get(client)
            if clock and (client, clock) not in bounds and (tail is None or tail[1] != clock):
                by_client.setdefault(client, []).append(clock)
        return by_client

    item_cuts, range_splits = splitting(cuts), splitting(splits - cuts)
    blocks: dict[int, _Blocks] = {}
    for client in items.keys() | item_cuts.keys() | range_splits.keys() | joins.keys():
        count, cut = items.get(client, 0), item_cuts.get(client, [])
        split = range_splits.get(client, [])
        added = count - joined.get(client, 0) + len(cut) + len(split)
        blocks[client] = _Blocks(added, count, cut, split, joins.get(client, []))
    return blocks


def _name(cuts: set[Cut], struct: Struct) -> None:
    """Add where an item cuts what is there: after its origin, before its right origin."""
    if (origin := struct.origin) is not None:
        cuts.add((origin[0], origin[1] + 1))
    if struct.right_origin is not None:
        cuts.add(struct.right_origin)


def _anew(bounds: array[int] | None, start: int, end: int) -> Iterator[tuple[int, int, bool, bool]]:
    """The parts of ``[start, end)`` not deleted yet, given the ``bounds`` of what
    is (see LongItems._deleted): ``(start, end, whether what is just before is
    deleted, whether what is just after is)``."""
    if not bounds:
        yield start, end, False, False
        return
    at = bisect.bisect_right(bounds, start)
    first = start
    if at % 2:  # inside a deleted range
        first, at = bounds[at], at + 1
    while first < end:
        after_deleted = at > 0 and bounds[at - 1] == first
        next_deleted = bounds[at] if at < len(bounds) else end + 1
        last = min(end, next_deleted)
        if first < last:
            yield first, last, after_deleted, last == next_deleted
        if next_deleted >= end:
            return
        first, at = bounds[at + 1], at + 2


def _with_deleted(bounds: array[int] | None, spans: list[tuple[int, int]]) -> array[int]:
    """``bounds`` (see LongItems._deleted) with ``spans`` (in clock order) deleted
    too, as new bounds: a thread may be reading the old ones (Replica.prepare).
    Only what is deleted anew is merged in (a sync sends every deletion again)."""
    if not bounds:
        bounds = array("I")
    spans = [(start, end) for span in spans for start, end, _, _ in _anew(bounds, *span)]
    if not spans:
        return bounds
    if len(spans) > 16:  # in one pass
        merged: list[int] = []
        for start, end in heapq.merge(zip(bounds[::2], bounds[1::2], strict=True), spans):
            if merged and start <= merged[-1]:
                merged[-1] = max(merged[-1], end)
            else:
                merged += (start, end)
        return array("I", merged)
    for start, end in spans:
        # The bounds this range touches give way to its own, widened to the
        # ranges it borders on.
        low = bisect.bisect_left(bounds, start)
        high = bisect.bisect_right(bounds, end)
        new = array("I", [start] if low % 2 == 0 else [])
        if high % 2 == 0:
            new.append(end)
        bounds = bounds[:low] + new + bounds[high:]
    return bounds


def _spans(deletes: Sequence[tuple[int, int, int]]) -> dict[int, list[tuple[int, int]]]:
    """Deleted ranges by client, ``(start, end)`` in clock order."""
    spans: dict[int, list[tuple[int, int]]] = {}
    for client, start, end in deletes:
        spans.setdefault(client, []).append((start, end))
    return spans
