"""pycrdt copies an item each time an update cuts it: deletions are applied level
by level, so a long item is copied a few times instead of once a range, and a
replica with a budget refuses an update whose cuts of long items would cost more,
before anything changes."""

from __future__ import annotations

import bisect
import json
import random

import pycrdt
import pytest

from collab.errors import ErrorCode, InvalidUpdate
from collab.wire import crdt, edit_ops
from collab.wire.edits import made_on
from collab.wire.long_items import PLACE_BITS, Run, _after, _anew, _cutting_cost, _with_deleted
from collab.wire.replica import Replica
from collab.wire.yformat import check_update
from collab.wire.ysplit import LEVELED_FROM, deletion_levels, leveled
from tests.helpers import appended_values
from tests.test_replica import contents, random_edits
from tests.test_yformat import any_item, hand_update, var_string, var_uint

WRITER = 7  # the client whose long items are cut
CUTTER = 8


def long_values(count: int, client: int = WRITER) -> bytes:
    """One item of ``count`` null values in the Array "values"."""
    return hand_update(client, 0, any_item(*[b"\x7e"] * count, parent="values"))


def long_text(count: int, client: int = WRITER) -> bytes:
    """One item of ``count`` characters in the Text "text"."""
    item = bytes([4]) + var_uint(1) + var_string("text") + var_string("x" * count)
    return hand_update(client, 0, item)


def deletions(clocks: list[int], client: int = WRITER) -> bytes:
    """An update deleting the one clock at each of ``clocks`` (in order)."""
    spans = b"".join(var_uint(clock) + var_uint(1) for clock in clocks)
    return var_uint(0) + var_uint(1) + var_uint(client) + var_uint(len(clocks)) + spans


def insertions(
    clocks: list[int], text: bool = False, client: int = CUTTER, into: int = WRITER
) -> bytes:
    """An update of one-value (or one-character) items, each inserted into the
    item of ``into`` between ``clock - 1`` and ``clock``, in the order given."""
    structs = b""
    for clock in clocks:
        origins = var_uint(into) + var_uint(clock - 1) + var_uint(into) + var_uint(clock)
        content = var_string("y") if text else var_uint(1) + b"\x7e"
        structs += bytes([(4 if text else 8) | 0xC0]) + origins + content
    return var_uint(1) + var_uint(len(clocks)) + var_uint(client) + var_uint(0) + structs + b"\x00"


def scattered(count: int, length: int, seed: int = 1) -> list[int]:
    return sorted(random.Random(seed).sample(range(1, length - 1), count))


def plain(*updates: bytes) -> bytes:
    """What pycrdt makes of the updates applied whole, one after the other."""
    doc = pycrdt.Doc()
    for update in updates:
        doc.apply_update(update)
    return doc.get_update()


# -- deletions, level by level -----------------------------------------------------------------


@pytest.mark.parametrize("counts", [[1], [2], [64], [1000], [300, 5, 77]])
def test_each_level_cuts_between_two_cuts_of_earlier_levels_at_most_once(counts):
    deletes = [
        (client, clock * 3, clock * 3 + 1)
        for client, count in enumerate(counts, 1)
        for clock in range(count)
    ]
    levels = deletion_levels(deletes)

    assert sorted(span for level in levels for span in level) == sorted(deletes)
    assert len(levels) <= max(counts).bit_length()
    for level in levels:
        assert level == sorted(level)  # in clock order by client, as an update writes them
    for depth, level in enumerate(levels):
        earlier = sorted(span for before in levels[:depth] for span in before)
        # each gap between one client's cuts of earlier levels holds one range at most
        gaps = [(span[0], bisect.bisect(earlier, span)) for span in level]
        assert len(gaps) == len(set(gaps))


def test_an_update_deleting_many_ranges_is_applied_in_levels_to_the_same_document(monkeypatch):
    base = long_values(5000)
    other, _ = appended_values(300, client_id=9)
    clocks = scattered(1200, 5000)
    # Its own items too: it inserts values, then deletes some of them and of the others.
    update = pycrdt.merge_updates(deletions(clocks), other.get_update())
    replica = Replica()
    replica.apply(base)
    applied: list[bytes] = []
    real_apply = crdt.apply_update

    def recording(doc: pycrdt.Doc, part: bytes, **kwargs) -> None:
        applied.append(part)
        real_apply(doc, part, **kwargs)

    monkeypatch.setattr(crdt, "apply_update", recording)
    replica.apply(update)

    assert len(check_update(update).deletes) >= LEVELED_FROM
    assert len(applied) == len(deletion_levels(check_update(update).deletes)) > 1
    assert replica.doc.get_update() == plain(base, update)
    values = replica.doc.get("values", type=pycrdt.Array).to_py()
    assert len(values) == 5000 - 1200 + 300


