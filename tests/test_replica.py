"""The replica integrates updates as Yjs does, so that pycrdt never holds what Yjs
would not: parts waiting for dependencies stay out of pycrdt, items under a
parent that is not a type become GC structs, cut surrogate pairs are refused, and
what the document has already is left out of what is stored and relayed."""

from __future__ import annotations

import itertools
import random

import pycrdt
import pytest

from collab.errors import InvalidUpdate
from collab.wire import crdt
from collab.wire.replica import Replica
from collab.wire.yformat import ANY, STRING, check_update, decode_state_vector
from tests.fuzz import node_available, replay_in_node
from tests.test_yformat import any_item, hand_update, root_item, var_string, var_uint


def edits(client_id: int = 1) -> tuple[pycrdt.Doc, list[bytes]]:
    """A doc whose every transaction's update is recorded."""
    doc = pycrdt.Doc(client_id=client_id)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    return doc, updates


def text(replica: Replica, name: str = "text") -> str:
    return str(replica.doc.get(name, type=pycrdt.Text))


def test_an_update_that_waits_for_its_dependency_stays_out_of_pycrdt_until_it_arrives():
    author, updates = edits()
    author.get("text", type=pycrdt.Text).insert(0, "hello")
    author.get("text", type=pycrdt.Text).insert(5, " world")
    hello, world = updates
    replica = Replica()

    applied = replica.apply(world)
    assert applied is not None and applied.stored == world  # stored as it is
    assert applied.effect == b"\x00\x00"  # nothing integrated: peers are sent nothing yet
    assert text(replica) == ""
    assert replica.state() == {}  # nothing of it is in pycrdt, not even as pending
    assert replica.waiting == world

    applied = replica.apply(hello)
    assert applied is not None and applied.stored == hello
    released = pycrdt.Doc()
    released.apply_update(applied.effect)  # its own part and the one it released
    assert str(released.get("text", type=pycrdt.Text)) == "hello world"
    assert text(replica) == "hello world"
    assert replica.waiting is None
    assert replica.waiting_bytes == 0


def test_a_map_entry_behind_a_clock_gap_waits_while_its_deletion_applies():
    # As in Yjs: the old value's deletion applies at once, the new value (after a
    # gap in its client's clocks) only once the gap is filled.
    author, updates = edits(client_id=2)
    entries = author.get("map", type=pycrdt.Map)
    entries["key"] = "old"
    entries["other"] = 1
    entries["key"] = "new"
    first, second, third = updates
    replica = Replica()
    replica.apply(first)

    replica.apply(third)  # waits for second

    assert replica.doc.get("map", type=pycrdt.Map).to_py() == {}
    assert replica.state() == {2: 1}
    replica.apply(second)
    assert replica.doc.get("map", type=pycrdt.Map).to_py() == {"key": "new", "other": 1}


def test_deletions_of_items_the_document_lacks_wait_and_the_rest_applies_at_once():
    author, updates = edits()
    body = author.get("text", type=pycrdt.Text)
    body.insert(0, "abc")
    body.insert(3, "def")
    del body[1:5]  # deletes from both inserts
    abc, _def, deletion = updates
    replica = Replica()
    replica.apply(abc)

    assert replica.apply(deletion) is not None
    assert text(replica) == "a"  # "bc" deleted now, "de" once it exists
    assert replica.waiting is not None

    replica.apply(_def)
    assert text(replica) == "af"
    assert replica.waiting is None


def test_an_update_resent_while_it_waits_is_a_replay():
    author, updates = edits()
    author.get("text", type=pycrdt.Text).insert(0, "a")
    author.get("text", type=pycrdt.Text).insert(1, "b")
    replica = Replica()
    replica.apply(updates[1])

    assert replica.apply(updates[1]) is None
    assert replica.waiting == updates[1]


