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
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from typing import NamedTuple

from collab.wire.yformat import ANY, STRING, UpdateRanges
from collab.wire.ysplit import LEVELED_FROM, deletion_levels

# What cutting one unit of an item costs, relative: a value, a UTF-16 unit.
UNIT_COSTS = {ANY: 64, STRING: 1}
VALUE_COST = UNIT_COSTS[ANY]
# Shorter runs are not kept: cutting one costs little (256 values, about 2 µs),
# and what an update can cut of them is bounded by its size.
LONG_FROM = 256 * VALUE_COST


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


# (start, end, unit cost) of the run a client's last item is part of, whatever its
# length: the client's next item may lengthen it. A tuple, not a Run: one is made
# for every item.
Tail = tuple[int, int, int]


class _Reading(NamedTuple):
    """What LongItems reads of an update (once: costing and learning it read the
    same ranges)."""

    ranges: UpdateRanges
    made: dict[int, list[Run]]  # the long runs its items make or lengthen, by client
    tails: dict[int, Tail]  # its clients' tails once it is integrated
    cuts: list[Cut]


class LongItems:
    """A document's long runs (see the module)."""

    def __init__(self) -> None:
        self._runs: dict[int, _ClientRuns] = {}
        self._tails: dict[int, Tail] = {}
        self._last: _Reading | None = None

    def cost(self, ranges: UpdateRanges, then: UpdateRanges | None = None) -> int:
        """What integrating an update would cost pycrdt in cuts of long items, in
        units of UNIT_COSTS (an upper bound): for each cut, in pycrdt's order, the
        length of what it cuts (as earlier cuts of the update left it).

        ``then``: what may be integrated right after it (what waits, which it may
        release). Its cuts into the long items the update makes or lengthens are
        costed too (its cuts of the others were costed when it came)."""
        reading = self._read(ranges)
        runs = self._runs
        if not reading.made and not any(client in runs for client, _ in reading.cuts):
            return 0  # most updates: nothing long is cut
        made = {client: _ClientRuns(runs) for client, runs in reading.made.items()}
        by_run: dict[tuple[int, int], tuple[Run, dict[int, None]]] = {}

        def play(cuts: list[Cut], *where: dict[int, _ClientRuns]) -> None:
            for client, clock in cuts:
                for runs in where:
                    client_runs = runs.get(client)
                    if client_runs is not None and (at := client_runs.find(clock)) is not None:
                        run = client_runs.runs[at]
                        # The run's cuts in order, each once (a dict keeps insertion order).
                        by_run.setdefault((client, run.start), (run, {}))[1][clock] = None
                        break

        play(reading.cuts, made, self._runs)
        if then is not None and made:
            after = self._read(then, tails={**self._tails, **reading.tails})
            play(after.cuts, made, {c: _ClientRuns(runs) for c, runs in after.made.items()})
        return sum(_cutting_cost(run, list(clocks)) for run, clocks in by_run.values())

    def learn(self, ranges: UpdateRanges) -> None:
        """Take note of an integrated update: the runs its items make or lengthen,
        then its cuts (each cut run is two runs from then on: pycrdt never merges
        them again, something now lies between them) and its deletions (a deleted
        run's values are gone; what is left of it costs nothing to cut)."""
        reading = self._read(ranges)
        self._last = None
        runs, tails = self._runs, self._tails
        for client, made in reading.made.items():
            client_runs = runs.get(client, _ClientRuns())
            for run in made:
                client_runs = client_runs.with_run(run)
            runs[client] = client_runs
        tails.update(reading.tails)
        cuts: dict[int, list[int]] = {}
        for client, clock in reading.cuts:
            tail = tails.get(client)
            if client in runs or (tail is not None and tail[0] < clock < tail[1]):
                cuts.setdefault(client, []).append(clock)
        for client, clocks in cuts.items():
            self._cut(client, sorted(set(clocks)))
        if ranges.deletes:
            deleted: dict[int, list[tuple[int, int]]] = {}
            for client, start, end in ranges.deletes:
                deleted.setdefault(client, []).append((start, end))
            for client, spans in deleted.items():
                self._drop_deleted(client, spans)

    def _read(self, ranges: UpdateRanges, tails: dict[int, Tail] | None = None) -> _Reading:
        """Read an update (kept for the next call, which may be learn's), or, given
        the ``tails`` it would find, read it as if they were the replica's."""
        last = self._last
        if tails is None and last is not None and last.ranges is ranges:
            return last
        keep, known = tails is None, self._tails if tails is None else tails
        made: dict[int, list[Run]] = {}
        tails = {}
        for group in ranges.groups:
            for struct in group:
                client = struct.client
                tail = tails.get(client) or known.get(client)
                unit_cost = UNIT_COSTS.get(struct.kind)
                if unit_cost is None:
                    tails[client] = (struct.end, struct.end, 0)  # nothing merges into it
                    continue
                if (
                    tail is not None
                    and tail[1] == struct.clock
                    and tail[2] == unit_cost
                    and struct.origin == (client, struct.clock - 1)
                    and not struct.keyed
                ):
                    tail = (tail[0], struct.end, unit_cost)
                else:
                    tail = (struct.clock, struct.end, unit_cost)
                tails[client] = tail
                if (tail[1] - tail[0]) * unit_cost >= LONG_FROM:
                    run = Run(*tail)
                    client_made = made.setdefault(client, [])
                    if client_made and client_made[-1].start == run.start:
                        client_made[-1] = run
                    else:
                        client_made.append(run)
        reading = _Reading(ranges, made, tails, cuts_of(ranges))
        if keep:
            self._last = reading
        return reading

    def _cut(self, client: int, clocks: list[int]) -> None:
        """Cut the client's runs (and tail) at ``clocks``, in clock order."""
        tail = self._tails.get(client)
        if tail is not None:
            inside = [clock for clock in clocks if tail[0] < clock < tail[1]]
            if inside:
                self._tails[client] = (inside[-1], tail[1], tail[2])
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
            self._tails[client] = (tail[1], tail[1], 0)  # its last item is deleted
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