def test_an_update_with_few_deletions_is_applied_whole():
    update = deletions(scattered(LEVELED_FROM - 1, 5000))
    assert leveled(update, check_update(update)) is None


@pytest.mark.parametrize("seed", range(4))
def test_random_histories_merged_into_one_update_make_the_same_document(seed):
    # Typing, deleting and filling a text, an array and a map: merged, the update
    # deletes hundreds of ranges, of several items and clients.
    rng = random.Random(seed)
    first, second = pycrdt.Doc(client_id=1), pycrdt.Doc(client_id=2)
    random_edits(first, rng, 300)
    second.apply_update(first.get_update())
    start = second.get_state()
    random_edits(second, rng, 1500)
    random_edits(first, rng, 100)
    update = pycrdt.merge_updates(second.get_update(start), first.get_update())
    assert len(check_update(update).deletes) >= LEVELED_FROM

    replica = Replica(max_cut_values=4_000_000)
    replica.apply(first.get_update())
    replica.apply(update)

    whole = pycrdt.Doc()
    whole.apply_update(first.get_update())
    whole.apply_update(update)
    assert replica.doc.get_update() == whole.get_update()
    assert contents(replica.doc) == contents(whole)


def test_a_logged_update_is_applied_to_a_plain_document_as_a_replica_applies_it(monkeypatch):
    # Diffs and history commands apply logged updates to plain documents: a run
    # stored before runs were squashed, and many deletions, cost there what they
    # cost in a replica.
    _, run = appended_values(5_000, client_id=9)
    clocks = scattered(1_000, 5_000)
    base = long_values(5_000)
    applied: list[bytes] = []
    real_apply = crdt.apply_update

    def recording(doc: pycrdt.Doc, part: bytes, **kwargs) -> None:
        applied.append(part)
        real_apply(doc, part, **kwargs)

    doc = pycrdt.Doc()
    doc.apply_update(base)
    monkeypatch.setattr(crdt, "apply_update", recording)
    crdt.apply_logged(doc, run)
    crdt.apply_logged(doc, deletions(clocks))

    assert [sum(map(len, check_update(part).groups)) for part in applied[:1]] == [2]
    assert len(applied) == 1 + len(deletion_levels(check_update(deletions(clocks)).deletes))
    assert doc.get_update() == plain(base, run, deletions(clocks))


# -- what cuts cost ----------------------------------------------------------------------------


def test_the_cost_of_cuts_played_backwards_is_the_cost_played_forwards():
    for seed in range(100):
        rng = random.Random(seed)
        run = Run(10, 10 + rng.randint(2, 400), rng.choice([1, 64]))
        clocks = rng.sample(range(run.start + 1, run.end), rng.randint(1, run.end - run.start - 1))
        made: list[int] = []
        expected = 0
        for clock in clocks:  # each cut copies the part it falls in, as cut so far
            at = bisect.bisect(made, clock)
            right = made[at] if at < len(made) else run.end
            expected += right - (made[at - 1] if at else run.start)
            made.insert(at, clock)
        assert _cutting_cost(run, clocks) == expected * run.unit_cost, seed


def test_an_update_cutting_a_long_list_thousands_of_times_is_refused_and_changes_nothing():
    # 20,000 values inserted into the middle of a 200,000-value list, one by one:
    # 5 s of pycrdt's time holding the GIL, on every document of the instance.
    replica = Replica(max_cut_values=4_000_000)
    replica.apply(long_values(200_000))
    before, state, version = replica.doc.get_update(), dict(replica.state()), replica.version

    with pytest.raises(InvalidUpdate) as refused:
        replica.apply(insertions(scattered(20_000, 200_000)))

    assert refused.value.code is ErrorCode.TOO_LARGE
    assert "max_cut_values" in refused.value.message
    assert replica.doc.get_update() == before
    assert replica.state() == state and replica.version == version
    # A few insertions into it cost what copying it a few times costs: taken.
    applied = replica.apply(insertions([50_000, 150_000]))
    assert applied is not None
    assert len(replica.doc.get("values", type=pycrdt.Array)) == 200_002


