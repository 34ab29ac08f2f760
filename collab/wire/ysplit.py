"""Yjs updates cut and written again: the writing half of the v1 update format,
for the replica (collab.wire.replica).

:func:`squash_runs` writes runs of items that pycrdt would merge into one as
two items (all but the last joined, then the last): pycrdt merges such a run
inside the transaction that integrates it at a cost that grows with the square
of its length (5,000 one-value array items in one update: 0.3 s and 570 MiB;
20,000, what an update may carry, several GiB), where one item of the same
content costs what its bytes cost.

:func:`split_update` cuts an update that passed the strict reader
(:func:`collab.wire.yformat.check_update`) by what a document can integrate now
and what must wait for missing dependencies, as Yjs does with its pending
structs, and writes each part as a v1 update from the bytes of the structs it
keeps. Reading and every check stay in :mod:`collab.wire.yformat`: nothing here
reads bytes that were not checked there.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from collab.wire.yformat import (
    ANY,
    DELETED,
    GC,
    ID,
    STRING,
    Reader,
    Struct,
    UpdateRanges,
    var_uint,
)

# An update whose runs all merge fewer adjacent pairs than this is left as it is:
# pycrdt's cost grows with the square of each run's length, so runs this short
# cost it little however many there are (625 of 32 one-value items, 20,000 in
# all: 17 ms), less than writing the update again and reading it back (a 10 MiB
# document's state, typed at once by several writers, holds thousands of short
# runs pycrdt could not merge, as its items are not next to one another).
SQUASH_FROM = 32

# An update deleting this many ranges is applied level by level (see leveled):
# fewer cut an item at most that many times, whatever their order.
LEVELED_FROM = 64


@dataclass(frozen=True, slots=True)
class Split:
    """An update cut by what a document can integrate now (see split_update)."""

    now: bytes | None  # what can be integrated now, without what the document has
    later: bytes | None  # what waits for missing dependencies
    whole: bytes  # both, as one update: the update as it is to be stored and relayed


def split_update(
    update: bytes,
    ranges: UpdateRanges,
    state_vector: dict[int, int],
    as_gc: Collection[ID] = (),
) -> Split:
    """Cut a checked update by what a document with ``state_vector`` can integrate
    now and what must wait for missing dependencies, as Yjs does with its pending
    structs. Structs the document holds already are left out of ``now``, and one
    it holds in part is cut where the document's clock is (with the item before
    the cut as its origin, as Yjs writes such a struct), so that pycrdt never
    integrates an item over one it has. The structs named in ``as_gc`` (by their
    first id) are written as GC structs of the same length."""
    counts, known = ranges.integrable_counts(state_vector)
    overlaps = any(
        group and group[0].clock < state_vector.get(group[0].client, 0) for group in ranges.groups
    )
    if (
        not as_gc
        and not ranges.has_empty
        and not overlaps
        and all(count == len(group) for count, group in zip(counts, ranges.groups, strict=True))
        and all(known.get(client, 0) >= end for client, _, end in ranges.deletes)
    ):
        return Split(update, None, update)
    now_groups: list[bytes] = []
    later_groups: list[bytes] = []
    whole_groups: list[bytes] = []
    for count, group in zip(counts, ranges.groups, strict=True):
        if not group:
            continue
        have = state_vector.get(group[0].client, 0)
        # Skips are passed over where they are, so those before the first struct
        # that waits are counted in: ``last`` leaves them to what waits.
        last = count
        while last > 0 and group[last - 1].skip:
            last -= 1
        ready = _trim([s for s in group[:last] if s.end > have])
        ready_bytes = [_struct_bytes(update, s, have, as_gc) for s in ready]
        if ready_bytes:
            now_groups.append(_group(ready[0].client, max(ready[0].clock, have), ready_bytes))
        waiting = list(group[count:])
        waiting_bytes = [_struct_bytes(update, s, 0, as_gc) for s in _trim(waiting)]
        if waiting_bytes:
            first = _trim(waiting)[0]
            later_groups.append(_group(first.client, first.clock, waiting_bytes))
        # The whole: what is new now, then everything from where it stops (skips
        # between the two included, so the group stays contiguous: each struct's
        # clock is where the one before it ends).
        if ready_bytes:
            after = list(group[last:])
            while after and after[-1].skip:
                after.pop()
            rest = [_struct_bytes(update, s, 0, as_gc) for s in after]
            whole_groups.append(
                _group(ready[0].client, max(ready[0].clock, have), ready_bytes + rest)
            )
        elif waiting_bytes:
            whole_groups.append(later_groups[-1])
    now_deletes: dict[int, list[tuple[int, int]]] = {}
    later_deletes: dict[int, list[tuple[int, int]]] = {}
    for client, start, end in ranges.deletes:
        # Yjs deletes what it has at once and keeps the rest for later.
        have = known.get(client, 0)
        if start < have:
            now_deletes.setdefault(client, []).append((start, min(end, have)))
        if end > have:
            later_deletes.setdefault(client, []).append((max(start, have), end))
    return Split(
        _encode(now_groups, now_deletes) if now_groups or now_deletes else None,
        _encode(later_groups, later_deletes) if later_groups or later_deletes else None,
        _encode(whole_groups, _deletes_by_client(ranges)),
    )


def squash_runs(update: bytes, ranges: UpdateRanges) -> bytes | None:
    """``update`` (checked: ``ranges``) with each run of items pycrdt would merge
    written as two items (see _squashed), or None when no run has SQUASH_FROM
    such pairs. The same document either way: an item that follows
    another of its client at the next clock, named by it as its origin, with the
    same right origin and content of the same kind, is where merging them puts
    it; an item is cut there again when something names the place between.

    A run is cut where the update's own deletions start or end: pycrdt deletes
    what an update deletes after integrating its items, cutting an item at each
    end of a deleted range at a cost that grows with the item's length (10,000
    values of 20,000 deleted one in two: 9 ms as they came, 0.7 s as one item),
    and merges items deleted alike only."""
    groups_in = ranges.groups
    if sum(map(len, groups_in)) <= SQUASH_FROM:  # a peer's keystroke: one struct
        return None
    cuts: dict[int, set[int]] = {}  # client -> clocks where a deleted range starts or ends
    for client, start, end in ranges.deletes:
        cuts.setdefault(client, set()).update((start, end))
    if not any(_has_run(group, cuts) for group in groups_in):
        return None
    groups: list[bytes] = []
    for group in groups_in:
        if not group:
            continue
        structs: list[bytes] = []
        run = [group[0]]
        cut = cuts.get(group[0].client, set())
        for struct in group[1:]:
            if _merges(run[-1], struct) and struct.clock not in cut:
                run.append(struct)
            else:
                structs += _squashed(update, run)
                run = [struct]
        structs += _squashed(update, run)
        groups.append(_group(group[0].client, group[0].clock, structs))
    return _encode(groups, _deletes_by_client(ranges))


def _deletes_by_client(ranges: UpdateRanges) -> dict[int, list[tuple[int, int]]]:
    """An update's deleted ranges as _encode writes them: ``(start, end)`` by client."""
    return _by_client(ranges.deletes)


