"""What changed in a text between two versions, and who changed it.

The updates between the two versions are applied in seq order to the older
version while watching the text: each insertion and deletion is attributed to
the update that made it (its log origin: user, client, instance, seq; and the
Yjs client ids whose structs it carries). The answer is the newer text cut
into spans: kept, inserted (by whom), and deleted (by whom, the deleted text
kept in place). Text inserted and deleted within the range shows in neither.

What a diff reads and does is charged to the request's budget as it goes
(collab.core.limits.ReadBudget): the older version's sources and the updates
between (log updates and bytes), and the CPU time of rebuilding and attributing,
checked after every update. (pycrdt computes each change's delta by walking the
text's items from its start: a text of many items, typed at random places,
costs that much per update however the attribution keeps its runs.)
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import pycrdt

from collab.core.history import (
    Log,
    NotRetained,
    Sources,
    gather_sources,
    read_log,
    rebuild,
    retained_from,
)
from collab.core.limits import CpuMeter, ReadBudget, cpu_meter
from collab.errors import CollabError
from collab.store import Store, UpdateRecord
from collab.wire import crdt, yformat

EMBED = "\ufffc"  # an embedded object in a text shows as the object replacement character
# Text is kept in runs of at most this many characters: an edit inside a run cuts
# it, at the cost of its length.
RUN_CHARS = 64
# Runs are kept in blocks of at most twice BLOCK_RUNS (cut into BLOCK_RUNS when
# longer), each with its count of visible bytes: finding an offset costs a
# descent of the counts' tree and one pass over a block's runs, not a pass over
# the whole text.
BLOCK_RUNS = 64


class DiffError(ValueError):
    """The request cannot be answered as asked (the caller's error)."""


@dataclass(frozen=True, slots=True)
class Attribution:
    seq: int
    user: str | None
    client: str | None
    instance: str | None
    yjs_clients: tuple[int, ...]


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
    store: Store,
    doc: str,
    from_seq: int,
    to_seq: int,
    root: str | None = None,
    *,
    budget: ReadBudget | None = None,
    executor: Executor | None = None,
) -> tuple[str, list[dict[str, Any]]]:
    """``(root, spans)`` of a text root between versions ``from_seq`` and
    ``to_seq``, the spans as JSON (:meth:`Span.to_json`). What it reads and does
    is charged to ``budget``; the work runs on ``executor`` (default: the loop's;
    a process pool will do). Raises DiffError (no such text root),
    BudgetExceeded, StoreError."""
    if from_seq > to_seq:
        raise DiffError("from must not be past to")
    first = await retained_from(store, doc)
    if from_seq < first:
        raise NotRetained(doc, from_seq, first)
    sources = await gather_sources(store, doc, from_seq, budget=budget)
    doing = f"a diff of the updates {from_seq + 1}..{to_seq}"
    updates = Log(await read_log(store, doc, from_seq, to_seq, budget, doing))
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor, _diff, sources, updates, root, budget, doing)


def _diff(
    sources: Sources,
    updates: Sequence[UpdateRecord],
    root: str | None,
    budget: ReadBudget | None,
    doing: str,
) -> tuple[str, list[dict[str, Any]]]:
    """The diff's work, in one call (on a worker process): the spans as JSON
    (pickled in C on the way back, where Span dataclasses would be in Python)."""
    meter = cpu_meter(budget, doing)
    state = rebuild(sources.snapshot, sources.updates, sources.chain, meter).doc.get_update()
    # The newer version's text roots: the older one with the updates applied.
    newer = pycrdt.Doc()
    newer.apply_update(state)
    for record in updates:
        _apply(newer, record)
        if meter is not None:
            meter.check()
    try:
        kinds = yformat.root_types(newer.get_update())
    except yformat.FormatError as exc:
        to_seq = updates[-1].seq if updates else sources.seq
        raise DiffError(f"the version at seq {to_seq} cannot be read: {exc}") from None
    texts = sorted(name for name, kind in kinds.items() if kind == yformat.TEXT)
    if root is None:
        if len(texts) != 1:
            raise DiffError(f"name the text root (root=): the document has {texts or 'none'}")
        root = texts[0]
    elif root not in texts:
        raise DiffError(f"{root!r} is not a text root of this document (text roots: {texts})")
    return root, [span.to_json() for span in _attribute(state, updates, root, meter)]