def test_a_long_item_and_the_cuts_into_it_in_one_update_are_refused():
    update = pycrdt.merge_updates(long_values(200_000), insertions(scattered(5_000, 200_000)))
    replica = Replica(max_cut_values=4_000_000)

    with pytest.raises(InvalidUpdate) as refused:
        replica.apply(update)

    assert refused.value.code is ErrorCode.TOO_LARGE
    assert replica.state() == {}


def test_cuts_waiting_for_a_dependency_are_costed_when_they_arrive():
    replica = Replica(max_cut_values=4_000_000, max_waiting_bytes=1 << 20)
    replica.apply(long_values(200_000))
    # Each insertion is of clock 1 onwards of its client: all of it waits for clock 0.
    waiting = insertions(scattered(5_000, 200_000))
    waiting = waiting[:3] + var_uint(1) + waiting[4:]

    with pytest.raises(InvalidUpdate) as refused:
        replica.apply(waiting)

    assert refused.value.code is ErrorCode.TOO_LARGE
    assert replica.waiting is None


def test_cuts_waiting_for_the_long_item_they_cut_are_costed_with_it():
    # What waits was costed when it came, against the long items there were; the
    # long item it cuts comes after it, and would release it.
    replica = Replica(max_cut_values=4_000_000, max_waiting_bytes=1 << 20)
    parked = insertions(scattered(4_000, 200_000), into=9)
    assert replica.apply(parked) is not None and replica.waiting == parked

    with pytest.raises(InvalidUpdate) as refused:
        replica.apply(long_values(200_000, client=9))

    assert refused.value.code is ErrorCode.TOO_LARGE
    assert replica.state() == {} and replica.waiting == parked
    # Without what waits, the same item costs nothing to bring.
    assert Replica(max_cut_values=4_000_000).apply(long_values(200_000, client=9)) is not None


def test_text_costs_a_64th_of_values():
    replica = Replica(max_cut_values=4_000_000)
    replica.apply(long_text(200_000))
    # 2,000 characters typed into 200,000: what 2,000 values typed into 3,125 cost.
    applied = replica.apply(insertions(scattered(2_000, 200_000), text=True))
    assert applied is not None
    assert len(str(replica.doc.get("text", type=pycrdt.Text))) == 202_000


def test_values_appended_one_update_at_a_time_make_one_long_run():
    # pycrdt merges each appended value into the item before it.
    writer, _ = appended_values(0, client_id=WRITER)
    updates: list[bytes] = []
    writer.observe(lambda event: updates.append(event.update))
    values = writer.get("values", type=pycrdt.Array)
    for value in range(2_000):
        values.append(value)
    replica = Replica(max_cut_values=100_000)
    for update in updates:
        replica.apply(update)

    # 500 insertions into 2,000 values cost about 500 * 1,000 values' copies.
    with pytest.raises(InvalidUpdate):
        replica.apply(insertions(scattered(500, 2_000)))
    assert replica.doc.get("values", type=pycrdt.Array).to_py() == list(range(2_000))


def test_a_long_item_cut_into_parts_costs_its_parts():
    replica = Replica(max_cut_values=4_000_000)
    replica.apply(long_values(100_000))
    # 99 deletions cut it into parts of about 1,000 values.
    replica.apply(deletions([1000 * k for k in range(1, 100)]))

    # 2,000 insertions, 20 into each part: 2,000 * about 500 values' copies. Costed
    # against the whole item it would be 100 times that, and refused.
    clocks = sorted({1000 * k + 1 + j * 47 for k in range(100) for j in range(20)} - {100_000})
    applied = replica.apply(insertions(clocks[:2000]))
    assert applied is not None


def test_a_replica_restored_from_a_state_knows_its_long_items():
    source = Replica()
    source.apply(long_values(200_000))
    restored = Replica(max_cut_values=4_000_000)
    restored.restore(source.doc.get_update(), b"")

    with pytest.raises(InvalidUpdate) as refused:
        restored.apply(insertions(scattered(20_000, 200_000)))
    assert refused.value.code is ErrorCode.TOO_LARGE


def test_histories_of_ordinary_edits_are_never_refused():
    for seed in range(3):
        rng = random.Random(seed)
        writer = pycrdt.Doc(client_id=1)
        updates: list[bytes] = []
        writer.observe(lambda event, updates=updates: updates.append(event.update))
        random_edits(writer, rng, 2000)
        replica = Replica(max_cut_values=4_000_000)
        for update in updates:
            replica.apply(update)
        assert replica.doc.get_update() == writer.get_update()


