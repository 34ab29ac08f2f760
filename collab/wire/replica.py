"""A replica: a pycrdt Doc that integrates updates exactly as Yjs does.

Yrs keeps structs whose dependencies are missing in a "pending" store of its own,
and integrating around them can leave its document different from what Yjs makes
of the same bytes (a struct waiting behind a clock gap may already have replaced
a map entry, for one). So no update with a missing dependency ever reaches pycrdt:
the replica splits each update into what can be integrated now, which it applies,
and what must wait (collab.wire.ysplit.split_update), which it keeps and retries
whenever something new was integrated. Peers are sent what was integrated, when it
is (the effect of each update), so they hold what the replica holds.

Likewise an item whose parent (named by id) exists but is not a type: Yjs turns it
into a GC struct, Yrs fails half-way through the update. The replica knows which
items are types and writes such an item as a GC struct before pycrdt sees it.

And an update that would cut a character outside the Basic Multilingual Plane
(two UTF-16 code units, one clock each) in two, by deleting or inserting between
its halves, is refused: Yjs replaces the halves with U+FFFD, Yrs keeps the
character whole and shifts the cut, so the two would disagree on the text. The
replica knows where such characters are.

pycrdt copies an item each time an update cuts it (inserts into it or deletes in
it). An update that deletes many ranges is applied level by level
(collab.wire.ysplit.leveled), which copies an item a few times instead of once a
range; a replica given ``max_cut_values`` also keeps where long items are
(collab.wire.long_items) and refuses an update whose cuts would cost more.

Every update given to a replica has passed the strict reader first
(``check_update``); its dependencies are read from there.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pycrdt

from collab.errors import ErrorCode, InvalidUpdate
from collab.wire import crdt
from collab.wire.long_items import (
    LONG_FROM,
    PLACE_BITS,
    UNIT_COSTS,
    VALUE_COST,
    CutMeter,
    LongItems,
)
from collab.wire.yformat import (
    ID,
    TYPE,
    FormatError,
    Struct,
    TooManyStructs,
    UpdateRanges,
    check_update,
    decode_state_vector,
    missing,
)
from collab.wire.ysplit import Split, split_update, squash_runs

EMPTY_UPDATE = b"\x00\x00"


@dataclass(frozen=True, slots=True)
class Applied:
    """An update a replica took: ``stored`` is what to keep in the log, ``effect``
    what was integrated because of it (``EMPTY_UPDATE`` when all of it waits)."""

    stored: bytes
    effect: bytes


@dataclass(frozen=True, slots=True)
class Prepared:
    """The part of :meth:`Replica.apply` that only reads the replica, made
    beforehand (on a thread, see :meth:`Replica.prepare`): good for as long as
    the replica's ``version`` stays the same."""

    replica: Replica
    version: int
    split: Split | None = None
    now_ranges: UpdateRanges | None = None  # the check of ``split.now``
    refused: InvalidUpdate | None = None  # what apply raises (when still current)


MAX_WAITING_PARTS = 32  # peers' updates merged into what waits, at most (when bounded)