def _apply(doc: pycrdt.Doc, record: UpdateRecord) -> None:
    try:
        crdt.apply_logged(doc, record.data)
    except CollabError as exc:
        raise DiffError(f"the update at seq {record.seq} cannot be applied: {exc}") from None


def _attribute(
    state: bytes, updates: Sequence[UpdateRecord], root: str, meter: CpuMeter | None = None
) -> list[Span]:
    return _spans(_attributed(state, updates, root, meter))


def _attributed(
    state: bytes, updates: Sequence[UpdateRecord], root: str, meter: CpuMeter | None = None
) -> _Runs:
    doc = pycrdt.Doc()
    doc.apply_update(state)
    text = doc.get(root, type=pycrdt.Text)
    runs = _Runs(str(text))
    deltas: list[list[dict[str, Any]]] = []
    subscription = text.observe(lambda event: deltas.append(event.delta))
    try:
        for record in updates:
            deltas.clear()
            _apply(doc, record)
            by = Attribution(
                record.seq,
                record.author.user,
                record.author.client,
                record.author.instance,
                _yjs_clients(record.data),
            )
            for delta in deltas:
                _walk(runs, delta, by)
            if meter is not None:
                meter.check()
    finally:
        text.unobserve(subscription)
    return runs


def _yjs_clients(update: bytes) -> tuple[int, ...]:
    try:
        ranges = yformat.check_update(update)
    except yformat.FormatError:
        return ()
    return tuple(sorted({client for client, _, _ in ranges.structs + ranges.deletes}))


@dataclass(slots=True)
class _Run:
    """Characters of one kind, by one update (or none: kept text)."""

    text: str
    size: int  # UTF-8 bytes (an embed counts 1): the unit of pycrdt's text deltas
    kind: str  # "equal", "insert" or "delete"
    by: Attribution | None = None

    def cut(self, offset: int) -> _Run:
        """Keep the first ``offset`` bytes (up to a character's end), return the rest."""
        if self.size == len(self.text):  # one byte a character
            head, tail = self.text[:offset], self.text[offset:]
        else:
            data = self.text.encode()
            while offset < len(data) and data[offset] & 0xC0 == 0x80:
                offset += 1  # not inside a character
            head, tail = data[:offset].decode(), data[offset:].decode()
        rest = _Run(tail, self.size - len(head.encode()), self.kind, self.by)
        self.text, self.size = head, self.size - rest.size
        return rest


def _pieces(text: str, kind: str, by: Attribution | None) -> list[_Run]:
    return [
        _Run(piece, len(piece.encode()), kind, by)
        for piece in (text[i : i + RUN_CHARS] for i in range(0, len(text), RUN_CHARS))
    ]