# -- blocks moved ------------------------------------------------------------------------------


def prepended(count: int, client: int = WRITER) -> list[bytes]:
    """Updates of ``count`` two-value items, each put before the one before it: as
    many blocks of the client (pycrdt merges none of them), in updates of 20,000."""
    updates = []
    for first in range(0, count, 20_000):
        structs = b""
        for k in range(first, min(count, first + 20_000)):
            if k == 0:
                structs += any_item(b"\x7e", b"\x7e", parent="values")
            else:  # its right origin: the first value of the item before
                structs += bytes([8 | 0x40]) + var_uint(client) + var_uint(2 * k - 2)
                structs += var_uint(2) + b"\x7e\x7e"
        count_in = min(count, first + 20_000) - first
        group = var_uint(count_in) + var_uint(client) + var_uint(2 * first) + structs
        updates.append(var_uint(1) + group + var_uint(0))
    return updates


def blocks_of(doc: pycrdt.Doc) -> dict[int, int]:
    """The blocks pycrdt holds, by client: the structs of its state."""
    return {group[0].client: len(group) for group in check_update(doc.get_update()).groups}


def test_cuts_into_a_client_holding_many_blocks_are_costed_by_the_blocks_they_move():
    # pycrdt keeps a client's blocks in one array: each cut moves those after it
    # along. 20,000 cuts of two-value items of a client holding 200,000 blocks
    # took 1.3 s, each item too short to count as long (1,000,000 blocks, 2,000
    # cuts: 1.6 s).
    replica = Replica(max_cut_values=4_000_000)
    for update in prepended(100_000):
        replica.apply(update)
    assert blocks_of(replica.doc)[WRITER] == 100_000
    before = replica.doc.get_update()

    with pytest.raises(InvalidUpdate) as refused:
        replica.apply(insertions([2 * k + 1 for k in range(5_000)]))

    assert refused.value.code is ErrorCode.TOO_LARGE
    assert replica.doc.get_update() == before
    # A few hundred cost what moving the array a few hundred times costs: taken.
    assert replica.apply(insertions([2 * k + 1 for k in range(0, 60_000, 200)])) is not None


def test_deleted_ranges_in_a_client_holding_many_blocks_are_costed_by_the_blocks_they_move():
    # Characters and embeds in turn, each its own block: deleted two by two, each
    # pair is joined into one block, moving the rest along (20,000 pairs of
    # 400,000 blocks: 2.4 s, the deletions applied level by level).
    items = [any_item(b"\x7e", parent="values")]
    for clock in range(1, 100_000):
        kind = 5 if clock % 2 else 8  # an embed, a value
        content = var_string('{"x":1}') if kind == 5 else var_uint(1) + b"\x7e"
        items.append(bytes([kind | 0x80]) + var_uint(WRITER) + var_uint(clock - 1) + content)
    replica = Replica(max_cut_values=4_000_000)
    for first in range(0, 100_000, 20_000):
        replica.apply(hand_update(WRITER, first, *items[first : first + 20_000]))
    before = replica.doc.get_update()
    pairs = var_uint(10_000) + b"".join(var_uint(4 * k) + var_uint(2) for k in range(10_000))

    with pytest.raises(InvalidUpdate) as refused:
        replica.apply(var_uint(0) + var_uint(1) + var_uint(WRITER) + pairs)

    assert refused.value.code is ErrorCode.TOO_LARGE
    assert replica.doc.get_update() == before


def test_a_sync_sending_every_deletion_again_moves_no_block_and_is_taken():
    # A client that reconnects sends what the server lacks, with every deletion
    # it knows of (Yjs sends its whole delete set): deleting again moves nothing.
    # Costed as new, 20,000 deletions in 40,000 blocks were refused.
    replica = Replica(max_cut_values=4_000_000)
    replica.apply(long_text(40_000))
    odd = [2 * k + 1 for k in range(20_000)]
    for first in range(0, 20_000, 50):  # every other character, 50 at a time
        replica.apply(deletions(odd[first : first + 50]))
    assert replica._long_items is not None and replica._long_items.blocks(WRITER) >= 40_000
    before = replica.doc.get_update()

    assert replica.apply(deletions(odd)) is None  # nothing new

    assert replica.doc.get_update() == before
    assert str(replica.doc.get("text", type=pycrdt.Text)) == "x" * 20_000