def test_waiting_bytes_are_bounded_for_new_updates_and_refused_past_the_bound():
    author, updates = edits()
    for index in range(4):
        author.get("text", type=pycrdt.Text).insert(index, "x" * 100)
    replica = Replica(max_waiting_bytes=250)
    replica.apply(updates[1])
    replica.apply(updates[2])
    waiting = replica.waiting

    with pytest.raises(InvalidUpdate, match="bytes wait already"):
        replica.apply(updates[3])
    assert replica.waiting == waiting  # unchanged by the refusal
    assert replica.apply(updates[3], bounded=False) is not None  # a stored entry loads


def test_a_replay_is_none_and_changes_nothing():
    author, updates = edits()
    author.get("text", type=pycrdt.Text).insert(0, "hello")
    del author.get("text", type=pycrdt.Text)[0:1]
    replica = Replica()
    for update in updates:
        replica.apply(update)

    assert replica.apply(updates[0]) is None
    assert replica.apply(updates[1]) is None
    assert replica.apply(author.get_update()) is None
    assert text(replica) == "ello"


def test_an_update_partly_held_already_is_stored_without_that_part():
    author, updates = edits()
    body = author.get("text", type=pycrdt.Text)
    body.insert(0, "hello")
    body.insert(5, " world")
    merged = pycrdt.merge_updates(*updates)  # one struct, "hello world", from clock 0
    replica = Replica()
    replica.apply(updates[0])

    applied = replica.apply(merged)

    assert applied is not None and applied.stored != merged
    stored = applied.stored
    assert check_update(stored).structs == ((1, 5, 11),)  # only what was new
    assert text(replica) == "hello world"
    fresh = pycrdt.Doc()
    fresh.apply_update(updates[0])
    fresh.apply_update(stored)
    assert str(fresh.get("text", type=pycrdt.Text)) == "hello world"


def test_an_item_under_a_parent_that_is_not_a_type_becomes_a_gc_struct():
    author, updates = edits(client_id=2)
    author.get("text", type=pycrdt.Text).insert(0, "abc")  # items 2:0..3, not types
    replica = Replica()
    replica.apply(updates[0])
    # An item naming 2:1, a character, as its parent: pycrdt would fail half-way.
    orphan = bytes([8]) + var_uint(0) + var_uint(2) + var_uint(1) + var_uint(1) + b"\x7e"

    stored = replica.apply(hand_update(2, 3, orphan))

    assert stored is not None and stored.effect == stored.stored
    assert decode_state_vector(replica.doc.get_state()) == {2: 4}  # its clock is taken
    assert text(replica) == "abc"


def test_an_update_cannot_make_an_item_the_document_has_a_type():
    author, updates = edits(client_id=2)
    author.get("arr", type=pycrdt.Array).append(1)  # item 2:0 holds a value
    replica = Replica()
    replica.apply(updates[0])
    # The same clock claimed as an array, and a child under it: the document's
    # item decides, so the child becomes a GC struct as in Yjs.
    claimed_type = root_item(7, var_uint(0), parent="arr")
    child = bytes([8]) + var_uint(0) + var_uint(2) + var_uint(0) + var_uint(1) + b"\x7e"

    stored = replica.apply(hand_update(2, 0, claimed_type, child))

    assert stored is not None
    assert decode_state_vector(replica.doc.get_state()) == {2: 2}
    assert replica.doc.get("arr", type=pycrdt.Array).to_py() == [1.0]


def test_an_item_under_a_nested_type_is_integrated():
    author, updates = edits(client_id=2)
    author.get("map", type=pycrdt.Map)["inner"] = pycrdt.Array()
    author.get("map", type=pycrdt.Map)["inner"].append(1)
    replica = Replica()
    for update in updates:
        replica.apply(update)

    assert replica.doc.get("map", type=pycrdt.Map).to_py() == {"inner": [1.0]}


