"""Yjs binary formats, read strictly: varints, state vectors, awareness updates and
updates (v1).

This is the one gate every byte from a peer passes before pycrdt sees it.
pycrdt (Yrs) and Yjs in JavaScript do not read the same bytes the same way: Yrs
ignores trailing bytes, wraps clocks past 32 bits and client ids past 53 bits,
and recurses without a bound into nested values (a deep enough one crashes the
process); Yjs cannot read integers past 53 bits, throws on JSON it cannot parse
and reads some rare contents with another layout than Yrs. :func:`check_update`
accepts an update only when both would read exactly the same thing from its
first byte to its last, within the limits below, and it also answers the
question pycrdt cannot: which clock ranges the update carries, so that the server
can tell a replay from an update still waiting for its dependencies (which Yrs
holds as "pending" and leaves out of ``get_update()``). Cutting an update by
that answer and writing the parts is :mod:`collab.wire.ysplit`'s.

Limits (docs/PROTOCOL.md, "What an update may contain"):

- client ids below 2**53 (JavaScript's safe integers), clocks and lengths ending
  below 2**32 (Yrs keeps clocks in 32 bits);
- values (``ContentAny``, embeds, format attributes, awareness states) nested at
  most :data:`MAX_VALUE_DEPTH` levels; integers within 53 bits; no BigInt values
  (Yrs turns them into floats);
- no two struct groups for one client (Yjs keeps only the last), no two delete sets
  for one client (Yrs keeps only the last), deletions in clock order (Yjs misreads
  others once it keeps them pending); empty structs and deletions (Yrs writes
  empty strings at times) are read, then left out of what is applied and stored;
- an item names only older items of its own client (Yjs fails on anything else);
- legacy JSON content and XmlHook types are refused: Yrs and Yjs disagree on their
  layout, so a document holding them would differ between the two; sub-document
  options are limited to the boolean ``gc``, ``autoLoad``, ``shouldLoad`` and the
  integer ``encoding``, which both keep alike.
"""

from __future__ import annotations

import bisect
import collections
import heapq
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

MAX_VARUINT_BYTES = 10  # 64 bits
MAX_SAFE_INTEGER = 2**53 - 1  # JavaScript's Number.MAX_SAFE_INTEGER: lib0's integer limit
CLOCK_LIMIT = 2**32 - 1  # a struct must end at or below it: Yrs clocks are u32
MAX_VALUE_DEPTH = 64  # nesting of arrays and maps inside one value


class FormatError(ValueError):
    """The bytes do not follow the Yjs/lib0 encoding, or go past a limit."""


class TooManyStructs(FormatError):
    """An update carries more structs, or more deleted ranges, than the reader was
    asked to accept. Raised as soon as the count is passed, before the rest is read."""