@pytest.mark.parametrize("seed", range(20))
def test_what_is_deleted_anew_is_found_among_what_was_deleted(seed):
    rng = random.Random(seed)
    deleted: set[int] = set()
    bounds = None
    for _ in range(rng.randint(1, 20)):
        spans, clock = [], 0
        for _ in range(rng.randint(1, 40)):
            clock += rng.randint(0, 20)
            spans.append((clock, clock + rng.randint(1, 10)))
            clock = spans[-1][1]
        for start, end in spans:
            parts = list(_anew(bounds, start, end))
            assert {c for first, last, *_ in parts for c in range(first, last)} == (
                set(range(start, end)) - deleted
            )
            for first, last, after_deleted, before_deleted in parts:
                assert after_deleted == (first - 1 in deleted)
                assert before_deleted == (last in deleted)
        bounds = _with_deleted(bounds, spans)
        deleted.update(c for start, end in spans for c in range(start, end))
        kept = {c for at in range(0, len(bounds), 2) for c in range(bounds[at], bounds[at + 1])}
        assert kept == deleted
        assert list(bounds) == sorted(set(bounds))  # ranges apart, none touching


def test_each_overwrite_of_a_map_entry_is_counted_a_block_of_its_own():
    # An overwrite names the entry before as its origin, as an appended value does,
    # and deletes it as it is integrated (its update need not say so): pycrdt
    # keeps the two apart. Counted as merged, half the blocks were missed.
    structs = b""
    for key in range(5_000):
        structs += any_item(b"\x7e", parent="map", key=f"k{key}")
        structs += bytes([8 | 0x80]) + var_uint(WRITER) + var_uint(2 * key) + var_uint(1) + b"\x7e"
    replica = Replica(max_cut_values=4_000_000)
    replica.apply(
        var_uint(1) + var_uint(10_000) + var_uint(WRITER) + var_uint(0) + structs + b"\x00"
    )

    assert replica._long_items is not None
    assert replica._long_items.blocks(WRITER) >= blocks_of(replica.doc)[WRITER] == 10_000


@pytest.mark.parametrize("seed", range(3))
def test_the_blocks_counted_are_never_fewer_than_pycrdt_holds(seed):
    # Three writers typing, deleting and filling at once, seeing one another now
    # and then, and a fourth cutting their items and deleting across them.
    rng = random.Random(seed)
    writers = [pycrdt.Doc(client_id=client) for client in (1, 2, 3)]
    sent: list[list[bytes]] = [[] for _ in writers]
    for writer, updates in zip(writers, sent, strict=True):
        writer.observe(lambda event, updates=updates: updates.append(event.update))
    replica = Replica(max_cut_values=4_000_000)
    cutter_clock = 0
    for _ in range(20):
        for writer, updates in zip(writers, sent, strict=True):
            random_edits(writer, rng, rng.randint(1, 60))
            for update in updates:
                replica.apply(update)
            updates.clear()
        state = replica.state()
        clocks = sorted({rng.randrange(1, state[1]) for _ in range(20)})
        cuts = insertions(clocks, client=CUTTER, into=1)
        replica.apply(cuts[:3] + var_uint(cutter_clock) + cuts[4:])
        cutter_clock += len(clocks)
        replica.apply(deletions(sorted({rng.randrange(state[2]) for _ in range(10)}), client=2))
        for writer, updates in zip(writers, sent, strict=True):
            if rng.random() < 0.5:
                writer.apply_update(replica.doc.get_update(writer.get_state()))
                updates.clear()  # what it was sent, not what it made
        restored = Replica(max_cut_values=4_000_000)
        restored.restore(replica.doc.get_update(), b"")
        for counted in (replica, restored):
            assert_blocks_counted(counted, replica.doc)


def assert_blocks_counted(replica: Replica, doc: pycrdt.Doc) -> None:
    """The replica counts at least the blocks pycrdt holds in ``doc``, of each
    client and from each bucket of clocks on (where a cut moves them)."""
    long_items = replica._long_items
    assert long_items is not None
    starts: dict[int, list[int]] = {}
    for group in check_update(doc.get_update()).groups:
        starts.setdefault(group[0].client, []).extend(s.clock for s in group if not s.skip)
    for client, clocks in starts.items():
        assert long_items.blocks(client) >= len(clocks), client
        places = long_items._places.get(client)
        for bucket in range(max(clocks) >> PLACE_BITS):
            first = bucket << PLACE_BITS
            held = sum(clock >= first for clock in clocks)
            assert _after(places, [first]) >= held, (client, bucket)


