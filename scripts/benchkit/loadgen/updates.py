"""The updates the load generator sends, in the Yjs update v1 format, and what it
reads back out of received updates: which client clocks they cover.

Only what a load generator needs: building updates without a CRDT in the loop where
that would cost time growing with the document, and finding which clocks an update
covers (so a server that re-encodes or merges updates is still counted correctly).
"""

from __future__ import annotations

import random

from collab.wire.yformat import var_uint as write_var_uint

# What one writer types per update: an 8-character append, like a burst of typing.
CHUNK = "abcdefgh"
TEXT_NAME = "t"


def read_var_uint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def new_client_id() -> int:
    # Yjs client ids are 32-bit; a fresh one per run keeps runs from colliding
    # with what a persistent server already stored.
    return random.randrange(1 << 20, 1 << 32)


class AppendRun:
    """The updates of one client appending ``chunk`` (ASCII) to the text TEXT_NAME,
    one insert per update, each inserted after the previous one (how a typing user's
    edits look).

    Encoded directly in the Yjs update v1 format: producing the i-th update with
    pycrdt costs time that grows with the text (Yrs walks to the insert position;
    50,000 appends take 14 s), which would make the load generator the bottleneck
    of long runs. ``check_update_encoding`` proves the bytes equal pycrdt's own for
    the same edits."""

    def __init__(self, client_id: int, chunk: str = CHUNK) -> None:
        self.client = client_id
        self._client = write_var_uint(client_id)
        self._content = write_var_uint(len(chunk)) + chunk.encode()
        self.step = len(chunk)  # clock units per update (one per ASCII character)

    def content(self, _i: int) -> bytes:
        """The string content of update ``i``: its length, then its bytes."""
        return self._content

    def update(self, i: int) -> bytes:
        c = self._client
        content = self.content(i)
        if i == 0:
            # No left origin: the item names its parent, the root type TEXT_NAME.
            parent = b"\x01" + write_var_uint(len(TEXT_NAME)) + TEXT_NAME.encode()
            return b"\x01\x01" + c + b"\x00\x04" + parent + content + b"\x00"
        clock = i * self.step
        origin = c + write_var_uint(clock - 1)
        return b"\x01\x01" + c + write_var_uint(clock) + b"\x84" + origin + content + b"\x00"


# Words to make prose of: as compressible as typed text is, unlike "abcdefgh" * n
# (which deflate shrinks to nothing) or random bytes (which it cannot shrink).
_WORDS = (
    "the of and to in is that it for on with as was at by an be this from or are we "
    "can which have not but all they one had their there were been has more when will "
    "would who so if no out up what about into than them only other new some could "
    "time these two may then first any like now my such make over our even most me "
    "document editor server update peer change text paragraph review draft comment "
    "shared version history cursor selection offline online sync merge conflict"
)
WORDS = _WORDS.split()