def _by_client(deletes: Iterable[tuple[int, int, int]]) -> dict[int, list[tuple[int, int]]]:
    by_client: dict[int, list[tuple[int, int]]] = {}
    for client, start, end in deletes:
        by_client.setdefault(client, []).append((start, end))
    return by_client


def deletion_levels(
    deletes: Sequence[tuple[int, int, int]],
) -> list[list[tuple[int, int, int]]]:
    """An update's deleted ranges (in clock order by client, as the strict reader
    gives them) in the order that cuts long items least: of each client's ranges,
    the middle one first, then those in the middle of the halves it leaves, and so
    on (the range of rank r, from 1, on the level of r's trailing zero bits,
    counted down). A level's ranges are in clock order by client.

    pycrdt takes the deletions of one update in clock order, and each cut copies
    the whole item it cuts. Level by level, each level cuts an item at most once
    between two cuts of earlier levels: an item is copied about once a level,
    log2 of the ranges in it, instead of once a range."""
    by_client: dict[int, list[tuple[int, int, int]]] = {}
    for span in deletes:
        by_client.setdefault(span[0], []).append(span)
    height = max(len(spans) for spans in by_client.values()).bit_length()
    levels: list[list[tuple[int, int, int]]] = [[] for _ in range(height)]
    for spans in by_client.values():
        for rank, span in enumerate(spans, 1):
            levels[height - (rank & -rank).bit_length()].append(span)
    return [level for level in levels if level]


def leveled(update: bytes, ranges: UpdateRanges) -> list[bytes] | None:
    """An update that deletes at least LEVELED_FROM ranges as updates to apply one
    after the other, to the same effect: its structs with the first level of its
    deletions (:func:`deletion_levels`), then each further level alone. None for an
    update that deletes fewer ranges (applied as it is).

    One update of 20,000 single-value deletions scattered over an item of 200,000
    values took pycrdt 10 s (58.7 s for 1M values), as levels 0.15 s."""
    if len(ranges.deletes) < LEVELED_FROM:
        return None
    levels = [_by_client(level) for level in deletion_levels(ranges.deletes)]
    first = update[: ranges.deletes_at] + _delete_set(levels[0])
    return [first] + [var_uint(0) + _delete_set(level) for level in levels[1:]]