@pytest.mark.parametrize(
    "cut", ["delete the second half", "delete the first half", "insert between"]
)
def test_an_update_that_cuts_a_surrogate_pair_in_two_is_refused(cut: str):
    author, updates = edits(client_id=1)
    author.get("text", type=pycrdt.Text).insert(0, "a😀b")  # clocks: a 0, 😀 1-2, b 3
    replica = Replica()
    replica.apply(updates[0])
    attack = {
        "delete the second half": var_uint(0)
        + var_uint(1)
        + var_uint(1)
        + var_uint(1)
        + var_uint(2)
        + var_uint(1),
        "delete the first half": var_uint(0)
        + var_uint(1)
        + var_uint(1)
        + var_uint(1)
        + var_uint(1)
        + var_uint(1),
        # origin 1:1, the first half of the emoji
        "insert between": hand_update(9, 0, b"\x84" + var_uint(1) + var_uint(1) + var_string("x")),
    }[cut]

    with pytest.raises(InvalidUpdate, match="surrogate pair"):
        replica.apply(attack)
    assert text(replica) == "a😀b"


def test_deleting_a_whole_astral_character_is_accepted():
    author, updates = edits(client_id=1)
    body = author.get("text", type=pycrdt.Text)
    body.insert(0, "a😀b")
    del body[1:5]  # pycrdt's text offsets count UTF-8 bytes
    replica = Replica()
    for update in updates:
        replica.apply(update)

    assert text(replica) == "ab"


def test_encode_carries_what_waits_and_diff_only_what_is_integrated():
    author, updates = edits()
    author.get("text", type=pycrdt.Text).insert(0, "hello")
    author.get("text", type=pycrdt.Text).insert(5, "!")
    replica = Replica()
    replica.apply(updates[1])

    history = pycrdt.Doc()
    history.apply_update(replica.encode())  # the whole state, for history and snapshots
    history.apply_update(updates[0])
    assert str(history.get("text", type=pycrdt.Text)) == "hello!"
    assert replica.diff(b"\x00") == pycrdt.Doc().get_update()  # peers: nothing yet


def test_a_snapshot_restores_what_was_integrated_and_what_waited():
    author, updates = edits()
    for word in ("a", "b", "c"):
        author.get("text", type=pycrdt.Text).insert(
            len(str(author.get("text", type=pycrdt.Text))), word
        )
    replica = Replica()
    replica.apply(updates[0])
    replica.apply(updates[2])  # waits for "b"

    restored = Replica()
    restored.restore(replica.doc.get_update(), replica.waiting)
    restored.apply(updates[1])

    assert text(restored) == "abc"


def test_a_replica_restored_from_a_snapshot_knows_its_types_and_astral_characters():
    author, updates = edits(client_id=2)
    author.get("arr", type=pycrdt.Array).append(pycrdt.Array([1]))  # 2:0 a type, 2:1 a value
    author.get("text", type=pycrdt.Text).insert(0, "a😀b")  # 2:2 a, 2:3-4 the emoji, 2:5 b
    live = Replica()
    for update in updates:
        live.apply(update)

    # (Restoring keeps only the structs it learns from of the snapshot's check.)
    restored = Replica()
    restored.restore(live.doc.get_update(), b"")

    child = bytes([8]) + var_uint(0) + var_uint(2) + var_uint(0) + var_uint(1) + b"\x7e"
    assert restored.apply(hand_update(3, 0, child)) is not None
    # A child of the inner array (2:0), not a GC struct: it is known to be a type.
    assert restored.doc.get("arr", type=pycrdt.Array).to_py() == [[1.0, None]]
    cut = var_uint(0) + var_uint(1) + var_uint(2) + var_uint(1) + var_uint(3) + var_uint(1)
    with pytest.raises(InvalidUpdate, match="surrogate pair"):
        restored.apply(cut)


