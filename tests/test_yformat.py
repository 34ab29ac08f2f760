"""The strict Yjs readers: varints, state vectors, awareness updates and the clock
ranges an update carries, checked against what pycrdt (Yrs) writes."""

from __future__ import annotations

import json

import pycrdt
import pytest

from collab.wire.yformat import (
    MAX_VALUE_DEPTH,
    CheckedUpdates,
    FormatError,
    Reader,
    UpdateRanges,
    check_update,
    decode_awareness_update,
    decode_state_vector,
)

# -- lib0 encoders, to build inputs by hand ---------------------------------------------------


def var_uint(value: int) -> bytes:
    return pycrdt.write_var_uint(value)


def var_int(value: int) -> bytes:
    """lib0 ``writeVarInt``: sign in bit 6 of the first byte, 6 then 7 bits a byte."""
    negative, value = value < 0, abs(value)
    out = [(0x80 if value > 0x3F else 0) | (0x40 if negative else 0) | (value & 0x3F)]
    value >>= 6
    while value:
        out.append((0x80 if value > 0x7F else 0) | (value & 0x7F))
        value >>= 7
    return bytes(out)


def var_string(text: str) -> bytes:
    data = text.encode()
    return var_uint(len(data)) + data


def awareness(*entries: tuple[int, int, str]) -> bytes:
    """An awareness update with each state given as raw JSON text."""
    body = b"".join(var_uint(c) + var_uint(k) + var_string(s) for c, k, s in entries)
    return var_uint(len(entries)) + body


def root_item(kind: int, content: bytes, parent: str = "root") -> bytes:
    """A struct with no origins, parented by a root type: info byte, parent, content."""
    return bytes([kind]) + var_uint(1) + var_string(parent) + content


def hand_update(client: int, clock: int, *structs: bytes) -> bytes:
    structs_part = var_uint(len(structs)) + var_uint(client) + var_uint(clock) + b"".join(structs)
    return var_uint(1) + structs_part + var_uint(0)


# -- varints -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "value"),
    [
        (b"\x00", 0),
        (b"\x01", 1),
        (b"\x7f", 127),
        (b"\x80\x01", 128),
        (b"\xac\x02", 300),
        (b"\xff\xff\x03", 2**16 - 1),
        (b"\xff" * 9 + b"\x01", 2**64 - 1),
    ],
)
def test_var_uint_reads_lib0_encodings(data: bytes, value: int):
    reader = Reader(data)

    assert reader.read_var_uint() == value
    assert reader.at_end


def test_var_uint_reads_what_pycrdt_writes():
    values = [*range(300), 2**14 - 1, 2**14, 2**21, 2**32 - 1, 2**53 - 1]
    reader = Reader(b"".join(var_uint(v) for v in values))

    assert [reader.read_var_uint() for _ in values] == values
    assert reader.at_end


@pytest.mark.parametrize("data", [b"", b"\x80", b"\xff\xff", b"\xff" * 9])
def test_a_truncated_var_uint_is_a_format_error(data: bytes):
    with pytest.raises(FormatError, match="unexpected end"):
        Reader(data).read_var_uint()


def test_a_var_uint_longer_than_ten_bytes_is_a_format_error():
    with pytest.raises(FormatError, match="too long"):
        Reader(b"\x80" * 10 + b"\x01").read_var_uint()


@pytest.mark.parametrize(
    ("data", "value"),
    [
        (b"\x00", 0),
        (b"\x01", 1),
        (b"\x41", -1),
        (b"\x3f", 63),
        (b"\x7f", -63),
        (b"\x80\x01", 64),
        (b"\xc0\x01", -64),
        (b"\xbf\x7f", 8191),
        (b"\x80\x80\x01", 8192),
    ],
)
def test_var_int_reads_lib0_encodings(data: bytes, value: int):
    assert var_int(value) == data  # the test's encoder agrees with lib0
    reader = Reader(data)

    assert reader.read_var_int() == value
    assert reader.at_end


def test_var_int_round_trips_large_and_negative_values():
    values = [2**31 - 1, -(2**31), 2**53 - 1, -(2**53 - 1), 123456789, -987654321]
    reader = Reader(b"".join(var_int(v) for v in values))

    assert [reader.read_var_int() for _ in values] == values