class Reader:
    """A bounds-checked lib0 decoder over one buffer."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    @property
    def at_end(self) -> bool:
        return self._pos >= len(self._data)

    @property
    def position(self) -> int:
        return self._pos

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def read_u8(self) -> int:
        if self._pos >= len(self._data):
            raise FormatError("unexpected end of data")
        value = self._data[self._pos]
        self._pos += 1
        return value

    def read_var_uint(self) -> int:
        # The bytes read here, not through read_u8: this is the reader's most
        # frequent call (a small update's every id and length), and most values
        # are one byte.
        data, pos = self._data, self._pos
        end = len(data)
        if pos < end and data[pos] < 0x80:  # one byte: counts, lengths, small clocks
            self._pos = pos + 1
            return data[pos]
        value = 0
        shift = 0
        for _ in range(MAX_VARUINT_BYTES):
            if pos >= end:
                self._pos = pos
                raise FormatError("unexpected end of data")
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                self._pos = pos
                return value
            shift += 7
        self._pos = pos
        raise FormatError("variable-length integer is too long")

    def peek_var_uint(self) -> int:
        """The next variable-length integer, left unread."""
        position = self._pos
        try:
            return self.read_var_uint()
        finally:
            self._pos = position

    def read_var_int(self) -> int:
        byte = self.read_u8()
        value = byte & 0x3F
        negative = bool(byte & 0x40)
        shift = 6
        count = 1
        while byte & 0x80:
            if count >= MAX_VARUINT_BYTES:
                raise FormatError("variable-length integer is too long")
            byte = self.read_u8()
            value |= (byte & 0x7F) << shift
            shift += 7
            count += 1
        return -value if negative else value

    def read_bytes(self, length: int) -> bytes:
        end = self._pos + length
        if end > len(self._data):
            raise FormatError(f"length {length} runs past the end of the data")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def read_var_bytes(self) -> bytes:
        return self.read_bytes(self.read_var_uint())

    def read_var_string(self) -> str:
        try:
            return self.read_var_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FormatError(f"string is not valid UTF-8: {exc}") from None

    # -- bounded reads: what both Yrs and Yjs read alike ------------------------------

    def read_safe_uint(self, what: str) -> int:
        value = self.read_var_uint()
        if value > MAX_SAFE_INTEGER:
            raise FormatError(f"{what} {value} is past 2**53")
        return value

    def read_client(self) -> int:
        return self.read_safe_uint("client id")

    def read_clock(self) -> int:
        value = self.read_var_uint()
        if value >= CLOCK_LIMIT:
            raise FormatError(f"clock {value} is past 2**32")
        return value

    def read_id(self) -> tuple[int, int]:
        return self.read_client(), self.read_clock()

    def read_any(self, depth: int = 0) -> None:
        """Skip one lib0 ``writeAny`` value, nested at most MAX_VALUE_DEPTH levels."""
        if depth > MAX_VALUE_DEPTH:
            raise FormatError(f"value nests deeper than {MAX_VALUE_DEPTH} levels")
        tag = self.read_u8()
        if tag in (127, 126, 121, 120):  # undefined, null, false, true
            return
        if tag == 125:
            if abs(self.read_var_int()) > MAX_SAFE_INTEGER:
                raise FormatError("integer value is past 2**53")
        elif tag == 124:
            self.read_bytes(4)
        elif tag == 123:  # float64
            self.read_bytes(8)
        elif tag == 122:
            raise FormatError("bigint values are not accepted (Yrs reads them back as floats)")
        elif tag == 119:
            self.read_var_string()
        elif tag == 118:
            for _ in range(self.read_var_uint()):
                self.read_var_string()
                self.read_any(depth + 1)
        elif tag == 117:
            for _ in range(self.read_var_uint()):
                self.read_any(depth + 1)
        elif tag == 116:
            self.read_var_bytes()
        else:
            raise FormatError(f"unknown value tag {tag}")

    def read_json(self, what: str) -> Any:
        """A JSON text as Yjs reads it (``JSON.parse``), nested within the limit."""
        return parse_json(self.read_var_string(), what)


def parse_json(text: str, what: str) -> Any:
    """Parse JSON as strictly as ``JSON.parse`` (no NaN or Infinity) and refuse
    values nested deeper than MAX_VALUE_DEPTH."""
    # ValueError covers bad JSON and integers past Python's digit limit;
    # RecursionError, arrays or objects nested past the recursion limit.
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise FormatError(f"{what} is not JSON: {exc}") from None
    if json_depth(value) > MAX_VALUE_DEPTH:
        raise FormatError(f"{what} nests deeper than {MAX_VALUE_DEPTH} levels")
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def json_depth(value: Any) -> int:
    """How many arrays and objects deep ``value`` nests (0 for a scalar)."""
    deepest = 0
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
        else:
            deepest = max(deepest, depth)
            continue
        deepest = max(deepest, depth + 1)
    return deepest


def decode_state_vector(data: bytes) -> dict[int, int]:
    """``{client_id: clock}``: the next clock expected from each client."""
    reader = Reader(data)
    result: dict[int, int] = {}
    for _ in range(reader.read_var_uint()):
        client = reader.read_client()
        result[client] = reader.read_clock()
    if not reader.at_end:
        raise FormatError("trailing bytes after state vector")
    return result


# -- awareness ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AwarenessEntry:
    client_id: int
    clock: int
    state: dict[str, Any] | None


def decode_awareness_update(data: bytes) -> list[AwarenessEntry]:
    """Parse a y-protocols awareness update; a state is a JSON object or ``null``."""
    reader = Reader(data)
    entries = []
    for _ in range(reader.read_var_uint()):
        client_id = reader.read_client()
        clock = reader.read_safe_uint("awareness clock")
        state = reader.read_json(f"awareness state of client {client_id}")
        if state is not None and not isinstance(state, dict):
            raise FormatError(f"awareness state of client {client_id} must be an object or null")
        entries.append(AwarenessEntry(client_id, clock, state))
    if not reader.at_end:
        raise FormatError("trailing bytes after the awareness update")
    return entries


def awareness_entry_count(data: bytes) -> int:
    """How many entries an awareness update says it holds (its first number), read
    before the update is: a huge one can be refused without parsing it."""
    return Reader(data).read_var_uint()


def encode_awareness_update(entries: list[AwarenessEntry]) -> bytes:
    """A y-protocols awareness update of ``entries`` (the inverse of the decoder)."""
    parts = [var_uint(len(entries))]
    for entry in entries:
        text = "null" if entry.state is None else json.dumps(entry.state, separators=(",", ":"))
        data = text.encode()
        parts += [var_uint(entry.client_id), var_uint(entry.clock), var_uint(len(data)), data]
    return b"".join(parts)


# -- updates ------------------------------------------------------------------------------

# Struct kinds (the low five bits of a struct's info byte).
GC, DELETED, JSON, BINARY, STRING, EMBED, FORMAT, TYPE, ANY, DOC, SKIP = range(11)
_DOC_FLAGS = frozenset({"gc", "autoLoad", "shouldLoad"})  # boolean sub-document options
# Type refs of a TYPE content: YArray, YMap, YText, YXmlElement, YXmlFragment,
# YXmlHook, YXmlText.
XML_ELEMENT, XML_HOOK, LAST_TYPE_REF = 3, 5, 6


ID = tuple[int, int]  # (client, clock)


class Struct(NamedTuple):
    """One struct of an update: its clocks, the ids it names (what it needs before
    it can be integrated), and where its bytes are. A named tuple: the strict reader
    makes one per struct, and a frozen dataclass costs three times as much to make."""

    client: int
    clock: int
    end: int
    kind: int  # GC, SKIP or an item's content kind
    span: tuple[int, int]  # byte offsets in the update
    content_at: int = 0  # byte offset of an item's content
    origin: ID | None = None  # the item to its left when it was made
    right_origin: ID | None = None  # the item to its right
    parent: ID | None = None  # the parent type's item, when named by id
    needs: tuple[ID, ...] = ()  # origin, right origin and parent, those present
    # Clocks of the first halves of its characters outside the Basic Multilingual
    # Plane (UTF-16 surrogate pairs), for string items.
    astral: tuple[int, ...] = ()
    root: str | None = None  # the root type's name, when the parent is named so
    keyed: bool = False  # the item is a map entry (it has a key)
    type_ref: int | None = None  # for a TYPE item: what type it holds

    @property
    def skip(self) -> bool:
        return self.kind == SKIP


@dataclass(frozen=True, slots=True)
class UpdateRanges:
    """What an update carries: struct ranges and deleted ranges, as
    ``(client, start_clock, end_clock)`` with ``end`` exclusive (skip structs,
    which carry nothing, are left out), and its structs by client, in order."""

    structs: tuple[tuple[int, int, int], ...]
    deletes: tuple[tuple[int, int, int], ...]
    groups: tuple[tuple[Struct, ...], ...] = field(default=(), compare=False, repr=False)
    has_empty: bool = field(default=False, compare=False)  # empty structs or deletions
    deletes_at: int = field(default=0, compare=False)  # byte offset of the delete set
    # (client, structs read) for each group, skips and empty structs left out: what
    # a group held also when ``keep`` left its structs out of ``groups``.
    counts: tuple[tuple[int, int], ...] = field(default=(), compare=False, repr=False)

    def integrated_in(self, state_vector: dict[int, int]) -> bool:
        """True when a document with ``state_vector`` holds everything this update
        carries: all its structs, and every item its delete set refers to."""
        return all(
            state_vector.get(client, 0) >= end for client, _, end in self.structs + self.deletes
        )

    def integrable_counts(self, state_vector: dict[int, int]) -> tuple[list[int], dict[int, int]]:
        """How many structs of each group a document with ``state_vector`` can
        integrate now, and its state vector once they are in.

        This follows Yjs's ``integrateStructs`` and ``Item.getMissing``: a struct
        waits while an earlier clock of its own client is missing, or while an item
        it names is; it is checked even when the document holds it already.

        A worklist, in O(n log n): a group that stops at a struct waits on the one
        clock it lacks, and is looked at again only once that clock arrives (a pass
        over every group per struct released would make a chain of dependencies
        across groups cost n squared)."""
        known = dict(state_vector)
        groups = self.groups
        counts = [0] * len(groups)
        # client -> heap of (the clock `known[client]` must reach, group index)
        blocked: dict[int, list[tuple[int, int]]] = {}
        ready = list(range(len(groups) - 1, -1, -1))  # a stack, first group on top
        while ready:
            index = ready.pop()
            group = groups[index]
            position = counts[index]
            while position < len(group):
                struct = group[position]
                if not struct.skip:
                    wait = missing(struct, known)
                    if wait is not None:
                        heapq.heappush(blocked.setdefault(wait[0], []), (wait[1], index))
                        break
                    client = struct.client
                    if struct.end > known.get(client, 0):
                        known[client] = struct.end
                        waiting = blocked.get(client)
                        while waiting and waiting[0][0] <= struct.end:
                            ready.append(heapq.heappop(waiting)[1])
                position += 1
            counts[index] = position
        return counts, known


def missing(struct: Struct, known: dict[int, int]) -> tuple[int, int] | None:
    """What ``struct`` waits for, as (client, the clock that client must reach), or
    None when it can be integrated."""
    have = known.get(struct.client, 0)
    if struct.clock > have:
        return struct.client, struct.clock  # a gap: the same client's earlier structs
    for client, clock in struct.needs:
        if known.get(client, 0) <= clock:
            return client, clock + 1  # it names an item nobody has yet
    return None


def check_update(
    update: bytes,
    max_structs: int | None = None,
    *,
    keep: Callable[[Struct], bool] | None = None,
) -> UpdateRanges:
    """Read a v1 update (the format y-websocket and collab use) from its first byte
    to its last and return what it carries. Raises FormatError for anything Yrs
    and Yjs would not both read, and read alike (see the module), and
    TooManyStructs as soon as it has read more than ``max_structs`` structs, or
    more than ``max_structs`` deleted ranges (so that a huge update of tiny structs
    costs neither the memory nor the time of reading it all).

    ``keep``: which structs the result's ``groups`` hold (all by default). Each
    costs a few hundred bytes: a caller reading a whole document (a snapshot)
    that needs a few kinds of struct keeps only those; the ranges are whole."""
    reader = Reader(update)
    ranges = _read_update(reader, max_structs, keep)
    if not reader.at_end:
        raise FormatError("trailing bytes after the update (not a v1 update?)")
    return ranges


class CheckedUpdates:
    """check_update of logged updates, each read once however many passes read
    it: rebuilding a version and indexing its authors read the same log, and the
    strict reader is most of what either costs per update."""

    def __init__(self) -> None:
        self._read: dict[bytes, UpdateRanges | FormatError] = {}

    def check(self, update: bytes) -> UpdateRanges:
        """``check_update(update)``, raising what it raises."""
        found = self._read.get(update)
        if found is None:
            try:
                found = check_update(update)
            except FormatError as exc:
                found = exc
            self._read[update] = found
        if isinstance(found, FormatError):
            raise found
        return found


def readable_prefix(data: bytes) -> bytes | None:
    """The update that ``data`` starts with, when that much passes the strict
    reader (the rest being stray bytes), else None. For repairs of stored entries."""
    reader = Reader(data)
    try:
        _read_update(reader)
    except FormatError:
        return None
    return data[: reader.position]


def _read_update(
    reader: Reader,
    max_structs: int | None = None,
    keep: Callable[[Struct], bool] | None = None,
) -> UpdateRanges:
    structs: list[tuple[int, int, int]] = []
    budget = max_structs if max_structs is not None else -1  # structs still allowed
    groups: list[tuple[Struct, ...]] = []
    counts: list[tuple[int, int]] = []
    clients: set[int] = set()
    empty = False
    for _ in range(reader.read_var_uint()):
        count = reader.read_var_uint()
        client = reader.read_client()
        if client in clients:
            raise FormatError(f"two struct groups for client {client}")
        clients.add(client)
        clock = reader.read_clock()
        start = clock
        group: list[Struct] = []
        read = 0  # structs that carry something
        for _ in range(count):
            if budget == 0:
                raise TooManyStructs(f"the update carries more than {max_structs} structs")
            budget -= 1
            offset = reader.position
            info = reader.read_u8()
            kind = info & 0x1F
            if kind in (GC, SKIP):
                if info != kind:
                    raise FormatError(f"struct info {info} at {client}:{clock}")  # Yrs refuses it
                length = reader.read_var_uint()
                struct = Struct(client, clock, clock + length, kind, (offset, reader.position))
            else:
                struct = _check_item(reader, info, kind, client, clock, offset)
                length = struct.end - clock
                for need_client, need_clock in struct.needs:
                    # Yjs integrates a client's structs in clock order and trusts
                    # that an item names only older items of its own client.
                    if need_client == client and need_clock >= clock:
                        raise FormatError(
                            f"the item at {client}:{clock} names a later item of its own client"
                        )
            if length == 0:
                # Yrs writes empty string items now and then; they carry nothing
                # and share their clock with the next struct: left out.
                empty = True
                continue
            if kind == SKIP:  # a gap: nothing carried
                if clock > start:
                    structs.append((client, start, clock))
                start = clock + length
            else:
                read += 1
            if keep is None or keep(struct):
                group.append(struct)
            clock += length
            if clock >= CLOCK_LIMIT:
                raise FormatError(f"client {client}'s structs run past clock 2**32")
        if clock > start:
            structs.append((client, start, clock))
        groups.append(tuple(group))
        counts.append((client, read))
    deletes_at = reader.position
    deletes: list[tuple[int, int, int]] = []
    deleting: set[int] = set()
    budget = max_structs if max_structs is not None else -1  # deleted ranges still allowed
    for _ in range(reader.read_var_uint()):
        client = reader.read_client()
        if client in deleting:
            raise FormatError(f"two delete sets for client {client}")  # Yrs keeps one
        deleting.add(client)
        previous_end = 0
        for _ in range(reader.read_var_uint()):
            if budget == 0:
                raise TooManyStructs(f"the update deletes more than {max_structs} ranges")
            budget -= 1
            clock = reader.read_clock()
            length = reader.read_var_uint()
            if length == 0:
                empty = True
                continue
            if clock < previous_end:
                # Yjs writes deletions sorted and re-encodes pending ones as deltas:
                # out of order, it misreads them.
                raise FormatError(f"the deletions of client {client} are not in clock order")
            previous_end = clock + length
            if clock + length >= CLOCK_LIMIT:
                raise FormatError(f"a deletion of client {client} runs past clock 2**32")
            deletes.append((client, clock, clock + length))
    return UpdateRanges(
        tuple(structs), tuple(deletes), tuple(groups), empty, deletes_at, tuple(counts)
    )


def var_uint(value: int) -> bytes:
    """lib0 ``writeVarUint``."""
    out = bytearray()
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def _check_item(
    reader: Reader, info: int, kind: int, client: int, clock: int, offset: int
) -> Struct:
    """Check one item's header and content."""
    origin = right_origin = parent = root = None
    keyed = False
    if info & 0x80:
        origin = reader.read_id()
    if info & 0x40:
        right_origin = reader.read_id()
    if not info & 0xC0:
        parent_info = reader.read_var_uint()
        if parent_info == 1:  # parent is a root type, named by key
            root = reader.read_var_string()
        elif parent_info == 0:  # parent is an item id
            parent = reader.read_id()
        else:
            raise FormatError(f"unknown parent info {parent_info}")
        if info & 0x20:  # parent sub (map key)
            reader.read_var_string()
            keyed = True
    content_at = reader.position
    astral: tuple[int, ...] = ()
    type_ref = None
    if kind == STRING:  # clocks count UTF-16 code units
        text = reader.read_var_string()
        length = len(text.encode("utf-16-le")) // 2
        if length != len(text):
            astral = _astral_clocks(text, clock)
    else:
        if kind == TYPE:
            type_ref = reader.peek_var_uint()
        length = _check_content(reader, kind)
    needs = tuple(id_ for id_ in (origin, right_origin, parent) if id_ is not None)
    return Struct(
        client,
        clock,
        clock + length,
        kind,
        (offset, reader.position),
        content_at,
        origin,
        right_origin,
        parent,
        needs,
        astral,
        root,
        keyed,
        type_ref,
    )