def test_a_map_entry_with_several_values_keeps_the_last():
    replica = Replica()
    replica.apply(hand_update(5, 0, any_item(b"\x7d\x01", b"\x7d\x02", key="k")))

    assert replica.doc.get("root", type=pycrdt.Map).to_py() == {"k": 2.0}


def test_empty_structs_never_reach_pycrdt_nor_the_log():
    # pycrdt panics on an empty ANY item once its client has an item; Yrs itself
    # writes empty string items. Both are left out of what is applied and stored.
    author, updates = edits(client_id=2)
    author.get("arr", type=pycrdt.Array).append(1)
    replica = Replica()
    replica.apply(updates[0])
    empty_any = bytes([8]) + var_uint(1) + var_string("arr") + var_uint(0)

    assert replica.apply(hand_update(2, 1, empty_any)) is None  # nothing in it
    applied = replica.apply(hand_update(2, 1, empty_any, any_item(b"\x7e", parent="arr")))

    assert applied is not None
    assert check_update(applied.stored).has_empty is False
    assert replica.doc.get("arr", type=pycrdt.Array).to_py() == [None, 1.0]  # no origin: first


def test_of_two_waiting_claims_on_one_clock_the_first_is_kept_as_in_yjs():
    # Yjs merges its pending structs into one update, keeping the struct it held
    # already when another claims the same clocks; the replica does the same.
    author, updates = edits(client_id=3)
    author.get("text", type=pycrdt.Text).insert(0, "a")
    author.get("text", type=pycrdt.Text).insert(1, "b")
    forger = pycrdt.Doc(client_id=3)
    forger.apply_update(updates[0])
    forger.get("text", type=pycrdt.Text).insert(1, "X")  # another item at clock 1
    forged = forger.get_update(author.get_state()[:0] + b"\x01\x03\x01")
    replica = Replica()
    replica.apply(updates[1])  # "b" at clock 1 waits for clock 0
    replica.apply(forged)  # "X" at clock 1 waits too: the first claim stays

    replica.apply(updates[0])

    assert text(replica) == "ab"
    assert replica.waiting is None