@pytest.mark.parametrize("data", [b"", b"\x80", b"\xc0\x80"])
def test_a_truncated_var_int_is_a_format_error(data: bytes):
    with pytest.raises(FormatError, match="unexpected end"):
        Reader(data).read_var_int()


def test_a_var_int_longer_than_ten_bytes_is_a_format_error():
    with pytest.raises(FormatError, match="too long"):
        Reader(b"\xff" * 11 + b"\x01").read_var_int()


def test_bytes_and_strings_must_be_complete_and_strings_utf8():
    with pytest.raises(FormatError, match="past the end"):
        Reader(var_uint(5) + b"abc").read_var_bytes()
    with pytest.raises(FormatError, match="UTF-8"):
        Reader(var_uint(2) + b"\xc3\x28").read_var_string()
    assert Reader(var_string("héllo 😀")).read_var_string() == "héllo 😀"


@pytest.mark.parametrize(
    "value",
    [
        b"\x7f",  # undefined
        b"\x7e",  # null
        b"\x79",  # false
        b"\x78",  # true
        b"\x7d" + var_int(-5000),
        b"\x7c" + b"\x00" * 4,  # float32
        b"\x7b" + b"\x00" * 8,  # float64
        b"\x77" + var_string("text"),
        b"\x76" + var_uint(2) + var_string("a") + b"\x7e" + var_string("b") + b"\x78",
        b"\x75" + var_uint(2) + b"\x7d\x01" + b"\x75\x01\x7e",
        b"\x74" + var_uint(3) + b"\x00\x01\x02",
    ],
)
def test_read_any_skips_exactly_one_value_of_every_kind(value: bytes):
    reader = Reader(value + b"\x2a")

    reader.read_any()

    assert reader.read_u8() == 0x2A
    assert reader.at_end


def test_read_any_refuses_unknown_tags_and_deep_nesting():
    with pytest.raises(FormatError, match="unknown value tag 1"):
        Reader(b"\x01").read_any()
    with pytest.raises(FormatError, match="nests deeper than 64 levels"):
        Reader(b"\x75\x01" * 100 + b"\x7e").read_any()


# -- state vectors -----------------------------------------------------------------------------


def two_client_doc() -> pycrdt.Doc:
    first = pycrdt.Doc(client_id=1)
    first.get("text", type=pycrdt.Text).insert(0, "ab")
    second = pycrdt.Doc(client_id=300)
    second.apply_update(first.get_update())
    second.get("text", type=pycrdt.Text).insert(2, "cde")
    return second


def test_decode_state_vector_reads_what_pycrdt_writes():
    assert decode_state_vector(two_client_doc().get_state()) == {1: 2, 300: 3}
    assert decode_state_vector(pycrdt.Doc().get_state()) == {}


@pytest.mark.parametrize("cut", [0, 1, 2, 3, 4])
def test_a_truncated_state_vector_is_a_format_error(cut: int):
    state = two_client_doc().get_state()
    assert len(state) > cut

    with pytest.raises(FormatError):
        decode_state_vector(state[:cut])


def test_a_state_vector_with_trailing_bytes_is_a_format_error():
    with pytest.raises(FormatError, match="trailing"):
        decode_state_vector(two_client_doc().get_state() + b"\x00")


# -- awareness ---------------------------------------------------------------------------------


def test_decode_awareness_update_reads_what_pycrdt_writes():
    mine = pycrdt.Awareness(pycrdt.Doc(client_id=10))
    theirs = pycrdt.Awareness(pycrdt.Doc(client_id=20))
    mine.set_local_state({"user": {"name": "ann", "color": "#f00"}, "cursor": None})
    theirs.set_local_state({"user": {"name": "bob"}})
    theirs.set_local_state({"user": {"name": "bob"}, "typing": True})
    mine.apply_awareness_update(theirs.encode_awareness_update([20]), "remote")

    entries = decode_awareness_update(mine.encode_awareness_update([10, 20]))

    assert [(e.client_id, e.clock, e.state) for e in entries] == [
        (10, 1, {"user": {"name": "ann", "color": "#f00"}, "cursor": None}),
        (20, 2, {"user": {"name": "bob"}, "typing": True}),
    ]