def _astral_clocks(text: str, clock: int) -> tuple[int, ...]:
    clocks = []
    for char in text:
        if ord(char) > 0xFFFF:
            clocks.append(clock)
            clock += 2
        else:
            clock += 1
    return tuple(clocks)


def _check_content(reader: Reader, kind: int) -> int:
    """Check one item's content; return its length in clock units."""
    if kind == DELETED:
        return reader.read_var_uint()
    if kind == BINARY:
        reader.read_var_bytes()
        return 1
    if kind == EMBED:
        reader.read_json("an embed")
        return 1
    if kind == FORMAT:
        reader.read_var_string()
        reader.read_json("a format attribute")
        return 1
    if kind == TYPE:
        type_ref = reader.read_var_uint()
        if type_ref == XML_HOOK:
            raise FormatError("XmlHook types are not accepted (Yrs and Yjs read them apart)")
        if type_ref > LAST_TYPE_REF:
            raise FormatError(f"unknown type ref {type_ref}")
        if type_ref == XML_ELEMENT:
            reader.read_var_string()
        return 1
    if kind == ANY:
        count = reader.read_var_uint()
        for _ in range(count):
            reader.read_any()
        return count
    if kind == DOC:
        reader.read_var_string()  # guid
        if reader.read_u8() != 118:  # Yjs spreads the options into an object
            raise FormatError("a sub-document's options must be a map")
        for _ in range(reader.read_var_uint()):
            key = reader.read_var_string()
            tag = reader.read_u8()
            # Yjs and Yrs keep different options, of different types; only those
            # both read alike are accepted.
            if key in _DOC_FLAGS and tag in (120, 121):
                continue
            if key == "encoding" and tag == 125:
                reader.read_var_int()
                continue
            raise FormatError(f"sub-document option {key!r} is not accepted with this type")
        return 1
    if kind == JSON:
        raise FormatError("legacy JSON content is not accepted (Yrs and Yjs read it apart)")
    raise FormatError(f"unknown struct content kind {kind}")