def test_a_long_run_of_updates_merges_into_what_applying_them_in_turn_makes():
    # Past crdt.MERGE_FANOUT updates, merged as merges of merges.
    docs = [pycrdt.Doc(client_id=client) for client in (1, 2, 3)]
    made: list[bytes] = []
    for doc in docs:
        doc.observe(lambda event: made.append(event.update))
    for step in range(500):
        doc = docs[step % 3]
        body = doc.get("text", type=pycrdt.Text)
        if step % 7 == 6 and len(body) > 2:
            del body[0:1]
        else:
            body.insert(len(body) // 2, f"{step} ")
        doc.get("map", type=pycrdt.Map)[str(step % 5)] = step
        if step % 10 == 9:  # every author sees the others now and then
            for other in docs:
                if other is not doc:
                    other.apply_update(doc.get_update(other.get_state()))
    assert len(made) > 4 * crdt.MERGE_FANOUT
    in_turn = pycrdt.Doc()
    for update in made:
        in_turn.apply_update(update)

    merged = pycrdt.Doc()
    merged.apply_update(crdt.merge(made))

    assert merged.get_update() == in_turn.get_update()


def random_edits(doc: pycrdt.Doc, rng: random.Random, count: int) -> None:
    """``count`` transactions of typing, deleting and filling a text, an array and a
    map, in bursts of one kind (as people type): half of them all at the end (or
    of one key), making runs long enough to be written again."""
    text = doc.get("text", type=pycrdt.Text)
    items = doc.get("items", type=pycrdt.Array)
    fields = doc.get("fields", type=pycrdt.Map)
    done = 0
    while done < count:
        roll, burst, straight = rng.random(), rng.randint(1, 60), rng.random() < 0.5
        key = rng.choice("kl")
        for _ in range(burst):
            at_end = straight or rng.random() < 0.8
            if roll < 0.4:
                at = len(text) if at_end else rng.randint(0, len(text))
                text.insert(at, rng.choice(["a", "b", "xy"]))
            elif roll < 0.5 and len(text):
                start = rng.randrange(len(text))
                del text[start : start + 1]
            elif roll < 0.85:
                at = len(items) if at_end else rng.randint(0, len(items))
                items.insert(at, rng.choice([rng.randrange(100), "v", None, 2.5]))
            elif roll < 0.9 and len(items):
                del items[rng.randrange(len(items))]
            else:
                fields[key if straight else rng.choice("kl")] = rng.randrange(100)
        done += burst


def contents(doc: pycrdt.Doc) -> tuple[str, list, dict]:
    return (
        str(doc.get("text", type=pycrdt.Text)),
        doc.get("items", type=pycrdt.Array).to_py(),
        doc.get("fields", type=pycrdt.Map).to_py(),
    )


def without_deletions(update: bytes) -> bytes:
    """``update`` with its delete set left out (its structs end where it begins)."""
    ranges = check_update(update)
    crafted = update[: ranges.groups[-1][-1].span[1]] + var_uint(0)
    assert check_update(crafted).structs == ranges.structs and not check_update(crafted).deletes
    return crafted


def longest_run(update: bytes) -> int:
    """The most structs in a row of one client that pycrdt would merge: each at the
    clock where the one before ends, naming its last clock as origin, with the same
    right origin and content kind (characters or values; the first not a map
    entry named by its key), not where the update's deletions start or end."""
    ranges = check_update(update)
    cuts = {(client, clock) for client, *ends in ranges.deletes for clock in ends}
    longest = 0
    for group in ranges.groups:
        length = 1
        for left, right in itertools.pairwise(group):
            merges = (
                (right.client, right.clock) not in cuts
                and right.clock == left.end
                and right.kind == left.kind
                and left.kind in (STRING, ANY)
                and not left.keyed
                and right.origin == (left.client, left.end - 1)
                and right.right_origin == left.right_origin
            )
            length = length + 1 if merges else 1
            longest = max(longest, length)
    return longest


@pytest.mark.parametrize("deletions", ["kept", "left out"])
@pytest.mark.parametrize("seed", range(6))
def test_runs_pycrdt_would_merge_are_stored_merged_and_make_the_same_document(seed, deletions):
    # One update made of every transaction of one writer (as merging them, or an
    # offline client, makes it): runs of items each following the one before. Taken
    # as they are, pycrdt merges each run at a cost that grows with its square (one
    # of 20,000: several GiB); the replica stores and integrates each run as two
    # items, and the document is the one pycrdt makes of the update. Also when the
    # update leaves its deletions out (a crafted one): a map key's overwrites then
    # delete the ones before only as they are integrated.
    rng = random.Random(seed)
    writer, updates = edits(client_id=11)
    other, _ = edits(client_id=5)
    random_edits(other, rng, 40)
    writer.apply_update(other.get_update())
    base = writer.get_update()
    updates.clear()
    random_edits(writer, rng, 400)
    random_edits(other, rng, 40)  # concurrent with the writer's
    merged = crdt.merge(updates)
    if deletions == "left out":
        merged = without_deletions(merged)

    replica = Replica()
    replica.apply(base)
    applied = replica.apply(merged)
    plain = pycrdt.Doc()
    plain.apply_update(base)
    plain.apply_update(merged)

    assert applied is not None
    assert longest_run(merged) > 5
    assert longest_run(applied.stored) == 2
    assert replica.doc.get_update() == plain.get_update()
    # Concurrent edits land in the same places in both.
    for doc in (replica.doc, plain, writer):
        doc.apply_update(other.get_update())
    assert contents(replica.doc) == contents(plain)
    if deletions == "kept":
        assert contents(replica.doc) == contents(writer)
    assert replica.doc.get_update() == plain.get_update()
    # A peer given what was stored makes the same document.
    peer = pycrdt.Doc()
    peer.apply_update(base)
    peer.apply_update(applied.stored)
    peer.apply_update(other.get_update())
    assert peer.get_update() == plain.get_update()


def test_a_long_run_of_one_value_items_is_integrated_as_two_items():
    # 5,000 keystrokes (some outside the Basic Multilingual Plane) and 5,000 values
    # appended, one transaction each, merged into one update: pycrdt alone takes it
    # at 0.3 s and 570 MiB (20,000 values: several GiB, what one update may carry).
    writer, updates = edits(client_id=21)
    typed = writer.get("text", type=pycrdt.Text)
    values = writer.get("items", type=pycrdt.Array)
    for i in range(5000):
        typed.insert(len(typed), "aé\U0001f600"[i % 3])
    for i in range(5000):
        values.append(i)
    merged = crdt.merge(updates)
    assert sum(map(len, check_update(merged).groups)) == 10_000

    replica = Replica()
    applied = replica.apply(merged)

    assert applied is not None
    assert sum(map(len, check_update(applied.stored).groups)) == 4  # two a run
    assert replica.doc.get_update() == writer.get_update()
    assert text(replica) == str(typed) and len(text(replica)) == 5000


@pytest.mark.parametrize("first", ["in the update", "in the document"])
def test_overwrites_of_a_map_entry_that_delete_nothing_make_the_document_pycrdt_makes(first):
    # Each overwrite of a key names the entry before it and deletes it as it is
    # integrated; an update may leave those deletions out of its delete set (a
    # crafted one). Its overwrites are a run pycrdt would merge (if they were not
    # deleted): written as one item, the run kept every value it overwrote, as one
    # entry of 40 values (a Yjs peer read them all), where pycrdt keeps the last.
    writer, updates = edits(client_id=7)
    entries = writer.get("map", type=pycrdt.Map)
    entries["key"] = "first"
    for i in range(40):
        entries["key"] = i
    base = updates[0] if first == "in the document" else None
    crafted = without_deletions(crdt.merge(updates[1:] if base else updates))
    replica = Replica()
    plain = pycrdt.Doc()
    if base is not None:
        replica.apply(base)
        plain.apply_update(base)

    applied = replica.apply(crafted)
    plain.apply_update(crafted)

    assert applied is not None and longest_run(applied.stored) == 2
    assert replica.doc.get("map", type=pycrdt.Map).to_py() == {"key": 39}
    assert replica.doc.get_update() == plain.get_update()
    peer = pycrdt.Doc()  # given what was stored
    if base is not None:
        peer.apply_update(base)
    peer.apply_update(applied.stored)
    assert peer.get_update() == plain.get_update()
    # The sender's deletions, sent later, delete the same items in both.
    for doc in (replica.doc, plain):
        doc.apply_update(writer.get_update())
    assert replica.doc.get_update() == plain.get_update() == writer.get_update()


async def test_a_yjs_document_given_what_is_stored_is_the_one_given_what_was_sent():
    if not node_available():
        pytest.skip("Node.js and tests/node/node_modules are needed to read updates in Yjs")
    # Runs of characters (some outside the Basic Multilingual Plane), of values and
    # of a map key's overwrites, concurrent with another writer's, with and without
    # their deletions.
    writer, updates = edits(client_id=11)
    other, _ = edits(client_id=5)
    rng = random.Random(3)
    random_edits(other, rng, 40)
    writer.apply_update(other.get_update())
    base = writer.get_update()
    updates.clear()
    random_edits(writer, rng, 400)
    entries = writer.get("fields", type=pycrdt.Map)
    for i in range(40):
        entries["k"] = i
    merged = crdt.merge(updates)
    random_edits(other, rng, 40)
    sent: dict[str, list[bytes]] = {}
    stored: dict[str, list[bytes]] = {}
    for label, update in (("whole", merged), ("crafted", without_deletions(merged))):
        replica = Replica()
        replica.apply(base)
        applied = replica.apply(update)
        assert applied is not None and longest_run(applied.stored) == 2
        sent[label] = [base, update, other.get_update()]
        stored[label] = [base, applied.stored, other.get_update()]

    read = await replay_in_node({**sent, **{f"{k} stored": v for k, v in stored.items()}})

    assert read is not None
    for label in sent:
        assert read[label]["ok"] and read[label]["dump"] == read[f"{label} stored"]["dump"]


def test_an_update_with_a_gap_in_its_clocks_is_stored_with_each_struct_at_its_clock():
    # What a Yjs client sends of updates it holds pending: a writer's first and
    # third updates merged, a skip struct where the second goes. The first is
    # integrated, the third waits; the update stored left the skip out, so the
    # third's item was logged at the second's clock and the log made another
    # document than the live one (the second's item was then taken as held).
    writer, updates = edits(client_id=2)
    values = writer.get("values", type=pycrdt.Array)
    values.append("x")
    values.append("y")
    values.insert(0, "z")
    first, second, third = updates
    sent = crdt.merge([first, third])
    replica = Replica()

    applied = replica.apply(sent)
    replica.apply(second)

    assert applied is not None
    assert check_update(applied.stored).structs == check_update(sent).structs
    assert replica.doc.get("values", type=pycrdt.Array).to_py() == ["z", "x", "y"]
    from_log = Replica()
    for update in (applied.stored, second):
        from_log.apply(update)
    assert from_log.doc.get_update() == replica.doc.get_update() == writer.get_update()


def test_a_run_is_cut_where_the_update_deletes_part_of_it():
    # pycrdt deletes what an update deletes after integrating its items, cutting
    # an item at each end of a deleted range at a cost that grows with the item's
    # length: 20,000 appended values, one in two deleted in the same update, took
    # 9 ms as they came and 0.7 s written as one item. Each stored item is deleted
    # whole or not at all.
    writer, updates = edits(client_id=3)
    values = writer.get("values", type=pycrdt.Array)
    for i in range(400):
        values.append(i)
    for i in range(200):
        del values[i]  # every other value: 1, 3, 5... are left
    sent = crdt.merge(updates)
    replica = Replica()

    applied = replica.apply(sent)

    assert applied is not None
    ranges = check_update(applied.stored)
    deleted = {clock for _, start, end in ranges.deletes for clock in range(start, end)}
    for struct in ranges.groups[0]:
        assert len({clock in deleted for clock in range(struct.clock, struct.end)}) == 1
    assert replica.doc.get_update() == writer.get_update()
    assert values.to_py() == list(range(1, 400, 2))


def test_a_state_whose_short_runs_pycrdt_could_not_merge_is_stored_as_it_is():
    # Two writers typing at one place at once: each writer's characters name the
    # one before, with the other's between them, so pycrdt could not merge them
    # and its state holds them as short runs, which cost it little. Written again,
    # such a state cost a second reading for nothing (a 10 MiB document's: 0.15 s
    # to apply, 0.3 s written again).
    first, second = pycrdt.Doc(client_id=2), pycrdt.Doc(client_id=1)
    typed = first.get("text", type=pycrdt.Text)
    other = second.get("text", type=pycrdt.Text)
    for i in range(100):
        typed.insert(len(typed), "a")
        second.apply_update(first.get_update(second.get_state()))
        other.insert(len(other), "b")  # after the "a"
        typed.insert(len(typed), "a")  # after it too: the "b" is not here yet
        first.apply_update(second.get_update(first.get_state()))
        if i % 8 == 0:
            typed.insert(0, "c")  # a new paragraph elsewhere: the run ends
    state = first.get_update()
    assert 1 < longest_run(state) < 32

    replica = Replica()
    applied = replica.apply(state)

    assert applied is not None and applied.stored == state
    assert replica.doc.get_update() == state