class Replica:
    """A document and the update parts that wait for their dependencies."""

    def __init__(
        self,
        doc: pycrdt.Doc | None = None,
        *,
        name: str | None = None,
        max_waiting_bytes: int | None = None,
        max_cut_values: int | None = None,
    ) -> None:
        self.doc: pycrdt.Doc = doc if doc is not None else pycrdt.Doc()
        self.name = name
        # What waits for its dependencies, merged into one update as Yjs merges its
        # pending structs (so that a client's waiting structs block one another in
        # clock order, and of two claims on one clock the same one wins as in Yjs).
        self.waiting: bytes | None = None
        self._waiting_ranges: UpdateRanges | None = None
        self._max_waiting_bytes = max_waiting_bytes
        # What cutting long items may cost one update, in LongItems' units; where
        # they are is kept only to hold updates to it (it costs each update a few µs).
        self._max_cut_cost: int | None = None
        self._long_items: LongItems | None = None
        # What waits, and the clock each client it is blocked on must reach.
        self._wants: tuple[UpdateRanges, dict[int, int]] | None = None
        if max_cut_values is not None:
            self._max_cut_cost = max_cut_values * VALUE_COST
            self._long_items = LongItems()
        self._waiting_parts = 0  # updates merged into what waits since it last was empty
        self.set_aside = 0  # waiting parts dropped because they would cut a character
        # Whether any part ever waited: peers were then sent less than some records
        # hold, and records are no longer a way to bring a peer up to date.
        self.ever_waited = False
        self._types: dict[int, set[int]] = {}  # client -> clocks of integrated type items
        self._astral: dict[int, set[int]] = {}  # client -> clocks of surrogate pairs' first halves
        # The state vector, read again only after the doc changed. Kept only for a
        # doc of the replica's own, which changes through _apply_to_doc alone (a
        # doc given to it, a client's, is also edited by its user).
        # (Reading it costs a transaction and a decode.)
        self._state: dict[int, int] | None = None
        self._keeps_state = doc is None
        # Bumped whenever what apply() reads changes: the state, types, characters.
        self.version = 0
        if doc is not None:
            self.learn(doc.get_update())

    def state(self) -> dict[int, int]:
        """The state vector of what is integrated: ``{client: next clock}``. Do not
        change the dict: it is kept until the document changes."""
        if self._state is not None:
            return self._state
        state = decode_state_vector(self.doc.get_state())
        if self._keeps_state:
            self._state = state
        return state

    def _apply_to_doc(
        self,
        update: bytes,
        ranges: UpdateRanges | None = None,
        before: dict[int, int] | None = None,
    ) -> None:
        """Apply to the doc (given its ranges, an update deleting many ranges level
        by level: see ysplit.leveled). Given the update's ranges and the state
        before, the new state follows without reading it: every dependency of what
        reaches pycrdt is in the doc, so each of its structs is integrated."""
        self._state = None
        self.version += 1
        crdt.apply_checked(self.doc, update, ranges, doc_name=self.name)
        if self._keeps_state and ranges is not None and before is not None:
            after = dict(before)
            for client, _start, end in ranges.structs:
                if end > after.get(client, 0):
                    after[client] = end
            self._state = after

    def prepare(self, update: bytes, ranges: UpdateRanges) -> Callable[[], Prepared | None]:
        """What :meth:`apply` reads before it changes anything, as a function to run
        on a thread (called on the event loop, it takes the state it needs first):
        cutting a large update costs tens of milliseconds. Running it raises
        InvalidUpdate as apply would. Its result is stale (and apply does the work
        again) if the replica changed in the meantime; None when apply has no cut
        to make."""
        version, state = self.version, self.state()
        if not self._keeps_state or (ranges.integrated_in(state) and not ranges.deletes):
            return lambda: None

        def run() -> Prepared:
            # Reads only the replica's sets of type items and characters, besides
            # the state taken above; pycrdt's document is never touched here.
            try:
                split, now_ranges = self._split(update, ranges, state, bounded=True)
            except InvalidUpdate as exc:
                return Prepared(self, version, refused=exc)
            return Prepared(self, version, split, now_ranges)

        return run

    def _split(
        self, update: bytes, ranges: UpdateRanges, state: dict[int, int], *, bounded: bool
    ) -> tuple[Split, UpdateRanges | None]:
        squashed = squash_runs(update, ranges)
        if squashed is not None:  # what pycrdt would merge, merged: stored and sent so
            update, ranges = squashed, self.check(squashed)
        self._refuse_cut_characters(ranges, state)
        split = split_update(update, ranges, state, self._untyped_parents(ranges, state))
        now_ranges = None
        if split.now is not None:
            now_ranges = ranges if split.now is update else self.check(split.now)
        if bounded and self._long_items is not None:
            if now_ranges is not None:
                # With what it releases of what waits: integrated right after it, on
                # the same call, into the long items there are then (what waits was
                # costed when it came against those there were; what it cuts may have
                # grown since, or come with this update).
                self._refuse_costly_cuts(now_ranges, self._released(now_ranges, state))
            if split.later is not None:  # as far as can be told before it is integrated
                later = split.later
                self._refuse_costly_cuts(ranges if later is update else self.check(later))
        return split, now_ranges

    def _released(self, ranges: UpdateRanges, state: dict[int, int]) -> UpdateRanges | None:
        """What integrating an update (every struct of it: ``ranges``, of a
        document with ``state``) would release of what waits: the structs and
        deletions :meth:`_retry_waiting` would integrate next, as ranges to cost.
        None when it releases nothing (most updates: only what waits is blocked on
        is looked at, not all of it)."""
        waiting = self._waiting_ranges
        if waiting is None or not self._releases(ranges, state):
            return None
        after = dict(state)
        for client, _start, end in ranges.structs:
            after[client] = max(after.get(client, 0), end)
        counts, known = waiting.integrable_counts(after)
        groups = []
        for count, group in zip(counts, waiting.groups, strict=True):
            have = state.get(group[0].client, 0) if group else 0
            released = tuple(s for s in group[:count] if not s.skip and s.end > have)
            if released:
                groups.append(released)
        deletes = tuple(
            (client, start, min(end, known.get(client, 0)))
            for client, start, end in waiting.deletes
            if start < known.get(client, 0)
        )
        if not groups and not deletes:
            return None
        return UpdateRanges((), deletes, tuple(groups))

    def _releases(self, ranges: UpdateRanges, state: dict[int, int]) -> bool:
        """Whether integrating an update (of a document with ``state``) brings a
        clock that what waits is blocked on: only then may some of it be released."""
        if self._waiting_ranges is None:
            return False
        wants = self._wants_of(self._waiting_ranges, state)
        return any(end >= wants.get(client, end + 1) for client, _start, end in ranges.structs)

    def _wants_of(self, waiting: UpdateRanges, state: dict[int, int]) -> dict[int, int]:
        """For each client that what waits is blocked on, the clock it must reach
        for some of it to be released (kept for as long as what waits stays the
        same: the state grows, and nothing is released until one is reached)."""
        kept = self._wants
        if kept is not None and kept[0] is waiting:
            return kept[1]
        counts, known = waiting.integrable_counts(state)
        wants: dict[int, int] = {}
        for count, group in zip(counts, waiting.groups, strict=True):
            if count < len(group):
                blocker = missing(group[count], known)
                if blocker is not None:
                    client, clock = blocker
                    wants[client] = min(wants.get(client, clock), clock)
        for client, start, _end in waiting.deletes:
            wants[client] = min(wants.get(client, start + 1), start + 1)
        self._wants = (waiting, wants)
        return wants

    def cut_meter(self) -> CutMeter | None:
        """A meter of what changes made on a copy of the document cost in cuts
        (see long_items.CutMeter), or None for a replica with no budget. Made from
        what the replica knows of its long items now: make it when the copy is made."""
        if self._long_items is None or self._max_cut_cost is None:
            return None
        return CutMeter(self._long_items.copy(), self._max_cut_cost, self.name)

    def _refuse_costly_cuts(self, ranges: UpdateRanges, then: UpdateRanges | None = None) -> None:
        """Raise InvalidUpdate (``too_large``) if integrating the update (and then
        ``then``) would cost pycrdt more than the budget in cuts of long items (see
        long_items)."""
        assert self._long_items is not None and self._max_cut_cost is not None
        cost = self._long_items.cost(ranges, then)
        if cost > self._max_cut_cost:
            raise InvalidUpdate(
                f"the update costs past max_cut_values ({self._max_cut_cost // VALUE_COST:,}) in "
                f"cuts of long runs of values or text and moves of blocks: {cost // VALUE_COST:,} "
                "values' copies; send it in smaller parts",
                code=ErrorCode.TOO_LARGE,
                doc=self.name,
            )

    def apply(
        self,
        update: bytes,
        ranges: UpdateRanges | None = None,
        *,
        bounded: bool = True,
        prepared: Prepared | None = None,
    ) -> Applied | None:
        """Integrate what can be integrated now, keep the rest. Returns None when the
        update brings nothing new (a replay); else what to store (the update, or an
        equivalent form without what the document had already) and its effect: what
        was integrated because of it (its own part and what it released of what
        waited), which is what the document's other peers are sent. Raises
        InvalidUpdate (nothing was changed) or DocumentDamaged (pycrdt failed while
        integrating). ``prepared``: see :meth:`prepare`."""
        if ranges is None:
            ranges = self.check(update)
        state = self.state()
        if ranges.integrated_in(state) and not ranges.deletes:
            return None  # every struct is here and nothing is deleted
        if prepared is not None and prepared.replica is self and prepared.version == self.version:
            if prepared.refused is not None:
                raise prepared.refused
            assert prepared.split is not None
            split, now_ranges = prepared.split, prepared.now_ranges
        else:
            split, now_ranges = self._split(update, ranges, state, bounded=bounded)
        now, later = split.now, split.later
        waiting: tuple[bytes, UpdateRanges] | None = None
        if later is not None:
            if (
                bounded
                and self._max_waiting_bytes is not None
                and (
                    len(later) > self._max_waiting_bytes or self._waiting_parts >= MAX_WAITING_PARTS
                )
            ):
                # Refused before merging: each part that joins what waits costs a
                # read of all of it (and every later update a pass over it).
                raise InvalidUpdate(
                    "the update waits for items this document does not have, and "
                    f"{self._waiting_parts} parts ({self.waiting_bytes} bytes) wait already; "
                    "send what it depends on first",
                    doc=self.name,
                )
            # The waiting update first: of two claims on one clock, Yjs keeps the
            # one it held already.
            merged = later if self.waiting is None else crdt.merge([self.waiting, later])
            merged_ranges = self.check(merged)
            if merged_ranges == self._waiting_ranges:
                later = None  # sent again while it still waits: nothing new waits
            elif (
                bounded
                and self._max_waiting_bytes is not None
                and len(merged) > self._max_waiting_bytes
            ):
                raise InvalidUpdate(
                    "the update waits for items this document does not have, and "
                    f"{self.waiting_bytes} bytes wait already; send what it depends on first",
                    doc=self.name,
                )
            else:
                waiting = (merged, merged_ranges)
                self.version += 1  # what is prepared is costed with what waits
                self.ever_waited = True
                self._waiting_parts += 1
        changed = False
        integrated: list[bytes] = []
        if now is not None and now_ranges is not None:
            changed = self._integrate(now, now_ranges, state)
            self._learn(now_ranges)
            if changed:
                integrated.append(now)
        if waiting is not None:
            self.waiting, self._waiting_ranges = waiting
            changed = True
        if not changed:
            return None
        if self.waiting is not None and (
            waiting is not None or (now_ranges is not None and self._releases(now_ranges, state))
        ):
            # (Only when something waits on what was integrated: a pass over what
            # waits costs every update milliseconds while tens of KiB wait.)
            integrated += self._retry_waiting()
        if not integrated:
            effect = EMPTY_UPDATE
        elif len(integrated) == 1:
            effect = integrated[0]
        else:
            effect = crdt.merge(integrated)
        return Applied(split.whole, effect)

    @property
    def waiting_bytes(self) -> int:
        return len(self.waiting) if self.waiting is not None else 0

    def restore(self, state: bytes, waiting: bytes | None) -> None:
        """Load a snapshot into an empty replica: ``state``, pycrdt's own encoding of
        what was integrated, is applied as it is; ``waiting`` waits again.
        ``waiting`` None (an older snapshot, whose state may hold waiting parts
        too): the state goes through :meth:`apply`."""
        if waiting is None:
            self.apply(state, bounded=False)
            return
        # Only what _learn reads is kept of the check: a whole document's structs
        # would cost a few hundred bytes each (10 MiB of paragraphs: 10 MiB more);
        # of the others, where they start (where pycrdt's blocks are: LongItems).
        places: dict[int, dict[int, int]] = {}  # client -> bucket -> structs

        def keep(struct: Struct) -> bool:
            if not struct.skip:
                buckets = places.setdefault(struct.client, {})
                bucket = struct.clock >> PLACE_BITS
                buckets[bucket] = buckets.get(bucket, 0) + 1
            return _learned(struct)

        ranges = self.check(state, keep=keep if self._long_items is not None else _learned)
        self._apply_to_doc(state)
        self._learn(ranges)
        if self._long_items is not None:
            self._long_items.place(places)
        if waiting:
            self.waiting, self._waiting_ranges = waiting, self.check(waiting)
            self.ever_waited = True
            self._retry_waiting()

    def check(
        self,
        update: bytes,
        max_structs: int | None = None,
        *,
        keep: Callable[[Struct], bool] | None = None,
    ) -> UpdateRanges:
        """Read an update strictly (``check_update``, ``keep`` as there). Raises
        InvalidUpdate, with the code ``too_large`` past ``max_structs`` structs or
        deleted ranges."""
        try:
            return check_update(update, max_structs, keep=keep)
        except TooManyStructs as exc:
            raise InvalidUpdate(
                f"{exc}: send it in smaller parts", code=ErrorCode.TOO_LARGE, doc=self.name
            ) from None
        except FormatError as exc:
            raise InvalidUpdate(
                f"the update is not a valid Yjs v1 update: {exc}", doc=self.name
            ) from None

    def _integrate(self, update: bytes, ranges: UpdateRanges, state: dict[int, int]) -> bool:
        """Apply an update whose every dependency is here; True if it changed the doc."""
        if not ranges.integrated_in(state):
            self._apply_to_doc(update, ranges, state)
            return True
        # Only deletions of items the doc has: whether one is new shows only in a
        # change event, so this one apply is observed. (A permanent observer would
        # cost every update an event.)
        changed = False

        def on_change(_event: Any) -> None:
            nonlocal changed
            changed = True

        subscription = self.doc.observe(on_change)
        try:
            self._apply_to_doc(update, ranges)
        finally:
            self.doc.unobserve(subscription)
        return changed

    def _retry_waiting(self) -> list[bytes]:
        """Integrate what waits as far as it now can, as Yjs retries its pending
        structs: one client's waiting structs in clock order, each blocking the ones
        after it. Returns the parts integrated.

        A part that would now cut a character in two (a deletion or an insertion
        that waited for the character to arrive) is set aside instead: nobody was
        sent it (peers get only what is integrated), so nobody holds it."""
        released: list[bytes] = []
        while self.waiting is not None and self._waiting_ranges is not None:
            state = self.state()
            ranges = self._waiting_ranges
            split = split_update(self.waiting, ranges, state, self._untyped_parents(ranges, state))
            if split.now is None:
                break
            now_ranges = ranges if split.now is self.waiting else self.check(split.now)
            try:
                self._refuse_cut_characters(now_ranges, state)
            except InvalidUpdate:
                self.set_aside += 1
            else:
                if self._integrate(split.now, now_ranges, state):
                    released.append(split.now)
                self._learn(now_ranges)
            if split.later is None:
                self.waiting = self._waiting_ranges = None
                self._waiting_parts = 0
            else:
                self.waiting, self._waiting_ranges = split.later, self.check(split.later)
        return released

    def _untyped_parents(self, ranges: UpdateRanges, state: dict[int, int]) -> set[ID]:
        """The structs of an update that name, by id, a parent that exists (in the
        document or in the update) but is not a type: Yjs makes them GC structs.

        In O(n log n): the update's ranges are looked up by bisection, and a type
        that becomes GC passes it on to its children through an index of them (a
        scan of every range per struct, or a pass over every struct per type made
        GC, would cost a chain of parents n squared)."""
        named = [s for group in ranges.groups for s in group if s.parent is not None]
        if not named:
            return set()
        update_types = {
            (s.client, s.clock) for group in ranges.groups for s in group if s.kind == TYPE
        }
        starts: dict[int, list[int]] = {}  # client -> sorted starts of its struct ranges
        ends: dict[int, list[int]] = {}
        for client, start, end in sorted(ranges.structs):
            starts.setdefault(client, []).append(start)
            ends.setdefault(client, []).append(end)

        def in_update(client: int, clock: int) -> bool:
            at = bisect.bisect_right(starts.get(client, ()), clock) - 1
            return at >= 0 and clock < ends[client][at]

        bad: set[ID] = set()
        # Structs whose parent is a type of the update (and not of the document):
        # GC too once that type is, by the parent's id.
        children: dict[ID, list[ID]] = {}
        for struct in named:
            client, clock = struct.parent  # type: ignore[misc]
            key = (struct.client, struct.clock)
            in_doc = state.get(client, 0) > clock
            if clock in self._types.get(client, ()):
                continue  # what the document holds wins over the update's own claim
            if not in_doc and (client, clock) in update_types:
                children.setdefault((client, clock), []).append(key)
            elif in_doc or in_update(client, clock):
                bad.add(key)
        work = list(bad)
        while work:  # a type that becomes GC takes its children with it
            for child in children.get(work.pop(), ()):
                if child not in bad:
                    bad.add(child)
                    work.append(child)
        return bad

    def _refuse_cut_characters(self, ranges: UpdateRanges, state: dict[int, int]) -> None:
        """Raise InvalidUpdate if the update would cut a surrogate pair in two."""
        structs = [s for group in ranges.groups for s in group]
        update_pairs = {(s.client, clock) for s in structs for clock in s.astral}
        if not update_pairs and not self._astral:
            return

        def first_half(client: int, clock: int) -> bool:
            return clock in self._astral.get(client, ()) or (client, clock) in update_pairs

        def cuts(updates: list[UpdateRanges]) -> bool:
            for update in updates:
                # A cut between clocks k - 1 and k, wherever an update splits an item.
                for client, start, end in update.deletes:
                    if first_half(client, start - 1) or first_half(client, end - 1):
                        return True
                for group in update.groups:
                    for struct in group:
                        if struct.origin is not None and first_half(*struct.origin):
                            return True
                        right = struct.right_origin
                        if right is not None and first_half(right[0], right[1] - 1):
                            return True
                        have = state.get(struct.client, 0)
                        if struct.clock < have < struct.end and first_half(struct.client, have - 1):
                            return True
            return False

        if cuts([ranges]):
            raise InvalidUpdate(
                "the update would cut a character made of two UTF-16 code units (a "
                "surrogate pair) in two, which Yjs and Yrs resolve differently",
                doc=self.name,
            )

    def learn(self, update: bytes) -> None:
        """Take note of what an edit made on the doc directly (not through
        :meth:`apply`) brought: its type items and astral characters. An update the
        strict reader refuses teaches nothing (a server refuses it too)."""
        try:
            ranges = check_update(update)
        except FormatError:
            return
        self._learn(ranges)

    def _learn(self, ranges: UpdateRanges) -> None:
        """Remember the type items and surrogate pairs an integrated update brought
        (its structs that are ``_learned``)."""
        self.version += 1
        if self._long_items is not None:
            self._long_items.learn(ranges)
        for group in ranges.groups:
            for struct in group:
                if struct.kind == TYPE:
                    self._types.setdefault(struct.client, set()).add(struct.clock)
                elif struct.astral:
                    self._astral.setdefault(struct.client, set()).update(struct.astral)

    # -- encoding -------------------------------------------------------------------------

    def diff(self, state_vector: bytes) -> bytes:
        """What is integrated and a peer with ``state_vector`` lacks: what peers are
        sent (what waits reaches them once it is integrated)."""
        return crdt.diff(self.doc, state_vector, doc_name=self.name)

    def encode(self) -> bytes:
        """Everything, the waiting parts included, as one update: the document's
        whole state, as history and snapshots keep it."""
        integrated = self.doc.get_update()
        if self.waiting is None:
            return integrated
        return crdt.merge([integrated, self.waiting])

    def __repr__(self) -> str:
        return f"<Replica {self.name!r} waiting={self.waiting_bytes} bytes>"


def _learned(struct: Struct) -> bool:
    """Whether :meth:`Replica._learn` takes note of a struct (of a whole state)."""
    unit_cost = UNIT_COSTS.get(struct.kind)
    return (
        struct.kind == TYPE
        or bool(struct.astral)
        or (unit_cost is not None and (struct.end - struct.clock) * unit_cost >= LONG_FROM)
    )