# -- what waits --------------------------------------------------------------------------------

ABSENT = 9  # a client whose items never come


def parked(clocks: range, client: int = CUTTER, into: int = WRITER) -> bytes:
    """One-value insertions after each of ``clocks`` of ``into``'s, behind a first
    one after an item of ABSENT's: all of it waits, for that item at least."""
    first = bytes([8 | 0x80]) + var_uint(ABSENT) + var_uint(0) + var_uint(1) + b"\x7e"
    after = b"".join(
        bytes([8 | 0x80]) + var_uint(into) + var_uint(clock) + var_uint(1) + b"\x7e"
        for clock in clocks
    )
    return (
        var_uint(1)
        + var_uint(1 + len(clocks))
        + var_uint(client)
        + var_uint(0)
        + first
        + after
        + b"\x00"
    )


def appender(replica: Replica, bounded: bool = True) -> pycrdt.Array:
    """WRITER's list of values, each value appended sent to ``replica`` at once."""
    writer = pycrdt.Doc(client_id=WRITER)
    writer.observe(lambda event: replica.apply(event.update, bounded=bounded))
    return writer.get("values", type=pycrdt.Array)


def test_a_writer_appending_is_not_refused_for_cuts_that_wait_for_something_else():
    # Insertions into the writer's next values, parked behind an item that never
    # comes, were costed with each of its appends as if they were released by it:
    # its appends were refused from the 2,837th on, for good (what waits stays).
    replica = Replica(max_cut_values=4_000_000, max_waiting_bytes=64 * 1024)
    values = appender(replica)
    values.extend(range(10))
    replica.apply(parked(range(10, 6_010)))
    assert replica.waiting is not None

    for value in range(10, 8_000):
        values.append(value)

    assert replica.doc.get("values", type=pycrdt.Array).to_py() == list(range(8_000))


def test_cuts_that_wait_are_costed_when_released_into_long_items_grown_meanwhile():
    # Parked when the items they cut were not there; the values came from another
    # instance (not costed), then the item they wait for: it releases 6,000 cuts
    # into 8,000 values, costed against the long items there are by then.
    replica = Replica(max_cut_values=4_000_000, max_waiting_bytes=64 * 1024)
    replica.apply(parked(range(10, 6_010)))
    values = appender(replica, bounded=False)
    for value in range(8_000):
        values.append(value)
    before, waiting = replica.doc.get_update(), replica.waiting

    with pytest.raises(InvalidUpdate) as refused:
        replica.apply(hand_update(ABSENT, 0, any_item(b"\x7e", parent="other")))

    assert refused.value.code is ErrorCode.TOO_LARGE
    assert replica.doc.get_update() == before and replica.waiting == waiting


# -- edits the server makes on a copy --------------------------------------------------------


def made_on_copy(replica: Replica, *edits: dict) -> bytes | None:
    """What JSON ``edits`` make on a copy of the replica's document, metered."""
    work = pycrdt.Doc()
    work.apply_update(replica.doc.get_update())
    parsed = edit_ops.parse(json.dumps({"edits": list(edits)}).encode())
    return made_on(work, lambda: edit_ops.apply(work, parsed, {}), replica.cut_meter())


def test_edits_made_on_a_copy_stop_once_they_cost_more_than_one_update_may():
    # 1,000 JSON deletions of one value each, in turn, in a list of a million: each
    # cut copies what is left of it. Made on the copy, they took 7 s of pycrdt's
    # time (26 s with the event loop wanting the GIL meanwhile), their update then
    # refused; in a list of 200,000, 1.1 s, their update accepted.
    replica = Replica(max_cut_values=4_000_000)
    replica.apply(long_values(1_000_000))
    deletions = [
        {"op": "array.delete", "root": "values", "index": 1 + i, "length": 1} for i in range(1000)
    ]

    with pytest.raises(InvalidUpdate) as refused:
        made_on_copy(replica, *deletions)

    assert refused.value.code is ErrorCode.TOO_LARGE and "max_cut_values" in refused.value.message
    # A few, and edits that cut nothing, are made.
    made = made_on_copy(
        replica,
        {"op": "array.insert", "root": "values", "index": 500_000, "values": [1]},
        {"op": "array.insert", "root": "values", "values": list(range(20_000))},
        *deletions[:2],
    )
    assert made is not None and replica.apply(made) is not None
    assert len(replica.doc.get("values", type=pycrdt.Array)) == 1_000_000 + 20_001 - 2