def _merges(left: Struct, right: Struct) -> bool:
    """Whether pycrdt would merge ``right`` into ``left`` (Yjs's Item.mergeWith: a
    string or a list of values; a map entry, named by its key, is left alone)."""
    return (
        right.clock == left.end
        and right.kind == left.kind
        and left.kind in (STRING, ANY)
        and not left.keyed
        and right.origin == (left.client, left.end - 1)
        and right.right_origin == left.right_origin
    )


def _has_run(group: tuple[Struct, ...], cuts: dict[int, set[int]]) -> bool:
    """Whether ``group`` holds a run of SQUASH_FROM merged pairs."""
    cut = cuts.get(group[0].client, set()) if group else set()
    pairs = 0
    for left, right in itertools.pairwise(group):
        pairs = pairs + 1 if _merges(left, right) and right.clock not in cut else 0
        if pairs >= SQUASH_FROM:
            return True
    return False


def _squashed(update: bytes, run: list[Struct]) -> list[bytes]:
    """``run`` as two items: one holding the content of all its items but the
    last (the first one's header, then the contents joined), then the last as it
    is. Whether a run is a map key's overwrites, each deleting the one before as
    it is integrated, shows only in the document (an overwrite names the entry it
    follows, not its key): kept apart, the last deletes the item before it whole,
    as it deletes each overwrite there, and in a list the two are where the run's
    items are."""
    last = run[-1]
    if len(run) <= 2:
        return [update[struct.span[0] : struct.span[1]] for struct in run]
    return [_joined(update, run[:-1]), update[last.span[0] : last.span[1]]]


def _joined(update: bytes, run: list[Struct]) -> bytes:
    """The bytes of one item holding the content of every item of ``run``: the
    first one's header, then the contents joined."""
    first = run[0]
    head = update[first.span[0] : first.content_at]
    if first.kind == STRING:
        text = "".join(Reader(update[s.content_at : s.span[1]]).read_var_string() for s in run)
        return head + _var_string(text)
    count = 0
    values: list[bytes] = []
    for struct in run:
        reader = Reader(update[struct.content_at : struct.span[1]])
        count += reader.read_var_uint()
        values.append(reader.read_bytes(reader.remaining))
    return head + var_uint(count) + b"".join(values)


def _trim(structs: list[Struct]) -> list[Struct]:
    """Leading and trailing skip structs carry nothing: leave them out."""
    first, last = 0, len(structs)
    while first < last and structs[first].skip:
        first += 1
    while last > first and structs[last - 1].skip:
        last -= 1
    return structs[first:last]


def _group(client: int, clock: int, structs: list[bytes]) -> bytes:
    return var_uint(len(structs)) + var_uint(client) + var_uint(clock) + b"".join(structs)


def _struct_bytes(update: bytes, struct: Struct, have: int, as_gc: Collection[ID]) -> bytes:
    """One struct's bytes, as a GC struct if asked, cut at clock ``have`` if the
    document holds its start already."""
    gc = (struct.client, struct.clock) in as_gc
    if struct.clock >= have:
        if gc:
            return bytes([GC]) + var_uint(struct.end - struct.clock)
        return update[struct.span[0] : struct.span[1]]
    # The document has [clock, have): keep [have, end), after the item at have - 1.
    offset = have - struct.clock
    if gc or struct.kind == GC:
        return bytes([GC]) + var_uint(struct.end - have)
    right = struct.right_origin
    head = bytes([struct.kind | 0x80 | (0x40 if right else 0)])
    head += var_uint(struct.client) + var_uint(have - 1)
    if right is not None:
        head += var_uint(right[0]) + var_uint(right[1])
    reader = Reader(update[struct.content_at : struct.span[1]])
    if struct.kind == DELETED:
        return head + var_uint(struct.end - have)
    if struct.kind == STRING:
        # Never between the halves of a surrogate pair: the replica refuses that.
        units = reader.read_var_string().encode("utf-16-le")[2 * offset :]
        return head + _var_string(units.decode("utf-16-le"))
    if struct.kind == ANY:
        count = reader.read_var_uint()
        for _ in range(offset):
            reader.read_any()
        return head + var_uint(count - offset) + reader.read_bytes(reader.remaining)
    raise AssertionError(f"a struct of kind {struct.kind} has one clock: it cannot be cut")


def _var_string(text: str) -> bytes:
    data = text.encode()
    return var_uint(len(data)) + data


def _encode(groups: list[bytes], deletes: dict[int, list[tuple[int, int]]]) -> bytes:
    return b"".join([var_uint(len(groups)), *groups, _delete_set(deletes)])


def _delete_set(deletes: dict[int, list[tuple[int, int]]]) -> bytes:
    parts = [var_uint(len(deletes))]
    for client, spans in deletes.items():
        parts.append(var_uint(client) + var_uint(len(spans)))
        parts.extend(var_uint(start) + var_uint(end - start) for start, end in spans)
    return b"".join(parts)