def test_a_null_awareness_state_means_the_client_left():
    presence = pycrdt.Awareness(pycrdt.Doc(client_id=10))
    presence.set_local_state({"user": "ann"})
    presence.set_local_state(None)

    [entry] = decode_awareness_update(presence.encode_awareness_update([10]))

    assert (entry.client_id, entry.clock, entry.state) == (10, 2, None)


def test_an_empty_awareness_update_has_no_entries():
    assert decode_awareness_update(b"\x00") == []


@pytest.mark.parametrize(
    "state",
    [
        "{bad json",
        "",
        '{"a": 1} trailing',
        '{"n": ' + "1" * 5000 + "}",  # past Python's int digit limit
        "[" * 100_000 + "]" * 100_000,  # past the recursion limit
    ],
)
def test_an_awareness_state_that_is_not_json_is_a_format_error(state: str):
    with pytest.raises(FormatError, match="client 7 is not JSON"):
        decode_awareness_update(awareness((7, 1, state)))


@pytest.mark.parametrize("state", ["[1, 2]", "42", '"text"', "true"])
def test_an_awareness_state_that_is_not_an_object_is_a_format_error(state: str):
    json.loads(state)  # valid JSON, just not an object
    with pytest.raises(FormatError, match="client 7 must be an object or null"):
        decode_awareness_update(awareness((1, 1, "{}"), (7, 1, state)))


def test_an_awareness_state_that_is_not_utf8_is_a_format_error():
    update = var_uint(1) + var_uint(7) + var_uint(1) + var_uint(2) + b"\xff\xfe"

    with pytest.raises(FormatError, match="UTF-8"):
        decode_awareness_update(update)


def test_every_truncation_of_an_awareness_update_is_a_format_error():
    update = awareness((10, 3, '{"user": {"name": "ann"}}'), (20, 1, "null"))
    assert len(decode_awareness_update(update)) == 2

    for cut in range(len(update)):
        with pytest.raises(FormatError):
            decode_awareness_update(update[:cut])


# -- update ranges -----------------------------------------------------------------------------


def assert_ranges_match_state(doc: pycrdt.Doc) -> UpdateRanges:
    """The doc's full update carries, for each client, exactly the clocks from 0 up
    to the state vector's entry."""
    ranges = check_update(doc.get_update())
    expected = {
        (client, 0, clock) for client, clock in decode_state_vector(doc.get_state()).items()
    }
    assert set(ranges.structs) == expected
    assert len(ranges.structs) == len(expected)
    return ranges


def test_text_clocks_count_utf16_code_units():
    doc = pycrdt.Doc(client_id=7)
    text = doc.get("text", type=pycrdt.Text)
    text.insert(0, "a😀b")  # the emoji is two UTF-16 code units
    text.insert(0, "𝄞é")  # an astral character and a two-byte one: three units

    ranges = assert_ranges_match_state(doc)

    assert ranges.structs == ((7, 0, 7),)
    assert ranges.deletes == ()


def test_formatted_text_and_embeds_are_read():
    doc = pycrdt.Doc(client_id=7)
    text = doc.get("text", type=pycrdt.Text)
    text.insert(0, "hello world", {"bold": True})
    text.format(0, 5, {"italic": True, "link": {"href": "https://example.com"}})
    text.insert_embed(5, {"image": "https://example.com/a.png"})

    assert_ranges_match_state(doc)


def test_map_values_of_every_kind_are_read():
    doc = pycrdt.Doc(client_id=7)
    values = doc.get("values", type=pycrdt.Map)
    values["int"] = 42
    values["negative"] = -(2**40)
    values["float"] = 1.5
    values["str"] = "ünïcode 😀"
    values["true"] = True
    values["false"] = False
    values["none"] = None
    values["bytes"] = b"\x00\x01\xff"
    values["list"] = [1, "two", None, [3.5], {"k": False}]
    values["dict"] = {"nested": {"deeper": [1, 2, 3]}}
    values["map"] = pycrdt.Map({"inner": 1, "text": pycrdt.Text("in a map")})
    values["array"] = pycrdt.Array([1, pycrdt.Map({"x": "y"}), pycrdt.Array(["z"])])

    ranges = assert_ranges_match_state(doc)

    assert ranges.structs[0][2] > 12  # nested types' contents count too


