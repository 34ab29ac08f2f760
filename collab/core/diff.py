"""What changed in a text between two versions, and who changed it.

The updates between the two versions are applied in seq order to the older
version while watching the text: each insertion and deletion is attributed to
the update that made it (its log origin: user, client, instance, seq; and the
Yjs client ids whose structs it carries). The answer is the newer text cut
into spans: kept, inserted (by whom), and deleted (by whom, the deleted text
kept in place). Text inserted and deleted within the range shows in neither.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pycrdt

from collab.core.history import NotRetained, replica_at, retained_from, state_at
from collab.errors import CollabError
from collab.store.base import Store, UpdateRecord
from collab.wire import crdt, yformat

MAX_DIFF_UPDATES = 20_000  # between the two versions; a wider range is refused
# Updates times characters, about the steps of attributing them (a second per 10
# million here): a diff past it is refused, not left to hold a worker thread.
MAX_DIFF_WORK = 5_000_000
EMBED = "\ufffc"  # an embedded object in a text shows as the object replacement character


class DiffError(ValueError):
    """The request cannot be answered as asked (the caller's error)."""


@dataclass(frozen=True, slots=True)
class Attribution:
    seq: int
    user: str | None
    client: str | None
    instance: str | None
    yjs_clients: tuple[int, ...]


@dataclass(slots=True)
class _Char:
    text: str
    size: int  # UTF-8 bytes: the unit of pycrdt's text deltas
    kind: str  # "equal", "insert" or "delete"
    by: Attribution | None = None


@dataclass(frozen=True, slots=True)
class Span:
    kind: str  # "equal", "insert" or "delete"
    text: str
    first_seq: int | None = None
    last_seq: int | None = None
    user: str | None = None
    client: str | None = None
    instance: str | None = None
    yjs_clients: tuple[int, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.kind, "text": self.text}
        if self.kind != "equal":
            body.update(
                first_seq=self.first_seq,
                last_seq=self.last_seq,
                user=self.user,
                client=self.client,
                instance=self.instance,
                yjs_clients=list(self.yjs_clients),
            )
        return body


async def text_diff(
    store: Store, doc: str, from_seq: int, to_seq: int, root: str | None = None
) -> tuple[str, list[Span]]:
    """``(root, spans)`` of a text root between versions ``from_seq`` and
    ``to_seq``. Raises DiffError (no such text root, range too wide), StoreError."""
    if from_seq > to_seq:
        raise DiffError("from must not be past to")
    first = await retained_from(store, doc)
    if from_seq < first:
        raise NotRetained(doc, from_seq, first)
    _, newer = await state_at(store, doc, to_seq)
    try:
        kinds = yformat.root_types(newer)
    except yformat.FormatError as exc:
        raise DiffError(f"the version at seq {to_seq} cannot be read: {exc}") from None
    texts = sorted(name for name, kind in kinds.items() if kind == yformat.TEXT)
    if root is None:
        if len(texts) != 1:
            raise DiffError(f"name the text root (root=): the document has {texts or 'none'}")
        root = texts[0]
    elif root not in texts:
        raise DiffError(f"{root!r} is not a text root of this document (text roots: {texts})")
    updates = await store.read_updates(
        doc, after_seq=from_seq, until_seq=to_seq, limit=MAX_DIFF_UPDATES + 1
    )
    if len(updates) > MAX_DIFF_UPDATES:
        raise DiffError(f"at most {MAX_DIFF_UPDATES} updates between the two versions")
    _, older = await replica_at(store, doc, from_seq)
    state = older.doc.get_update()
    loop = asyncio.get_running_loop()
    return root, await loop.run_in_executor(None, _attribute, state, updates, root)


def _attribute(state: bytes, updates: Sequence[UpdateRecord], root: str) -> list[Span]:
    doc = pycrdt.Doc()
    doc.apply_update(state)
    text = doc.get(root, type=pycrdt.Text)
    chars = [_Char(c, len(c.encode()), "equal") for c in str(text)]
    if len(updates) * max(len(chars), 1) > MAX_DIFF_WORK:
        raise DiffError(
            f"{len(updates)} updates over a text of {len(chars)} characters is more than one "
            "diff does: narrow the range"
        )
    deltas: list[list[dict[str, Any]]] = []
    subscription = text.observe(lambda event: deltas.append(event.delta))
    try:
        for record in updates:
            deltas.clear()
            try:
                crdt.apply_update(doc, record.data)
            except CollabError as exc:
                raise DiffError(
                    f"the update at seq {record.seq} cannot be applied: {exc}"
                ) from None
            by = Attribution(
                record.seq,
                record.author.user,
                record.author.client,
                record.author.instance,
                _yjs_clients(record.data),
            )
            for delta in deltas:
                _walk(chars, delta, by)
    finally:
        text.unobserve(subscription)
    return _spans(chars)


def _yjs_clients(update: bytes) -> tuple[int, ...]:
    try:
        ranges = yformat.check_update(update)
    except yformat.FormatError:
        return ()
    return tuple(sorted({client for client, _, _ in ranges.structs + ranges.deletes}))


def _walk(chars: list[_Char], delta: list[dict[str, Any]], by: Attribution) -> None:
    """Apply one text delta to the attributed characters: retain and delete count
    UTF-8 bytes of the visible text (deleted characters are kept, invisible)."""
    i = 0

    def visible() -> None:
        nonlocal i
        while i < len(chars) and chars[i].kind == "delete":
            i += 1

    for op in delta:
        if "retain" in op:
            left = op["retain"]
            while left > 0 and i < len(chars):
                visible()
                if i == len(chars):
                    break
                left -= chars[i].size
                i += 1
        elif "insert" in op:
            visible()  # after what was deleted here: a deletion reads before an insertion
            value = op["insert"]
            new = (
                [_Char(c, len(c.encode()), "insert", by) for c in value]
                if isinstance(value, str)
                else [_Char(EMBED, 1, "insert", by)]
            )
            chars[i:i] = new
            i += len(new)
        elif "delete" in op:
            left = op["delete"]
            while left > 0:
                visible()
                if i == len(chars):
                    break
                char = chars[i]
                left -= char.size
                if char.kind == "insert":
                    del chars[i]  # inserted within the range, then deleted: no change
                else:
                    char.kind, char.by = "delete", by
                    i += 1


def _spans(chars: list[_Char]) -> list[Span]:
    spans: list[Span] = []
    run: list[_Char] = []

    def key(char: _Char) -> tuple[Any, ...]:
        by = char.by
        return (char.kind,) if by is None else (char.kind, by.user, by.client, by.instance)

    def close() -> None:
        if not run:
            return
        first = run[0]
        text = "".join(c.text for c in run)
        if first.by is None:
            spans.append(Span(first.kind, text))
        else:
            seqs = [c.by.seq for c in run if c.by is not None]
            yjs = sorted({client for c in run if c.by is not None for client in c.by.yjs_clients})
            spans.append(
                Span(
                    first.kind,
                    text,
                    min(seqs),
                    max(seqs),
                    first.by.user,
                    first.by.client,
                    first.by.instance,
                    tuple(yjs),
                )
            )
        run.clear()

    for char in chars:
        if run and key(run[-1]) != key(char):
            close()
        run.append(char)
    close()
    return spans