def prose(length: int, seed: int = 1) -> str:
    """``length`` ASCII characters of words drawn at random (a fixed seed: the same
    text every run), separated by spaces."""
    rng = random.Random(seed)
    words = rng.choices(WORDS, k=length // 4 + 16)
    text = " ".join(words)
    while len(text) < length:
        text += " " + " ".join(rng.choices(WORDS, k=length // 4 + 16))
    return text[:length]


class ProseRun(AppendRun):
    """The updates of one client typing a prose text ``step`` characters per update:
    update ``i`` appends characters ``i * step`` to ``(i + 1) * step`` of it (at most
    ``count`` updates)."""

    def __init__(self, client_id: int, step: int, count: int, seed: int = 1) -> None:
        super().__init__(client_id, "x" * step)
        self.text = prose(step * count, seed)
        self._prefix = write_var_uint(step)

    def content(self, i: int) -> bytes:
        return self._prefix + self.text[i * self.step : (i + 1) * self.step].encode()


class ReplaceRun:
    """The updates of one client replacing the whole text TEXT_NAME with a new
    ``value_bytes``-character text each time: a big append that also deletes the
    previous one, so that 100 MB of updates leave a document of one value. What a
    server's memory then grows by is what it buffers, not the document.

    Made with pycrdt (the cost per update stays flat: the text never grows)."""

    def __init__(self, client_id: int, value_bytes: int) -> None:
        from pycrdt import Doc, Text

        self.client = client_id
        self.step = value_bytes  # clock units per update
        self._doc = Doc(client_id=client_id)
        self._text = self._doc.get(TEXT_NAME, type=Text)
        self._made: list[bytes] = []
        self._doc.observe(lambda event: self._made.append(event.update))
        self.count = 0

    def value(self, i: int) -> str:
        return f"{i:08d}" * (self.step // 8) + "x" * (self.step % 8)

    def next_update(self) -> bytes:
        """The update of replacement number ``self.count``, then counts it."""
        with self._doc.transaction():
            del self._text[:]
            self._text.insert(0, self.value(self.count))
        self.count += 1
        return self._made.pop()


def check_update_encoding() -> None:
    """Fail loudly if AppendRun's bytes differ from what pycrdt produces, or if
    ``update_ranges`` misreads the updates either run makes."""
    from pycrdt import Doc, Text

    for chunk in (CHUNK, "0123456789abcdef" * 2048):  # 8 B, and 32 KiB (a 3-byte length)
        client_id = 3_000_000_123
        doc = Doc(client_id=client_id)
        text = doc.get(TEXT_NAME, type=Text)
        produced: list[bytes] = []
        doc.observe(lambda event, out=produced: out.append(event.update))
        for _ in range(20):
            text += chunk
        run = AppendRun(client_id, chunk)
        expected = [run.update(i) for i in range(20)]
        if produced != expected:
            raise SystemExit("bench: AppendRun does not match pycrdt's update encoding")
        check = Doc()
        for update in expected:
            check.apply_update(update)
        if str(check.get(TEXT_NAME, type=Text)) != chunk * 20:
            raise SystemExit("bench: AppendRun updates do not apply to the expected text")
    typed = ProseRun(client_id, 8, 20)
    doc = Doc(client_id=client_id)
    text = doc.get(TEXT_NAME, type=Text)
    produced = []
    doc.observe(lambda event, out=produced: out.append(event.update))
    for i in range(20):
        text += typed.text[i * 8 : (i + 1) * 8]
    if produced != [typed.update(i) for i in range(20)]:
        raise SystemExit("bench: ProseRun does not match pycrdt's update encoding")
    replace = ReplaceRun(client_id, 1000)
    for i in range(5):
        if update_ranges(replace.next_update()) != [(client_id, i * 1000, (i + 1) * 1000)]:
            raise SystemExit("bench: update_ranges misreads ReplaceRun's updates")


class Unparsed(Exception):
    pass


def update_ranges(update: bytes) -> list[tuple[int, int, int]]:
    """``(client, first clock, end clock)`` of each client's structs in a v1 update.
    Knows the struct kinds that text edits produce; raises Unparsed otherwise."""
    pos = 0
    groups, pos = read_var_uint(update, pos)
    out = []
    for _ in range(groups):
        structs, pos = read_var_uint(update, pos)
        client, pos = read_var_uint(update, pos)
        clock, pos = read_var_uint(update, pos)
        start = clock
        for _ in range(structs):
            info = update[pos]
            pos += 1
            ref = info & 0x1F
            if ref in (0, 10):  # GC and Skip: a length
                length, pos = read_var_uint(update, pos)
                clock += length
                continue
            if info & 0x80:  # left origin
                _, pos = read_var_uint(update, pos)
                _, pos = read_var_uint(update, pos)
            if info & 0x40:  # right origin
                _, pos = read_var_uint(update, pos)
                _, pos = read_var_uint(update, pos)
            if not info & 0xC0:  # parent: a root type's name or an item id
                kind, pos = read_var_uint(update, pos)
                if kind == 1:
                    length, pos = read_var_uint(update, pos)
                    pos += length
                else:
                    _, pos = read_var_uint(update, pos)
                    _, pos = read_var_uint(update, pos)
                if info & 0x20:  # parent sub (a map key)
                    length, pos = read_var_uint(update, pos)
                    pos += length
            if ref == 4:  # string: its length in UTF-16 code units
                length, pos = read_var_uint(update, pos)
                raw = update[pos : pos + length]
                pos += length
                clock += length if raw.isascii() else len(raw.decode().encode("utf-16-le")) // 2
            elif ref == 1:  # deleted content: a length
                length, pos = read_var_uint(update, pos)
                clock += length
            else:
                raise Unparsed(f"struct kind {ref}")
        out.append((client, start, clock))
    return out