# -- root types ---------------------------------------------------------------------------

TEXT, MAP, ARRAY, XML = "text", "map", "array", "xml"
_XML_REFS = frozenset({XML_ELEMENT, 6})  # YXmlElement, YXmlText: what XML fragments hold


def root_types(
    update: bytes, ranges: UpdateRanges | None = None, *, unknown_as: str | None = ARRAY
) -> dict[str, str]:
    """The root types of a document, by name, read from its state (an update
    holding every struct): ``text``, ``map``, ``array`` or ``xml``. A root's kind
    shows in what its items hold: entries with keys (a map), characters, formats
    or embeds (a text), XML elements or text (an XML fragment), anything else (an
    array). An item that names no parent (it names the items beside it) belongs
    to its neighbours' root. ``ranges``: what check_update read of it, every struct
    kept, when the caller has it. ``unknown_as``: the kind given to a root that
    holds only deleted items (emptied: its kind no longer shows), or None to leave
    such roots out (a caller that edits the root must not take an emptied text for
    an array). Raises FormatError."""
    if ranges is None:
        ranges = check_update(update)
    structs = [s for group in ranges.groups for s in group if s.kind not in (GC, SKIP)]
    # Each client's structs by first clock, to find the one holding an id by
    # bisection (a document of n structs costs n log n, not n squared).
    by_client: dict[int, tuple[list[int], list[int]]] = {}  # client -> (starts, indexes)
    for index in sorted(range(len(structs)), key=lambda i: (structs[i].client, structs[i].clock)):
        starts, indexes = by_client.setdefault(structs[index].client, ([], []))
        starts.append(structs[index].clock)
        indexes.append(index)

    def holder(id_: ID | None) -> int | None:
        if id_ is None or id_[0] not in by_client:
            return None
        starts, indexes = by_client[id_[0]]
        at = bisect.bisect_right(starts, id_[1]) - 1
        if at < 0 or id_[1] >= structs[indexes[at]].end:
            return None
        return indexes[at]

    owner: list[str | None] = [None] * len(structs)  # each struct's root, once known
    waiters: dict[int, list[int]] = {}  # a struct -> those named after it, waiting

    def name_of(id_: ID | None) -> str | None:
        index = holder(id_)
        return None if index is None else owner[index]

    # Neighbours first: a struct that names no parent takes the root of the item
    # beside it, once that one's is known (a worklist: each struct is looked at
    # once, and again when an item it names gets its root).
    work = collections.deque(range(len(structs)))
    while work:
        index = work.popleft()
        struct = structs[index]
        if owner[index] is not None:
            continue
        name = struct.root or name_of(struct.origin) or name_of(struct.right_origin)
        if name is not None:
            owner[index] = name
            work.extend(waiters.pop(index, ()))
        elif struct.parent is None:
            for neighbour in {holder(struct.origin), holder(struct.right_origin)}:
                if neighbour is not None:
                    waiters.setdefault(neighbour, []).append(index)
    kinds: dict[str, str] = {}
    for index, struct in enumerate(structs):
        name = owner[index]
        if name is None:
            continue
        if struct.keyed:
            kind = MAP
        elif struct.kind in (STRING, FORMAT, EMBED):
            kind = TEXT
        elif struct.kind == TYPE and struct.type_ref in _XML_REFS:
            kind = XML
        elif struct.kind == DELETED:
            continue  # says nothing of the kind
        else:
            kind = ARRAY
        known = kinds.get(name)
        if known is None or (known == ARRAY and kind != ARRAY):
            kinds[name] = kind
    if unknown_as is not None:
        for name in owner:
            if name is not None:
                kinds.setdefault(name, unknown_as)  # only deleted items: of an unknown kind
    return kinds