def test_arrays_with_mixed_items_are_read():
    doc = pycrdt.Doc(client_id=7)
    items = doc.get("items", type=pycrdt.Array)
    items.extend([1, "a", None, b"\x00", 2.5, True])
    items.append(pycrdt.Array([pycrdt.Text("text in an array")]))
    items.insert(0, pycrdt.Map({"m": 1}))

    assert_ranges_match_state(doc)


def test_xml_fragments_elements_and_text_are_read():
    doc = pycrdt.Doc(client_id=7)
    fragment = doc.get("prosemirror", type=pycrdt.XmlFragment)
    paragraph = fragment.children.append(
        pycrdt.XmlElement("paragraph", {"class": "lead"}, [pycrdt.XmlText("Hello")])
    )
    paragraph.children.append(pycrdt.XmlElement("img", {"src": "a.png"}))
    fragment.children.append(pycrdt.XmlText("tail"))

    assert_ranges_match_state(doc)


def test_subdocuments_are_read():
    doc = pycrdt.Doc(client_id=7)
    doc.get("docs", type=pycrdt.Map)["child"] = pycrdt.Doc()

    assert_ranges_match_state(doc)


def test_deletions_are_listed_as_delete_ranges():
    doc = pycrdt.Doc(client_id=7)
    text = doc.get("text", type=pycrdt.Text)
    text.insert(0, "hello world")
    del text[0:6]
    values = doc.get("values", type=pycrdt.Map)
    values["key"] = pycrdt.Array([1, 2, 3])
    values["key"] = "replaced"  # deletes the array item and its contents

    ranges = assert_ranges_match_state(doc)

    assert (7, 0, 6) in ranges.deletes
    assert len(ranges.deletes) == 2
    assert ranges.integrated_in(decode_state_vector(doc.get_state()))


def test_an_incremental_deletion_carries_only_its_delete_ranges():
    doc = pycrdt.Doc(client_id=7)
    text = doc.get("text", type=pycrdt.Text)
    text.insert(0, "hello world")
    before = doc.get_state()
    del text[5:11]

    ranges = check_update(doc.get_update(before))

    assert ranges == UpdateRanges(structs=(), deletes=((7, 5, 11),))


def test_merged_updates_are_read_as_one_range_per_client():
    updates: list[bytes] = []
    first, second = pycrdt.Doc(client_id=1), pycrdt.Doc(client_id=2)
    for doc in (first, second):
        doc.observe(lambda event: updates.append(event.update))
    first.get("text", type=pycrdt.Text).insert(0, "abc")
    first.get("text", type=pycrdt.Text).insert(3, "de")
    second.get("text", type=pycrdt.Text).insert(0, "xy")
    second.get("map", type=pycrdt.Map)["k"] = "v"

    ranges = check_update(pycrdt.merge_updates(*updates))

    assert sorted(ranges.structs) == [(1, 0, 5), (2, 0, 3)]


def test_a_merged_update_with_a_gap_has_a_range_on_each_side_of_it():
    updates: list[bytes] = []
    doc = pycrdt.Doc(client_id=9)
    doc.observe(lambda event: updates.append(event.update))
    text = doc.get("text", type=pycrdt.Text)
    for part in ("ab", "cd", "ef"):
        text.insert(len(str(text)), part)

    ranges = check_update(pycrdt.merge_updates(updates[0], updates[2]))

    assert ranges.structs == ((9, 0, 2), (9, 4, 6))
    assert not ranges.integrated_in({9: 2})
    assert ranges.integrated_in({9: 6})