class _Runs:
    """The attributed text, in blocks of runs; deleted runs stay, invisible. The
    blocks' visible bytes are summed in a Fenwick tree, so that finding an offset
    costs log(blocks) steps and a pass over one block. ``steps`` counts them
    (tree nodes, runs and blocks visited, characters copied)."""

    def __init__(self, text: str) -> None:
        runs = _pieces(text, "equal", None)
        self.blocks: list[list[_Run]] = [
            runs[i : i + BLOCK_RUNS] for i in range(0, len(runs), BLOCK_RUNS)
        ] or [[]]
        self.visible = [sum(run.size for run in block) for block in self.blocks]
        self.steps = len(runs)
        self._tree: list[int] = []
        self._build()

    def __iter__(self) -> Iterator[_Run]:
        return itertools.chain.from_iterable(self.blocks)

    # -- the blocks' visible bytes, as a Fenwick tree -------------------------------------

    def _build(self) -> None:
        tree = [0, *self.visible]
        for i in range(1, len(tree)):
            parent = i + (i & -i)
            if parent < len(tree):
                tree[parent] += tree[i]
        self._tree = tree
        self.steps += len(tree)

    def _add(self, b: int, size: int) -> None:
        self.visible[b] += size
        i = b + 1
        while i < len(self._tree):
            self._tree[i] += size
            i += i & -i
            self.steps += 1

    def _block_at(self, offset: int) -> tuple[int, int]:
        """``(block, visible bytes before it)`` of the first block whose end is past
        ``offset``; ``len(blocks)`` past the visible text."""
        tree, b, left = self._tree, 0, offset
        step = 1 << (len(tree) - 1).bit_length()
        while step:
            if b + step < len(tree) and tree[b + step] <= left:
                b += step
                left -= tree[b]
            step >>= 1
            self.steps += 1
        return b, offset - left

    # -- edits ----------------------------------------------------------------------------

    def _seek(self, offset: int) -> tuple[int, int]:
        """``(block, index)`` of the run that starts at visible byte ``offset``
        (a run is cut to start there), after the deleted runs before it; past the
        visible text: the end."""
        b, before = self._block_at(offset)
        if b == len(self.blocks):
            return len(self.blocks) - 1, len(self.blocks[-1])
        block = self.blocks[b]
        for i, run in enumerate(block):
            if run.kind == "delete":
                continue
            if before + run.size > offset:
                self.steps += i + 1
                if offset > before:
                    self.steps += len(run.text)
                    block.insert(i + 1, run.cut(offset - before))
                    return b, i + 1
                return b, i
            before += run.size
        raise AssertionError("a block's visible bytes are its runs'")  # pragma: no cover

    def insert(self, offset: int, new: list[_Run]) -> None:
        b, i = self._seek(offset)
        self.blocks[b][i:i] = new
        self._add(b, sum(run.size for run in new))
        self.steps += len(new)
        self._rebalance(b, b)

    def delete(self, offset: int, size: int, by: Attribution) -> None:
        """Mark ``size`` visible bytes from ``offset`` deleted by ``by``; what was
        inserted within the range goes (it makes no change)."""
        b, i = self._seek(offset)
        first = b
        while size > 0 and b < len(self.blocks):
            block = self.blocks[b]
            if i == len(block):
                b, i = b + 1, 0
                continue
            run = block[i]
            self.steps += 1
            if run.kind == "delete":
                i += 1
                continue
            if run.size > size:
                self.steps += len(run.text)
                block.insert(i + 1, run.cut(size))
            size -= run.size
            self._add(b, -run.size)
            if run.kind == "insert":
                del block[i]  # inserted within the range, then deleted: no change
            else:
                run.kind, run.by = "delete", by
                i += 1
        self._rebalance(first, min(b, len(self.blocks) - 1))

    def _rebalance(self, first: int, last: int) -> None:
        """Blocks ``first..last`` back to at most 2 * BLOCK_RUNS runs (a long one
        is cut into blocks of BLOCK_RUNS); an empty one goes. Either rebuilds the
        tree: once in BLOCK_RUNS insertions or so."""
        changed = False
        for b in range(last, first - 1, -1):
            block = self.blocks[b]
            if not block and len(self.blocks) > 1:
                del self.blocks[b], self.visible[b]
                changed = True
            elif len(block) > 2 * BLOCK_RUNS:
                parts = [block[i : i + BLOCK_RUNS] for i in range(0, len(block), BLOCK_RUNS)]
                self.blocks[b : b + 1] = parts
                self.visible[b : b + 1] = [
                    sum(run.size for run in part if run.kind != "delete") for part in parts
                ]
                self.steps += len(block)
                changed = True
        if changed:
            self._build()


def _walk(runs: _Runs, delta: list[dict[str, Any]], by: Attribution) -> None:
    """Apply one text delta to the attributed runs: retain and delete count UTF-8
    bytes of the visible text (deleted runs are kept, invisible); an insertion
    goes after what was deleted where it lands (a deletion reads before it)."""
    offset = 0
    for op in delta:
        if "retain" in op:
            offset += op["retain"]
        elif "insert" in op:
            value = op["insert"]
            new = (
                _pieces(value, "insert", by)
                if isinstance(value, str)
                else [_Run(EMBED, 1, "insert", by)]
            )
            runs.insert(offset, new)
            offset += sum(run.size for run in new)
        elif "delete" in op:
            runs.delete(offset, op["delete"], by)


def _spans(runs: _Runs) -> list[Span]:
    spans: list[Span] = []
    group: list[_Run] = []

    def key(run: _Run) -> tuple[Any, ...]:
        by = run.by
        return (run.kind,) if by is None else (run.kind, by.user, by.client, by.instance)

    def close() -> None:
        if not group:
            return
        first = group[0]
        text = "".join(r.text for r in group)
        if first.by is None:
            spans.append(Span(first.kind, text))
        else:
            seqs = [r.by.seq for r in group if r.by is not None]
            yjs = sorted({c for r in group if r.by is not None for c in r.by.yjs_clients})
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
        group.clear()

    for run in runs:
        if not run.text:
            continue
        if group and key(group[-1]) != key(run):
            close()
        group.append(run)
    close()
    return spans
