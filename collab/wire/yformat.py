"""Yjs binary formats, read strictly: varints, state vectors, awareness updates and
the clock ranges an update (v1) carries.

pycrdt applies and encodes updates; this module only answers questions pycrdt
cannot: is every byte of a y-protocols message present (its own decoder reads past
the end or truncates silently), and which clock ranges does an update contain, so
that the server can tell a duplicate from an update still waiting for its
dependencies (which Yrs holds as "pending" and leaves out of ``get_update()``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MAX_VARUINT_BYTES = 10  # 64 bits


class FormatError(ValueError):
    """The bytes do not follow the Yjs/lib0 encoding."""


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
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def read_u8(self) -> int:
        if self._pos >= len(self._data):
            raise FormatError("unexpected end of data")
        value = self._data[self._pos]
        self._pos += 1
        return value

    def read_var_uint(self) -> int:
        value = 0
        shift = 0
        for _ in range(MAX_VARUINT_BYTES):
            byte = self.read_u8()
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7
        raise FormatError("variable-length integer is too long")

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

    def read_any(self, depth: int = 0) -> Any:
        """lib0's ``readAny``; the value is read only to skip over it."""
        if depth > 64:
            raise FormatError("value nests too deeply")
        tag = self.read_u8()
        if tag in (127, 126, 121, 120):  # undefined, null, false, true
            return None
        if tag == 125:
            return self.read_var_int()
        if tag == 124:
            return self.read_bytes(4)
        if tag in (123, 122):  # float64, bigint64
            return self.read_bytes(8)
        if tag == 119:
            return self.read_var_string()
        if tag == 118:
            for _ in range(self.read_var_uint()):
                self.read_var_string()
                self.read_any(depth + 1)
            return None
        if tag == 117:
            for _ in range(self.read_var_uint()):
                self.read_any(depth + 1)
            return None
        if tag == 116:
            return self.read_var_bytes()
        raise FormatError(f"unknown value tag {tag}")


def decode_state_vector(data: bytes) -> dict[int, int]:
    """``{client_id: clock}``: the next clock expected from each client."""
    reader = Reader(data)
    result: dict[int, int] = {}
    for _ in range(reader.read_var_uint()):
        client = reader.read_var_uint()
        result[client] = reader.read_var_uint()
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
        client_id = reader.read_var_uint()
        clock = reader.read_var_uint()
        raw = reader.read_var_string()
        # ValueError covers bad JSON and integers past Python's digit limit;
        # RecursionError, arrays or objects nested past the recursion limit.
        try:
            state = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise FormatError(f"awareness state of client {client_id} is not JSON: {exc}") from None
        if state is not None and not isinstance(state, dict):
            raise FormatError(f"awareness state of client {client_id} must be an object or null")
        entries.append(AwarenessEntry(client_id, clock, state))
    return entries


# -- update clock ranges ----------------------------------------------------------------

_XML_ELEMENT, _XML_HOOK = 3, 5


@dataclass(frozen=True, slots=True)
class UpdateRanges:
    """What an update carries: struct ranges and deleted ranges, as
    ``(client, start_clock, end_clock)`` with ``end`` exclusive. Skip structs,
    which carry nothing, are left out."""

    structs: tuple[tuple[int, int, int], ...]
    deletes: tuple[tuple[int, int, int], ...]

    def integrated_in(self, state_vector: dict[int, int]) -> bool:
        """True when a document with ``state_vector`` holds everything this update
        carries: all its structs, and every item its delete set refers to."""
        return all(
            state_vector.get(client, 0) >= end for client, _, end in self.structs + self.deletes
        )


def update_ranges(update: bytes) -> UpdateRanges:
    """Read the clock ranges of a v1 update (the format y-websocket and collab use)."""
    reader = Reader(update)
    structs: list[tuple[int, int, int]] = []
    for _ in range(reader.read_var_uint()):
        count = reader.read_var_uint()
        client = reader.read_var_uint()
        clock = reader.read_var_uint()
        start = clock
        for _ in range(count):
            info = reader.read_u8()
            kind = info & 0x1F
            if kind == 10:  # Skip: a gap, nothing carried
                if clock > start:
                    structs.append((client, start, clock))
                clock += reader.read_var_uint()
                start = clock
                continue
            clock += reader.read_var_uint() if kind == 0 else _skip_item(reader, info, kind)
        if clock > start:
            structs.append((client, start, clock))
    deletes: list[tuple[int, int, int]] = []
    for _ in range(reader.read_var_uint()):
        client = reader.read_var_uint()
        for _ in range(reader.read_var_uint()):
            clock = reader.read_var_uint()
            length = reader.read_var_uint()
            deletes.append((client, clock, clock + length))
    if not reader.at_end:
        raise FormatError("trailing bytes after the update (not a v1 update?)")
    return UpdateRanges(tuple(structs), tuple(deletes))


def _skip_item(reader: Reader, info: int, kind: int) -> int:
    """Skip one item's header and content; return its length in clock units."""
    if info & 0x80:  # origin id
        reader.read_var_uint()
        reader.read_var_uint()
    if info & 0x40:  # right origin id
        reader.read_var_uint()
        reader.read_var_uint()
    if not info & 0xC0:
        if reader.read_var_uint() == 1:  # parent is a root type, named by key
            reader.read_var_string()
        else:  # parent is an item id
            reader.read_var_uint()
            reader.read_var_uint()
        if info & 0x20:  # parent sub (map key)
            reader.read_var_string()
    if kind == 1:  # deleted
        return reader.read_var_uint()
    if kind == 2:  # JSON
        count = reader.read_var_uint()
        for _ in range(count):
            reader.read_var_string()
        return count
    if kind == 3:  # binary
        reader.read_var_bytes()
        return 1
    if kind == 4:  # string: clocks count UTF-16 code units
        return len(reader.read_var_string().encode("utf-16-le")) // 2
    if kind == 5:  # embed
        reader.read_var_string()
        return 1
    if kind == 6:  # format
        reader.read_var_string()
        reader.read_var_string()
        return 1
    if kind == 7:  # type
        if reader.read_var_uint() in (_XML_ELEMENT, _XML_HOOK):
            reader.read_var_string()
        return 1
    if kind == 8:  # any
        count = reader.read_var_uint()
        for _ in range(count):
            reader.read_any()
        return count
    if kind == 9:  # sub-document
        reader.read_var_string()
        reader.read_any()
        return 1
    raise FormatError(f"unknown struct content kind {kind}")