def test_hand_made_updates_with_contents_pycrdt_does_not_write_are_read():
    # Read as Yjs reads them; pycrdt confirms the clocks.
    cases = {
        "gc": (hand_update(5, 0, b"\x00" + var_uint(3)), 3),
        "deleted": (hand_update(5, 0, root_item(1, var_uint(4))), 4),
        "binary": (hand_update(5, 0, root_item(3, var_uint(3) + b"\x00\x01\x02")), 1),
        "embed": (hand_update(5, 0, root_item(5, var_string('{"a":1}'))), 1),
        "format": (hand_update(5, 0, root_item(6, var_string("b") + var_string("1"))), 1),
        "xml element": (hand_update(5, 0, root_item(7, var_uint(3) + var_string("p"))), 1),
    }
    for name, (update, length) in cases.items():
        assert check_update(update) == UpdateRanges(((5, 0, length),), ()), name
        doc = pycrdt.Doc()
        doc.apply_update(update)
        assert decode_state_vector(doc.get_state()) == {5: length}, name


@pytest.mark.parametrize(
    ("content", "message"),
    [
        # Yrs reads one JSON string too many, and has no XmlHook name: a document
        # holding either would differ between pycrdt and Yjs.
        (root_item(2, var_uint(2) + var_string('"a"') + var_string("1")), "legacy JSON"),
        (root_item(7, var_uint(5) + var_string("hook")), "XmlHook"),
    ],
)
def test_contents_that_yrs_and_yjs_read_apart_are_refused(content: bytes, message: str):
    with pytest.raises(FormatError, match=message):
        check_update(hand_update(5, 0, content))


def test_a_skip_struct_splits_the_ranges_and_carries_nothing():
    after_gap = bytes([0x84]) + var_uint(5) + var_uint(4) + var_string("cd")  # origin 5:4
    update = hand_update(5, 0, root_item(4, var_string("ab")), b"\x0a" + var_uint(3), after_gap)

    assert check_update(update).structs == ((5, 0, 2), (5, 5, 7))


def test_an_unknown_content_kind_is_a_format_error():
    with pytest.raises(FormatError, match="unknown struct content kind 11"):
        check_update(hand_update(5, 0, root_item(11, b"")))


def test_every_truncation_of_an_update_is_a_format_error():
    doc = pycrdt.Doc(client_id=7)
    doc.get("text", type=pycrdt.Text).insert(0, "hello")
    doc.get("map", type=pycrdt.Map)["k"] = [1, "x"]
    del doc.get("text", type=pycrdt.Text)[0:2]
    update = doc.get_update()

    for cut in range(len(update)):
        with pytest.raises(FormatError):
            check_update(update[:cut])


def test_the_empty_update_carries_nothing():
    ranges = check_update(b"\x00\x00")

    assert ranges == UpdateRanges((), ())
    assert ranges.integrated_in({})


# -- integrated_in -----------------------------------------------------------------------------


def test_a_doc_holds_everything_its_own_state_carries():
    doc = two_client_doc()
    del doc.get("text", type=pycrdt.Text)[1:3]

    assert check_update(doc.get_update()).integrated_in(decode_state_vector(doc.get_state()))


def test_an_update_whose_dependency_is_missing_is_not_integrated():
    author = pycrdt.Doc(client_id=1)
    updates: list[bytes] = []
    author.observe(lambda event: updates.append(event.update))
    text = author.get("text", type=pycrdt.Text)
    text.insert(0, "hello")
    text.insert(5, " world")
    hello, world = updates

    receiver = pycrdt.Doc()
    receiver.apply_update(world)  # held as pending by Yrs: its origin is unknown
    assert not check_update(world).integrated_in(decode_state_vector(receiver.get_state()))

    receiver.apply_update(hello)
    state = decode_state_vector(receiver.get_state())
    assert check_update(world).integrated_in(state)
    assert check_update(hello).integrated_in(state)


def test_a_deletion_of_items_the_doc_lacks_is_not_integrated():
    author = pycrdt.Doc(client_id=1)
    text = author.get("text", type=pycrdt.Text)
    text.insert(0, "abc")
    before = author.get_state()
    del text[0:1]
    deletion = check_update(author.get_update(before))

    assert not deletion.integrated_in({})
    assert deletion.integrated_in({1: 3})


# -- what both Yrs and Yjs read alike ------------------------------------------------------


def any_item(*values: bytes, parent: str = "root", key: str | None = None) -> bytes:
    """An ANY item under a root type (a map entry when ``key`` is given)."""
    info = 8 | (0x20 if key is not None else 0)
    body = var_uint(1) + var_string(parent) + (var_string(key) if key is not None else b"")
    return bytes([info]) + body + var_uint(len(values)) + b"".join(values)


@pytest.mark.parametrize(
    ("update", "message"),
    [
        (hand_update(2**53, 0, any_item(b"\x7e")), "client id"),
        (hand_update(5, 2**32, any_item(b"\x7e")), "clock"),
        (hand_update(5, 2**32 - 2, any_item(b"\x7e", b"\x7e")), "past clock 2"),
        (hand_update(5, 0, b"\x00" + var_uint(2**32)), "past clock 2"),
        (hand_update(5, 0, b"\x80" + var_uint(3)), "struct info"),  # a GC with flags
        (hand_update(5, 0, root_item(7, var_uint(7))), "unknown type ref 7"),
        (hand_update(5, 0, bytes([8]) + var_uint(2) + var_uint(1) + b"\x7e"), "parent info"),
        (hand_update(5, 0, any_item(b"\x7d" + var_int(2**53))), "integer value"),
        (hand_update(5, 0, any_item(b"\x7a" + b"\x00" * 8)), "bigint"),
        (hand_update(5, 0, root_item(5, var_string('{"a": NaN}'))), "not JSON"),
        (hand_update(5, 0, root_item(5, var_string("[" * 65 + "]" * 65))), "nests deeper"),
        (hand_update(5, 0, root_item(6, var_string("k") + var_string("[1,"))), "not JSON"),
        (hand_update(5, 0, root_item(9, var_string("guid") + b"\x7e")), "options must be a map"),
        (
            hand_update(
                5, 0, root_item(9, var_string("g") + b"\x76\x01" + var_string("guid") + b"\x7e")
            ),
            "option 'guid'",
        ),
        (
            hand_update(
                5, 0, root_item(9, var_string("g") + b"\x76\x01" + var_string("gc") + b"\x7d\x01")
            ),
            "option 'gc'",
        ),
        # An item naming a later item of its own client (origin 5:3 from clock 0).
        (hand_update(5, 0, b"\x84" + var_uint(5) + var_uint(3) + var_string("x")), "later item"),
        (
            var_uint(2)
            + var_uint(1)
            + var_uint(5)
            + var_uint(0)
            + any_item(b"\x7e")
            + var_uint(1)
            + var_uint(5)
            + var_uint(1)
            + any_item(b"\x7e")
            + var_uint(0),
            "two struct groups",
        ),
        (
            var_uint(0)
            + var_uint(2)
            + var_uint(5)
            + var_uint(1)
            + var_uint(0)
            + var_uint(1)
            + var_uint(5)
            + var_uint(1)
            + var_uint(3)
            + var_uint(1),
            "two delete sets",
        ),
        (
            var_uint(0)
            + var_uint(1)
            + var_uint(5)
            + var_uint(1)
            + var_uint(2**32 - 3)
            + var_uint(5),
            "past clock",
        ),
    ],
)
def test_what_yrs_and_yjs_would_read_apart_is_a_format_error(update: bytes, message: str):
    with pytest.raises(FormatError, match=message):
        check_update(update)


def test_values_nested_to_the_limit_are_read_and_one_level_more_is_refused():
    at_limit = b"\x75\x01" * MAX_VALUE_DEPTH + b"\x7e"
    check_update(hand_update(5, 0, any_item(at_limit)))
    check_update(
        hand_update(5, 0, root_item(5, var_string("[" * MAX_VALUE_DEPTH + "]" * MAX_VALUE_DEPTH)))
    )

    with pytest.raises(FormatError, match="nests deeper"):
        check_update(hand_update(5, 0, any_item(b"\x75\x01" + at_limit)))


def test_a_deep_value_is_refused_without_recursing_through_it():
    # 100,000 levels: deep enough to crash pycrdt, and Yjs cannot read it back.
    with pytest.raises(FormatError, match="nests deeper"):
        check_update(hand_update(5, 0, any_item(b"\x75\x01" * 100_000 + b"\x7e")))


def test_the_options_yjs_and_yrs_both_keep_are_accepted_on_a_subdocument():
    options = b"\x76\x04" + b"".join(
        var_string(key) + value
        for key, value in (
            ("gc", b"\x78"),
            ("autoLoad", b"\x79"),
            ("shouldLoad", b"\x78"),
            ("encoding", b"\x7d\x01"),
        )
    )
    check_update(hand_update(5, 0, root_item(9, var_string("guid") + options)))


def test_the_structs_of_an_update_name_what_they_need():
    doc = pycrdt.Doc(client_id=7)
    text = doc.get("text", type=pycrdt.Text)
    text.insert(0, "ab")
    before = doc.get_state()
    text.insert(1, "X")

    [[struct]] = check_update(doc.get_update(before)).groups

    assert (struct.client, struct.clock, struct.end) == (7, 2, 3)
    assert struct.origin == (7, 0) and struct.right_origin == (7, 1)
    assert struct.needs == ((7, 0), (7, 1))


def test_an_update_waiting_behind_a_clock_gap_or_a_missing_item_is_not_integrable():
    author = pycrdt.Doc(client_id=1)
    updates: list[bytes] = []
    author.observe(lambda event: updates.append(event.update))
    text = author.get("text", type=pycrdt.Text)
    text.insert(0, "hello")
    text.insert(5, " world")
    other = pycrdt.Doc(client_id=2)
    other.apply_update(author.get_update())
    before = other.get_state()
    other.get("text", type=pycrdt.Text).insert(11, "!")
    bang = other.get_update(before)

    world, exclamation = check_update(updates[1]), check_update(bang)

    assert world.integrable_counts({}) == ([0], {})  # 1:5 comes after a gap
    assert world.integrable_counts({1: 5})[0] == [1]
    assert exclamation.integrable_counts({1: 5})[0] == [0]  # names 1:10, not there
    assert exclamation.integrable_counts({1: 11})[0] == [1]


def test_astral_characters_are_located_by_clock():
    doc = pycrdt.Doc(client_id=7)
    doc.get("text", type=pycrdt.Text).insert(0, "a😀b𝄞")

    [[struct]] = check_update(doc.get_update()).groups

    assert struct.astral == (1, 4)
    assert struct.end == 6


def test_empty_structs_and_deletions_are_read_and_left_out():
    # Yrs writes an empty string item now and then (it shares its clock with the
    # next struct); pycrdt panics on an empty ANY item after others of its client.
    empty_string = root_item(4, var_string(""))
    update = hand_update(5, 0, empty_string, any_item(b"\x7e"), any_item())
    update = update[:-1] + var_uint(1) + var_uint(5) + var_uint(1) + var_uint(0) + var_uint(0)

    ranges = check_update(update)

    assert ranges.structs == ((5, 0, 1),)
    assert [(s.clock, s.end) for s in ranges.groups[0]] == [(0, 1)]
    assert ranges.deletes == ()
    assert ranges.has_empty


# -- checks shared between passes --------------------------------------------------------------


def test_checked_updates_read_each_update_once_and_answer_as_the_strict_reader(monkeypatch):
    doc = pycrdt.Doc()
    doc["t"] = text = pycrdt.Text()
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    text += "hello"
    text += " world"
    broken = updates[0][:-1]
    reads: list[bytes] = []
    real = check_update

    def counting(update: bytes, *args: object, **kwargs: object) -> UpdateRanges:
        reads.append(update)
        return real(update, *args, **kwargs)

    monkeypatch.setattr("collab.wire.yformat.check_update", counting)
    checks = CheckedUpdates()
    for _ in range(3):  # three passes over the same log, as equal bytes objects
        for update in updates:
            assert checks.check(bytes(update)).structs == real(update).structs
        for _ in range(2):
            with pytest.raises(FormatError):
                checks.check(bytes(broken))
    assert sorted(reads) == sorted([*updates, broken])  # each read once
