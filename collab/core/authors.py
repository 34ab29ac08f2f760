"""Who wrote what: each visible part of a document's text with the author of the
update that inserted it.

Every Yjs item has an id, (client, clock), and every update in the log has an
author (its origin). Authorship is therefore a map from Yjs client clock ranges
to authors (:class:`Index`, a pycrdt IdMap): the first update that carries a
range is its author, as the first update to carry an item integrated it. A
restore re-inserts the old content as new items, so the restorer is their
author. The index at a snapshot's seq is kept with the snapshot
(``SnapshotRecord.authors``, written by collab.core.snapshots), so the answer
for any version is the nearest snapshot's index plus the few log entries after
it, and outlives the log that retention drops (what was inserted before the
oldest kept index shows with no author).

To find where each item sits, the version's state is written again with every
character of every string item replaced by a private-use character naming its
author (:func:`marked`), and pycrdt integrates that copy as it integrates the
document itself: the copy's text, read beside the real one, says who wrote each
character. No ordering of items is computed here.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import pycrdt

from collab.core.history import Log, Sources, charged_snapshot, gather_sources, read_log, rebuild
from collab.core.limits import CpuMeter, ReadBudget, cpu_meter
from collab.errors import StoreError
from collab.store import Author, SnapshotRecord, Store, UpdateRecord
from collab.wire import yformat
from collab.wire.edits import ROOT_CLASSES

ATTRIBUTE = "author"  # the IdMap attribute naming an author
FIRST_MARK = 0xE000  # private-use characters: one per author, the first for "unknown"
MAX_MARKS = 0xF8FF - FIRST_MARK  # authors named in one answer; later ones show as unknown
SHOWN_KINDS = (yformat.TEXT, yformat.XML)  # roots answered: text and rich text
# Tiptap's nodes that hold no text and are no text block (the page's editor gives
# them no newline of their own).
LEAF_NODES = frozenset({"hardBreak", "horizontalRule", "image"})


def author_key(author: Author) -> str:
    """An author as the index stores it."""
    return json.dumps([author.user, author.client], separators=(",", ":"))


class Index:
    """Yjs client clock ranges -> the author of the update that inserted them."""

    def __init__(self, encoded: bytes | None = None) -> None:
        self._map = pycrdt.IdMap.decode(encoded) if encoded else pycrdt.IdMap()
        self._attributes: dict[Author, list[pycrdt.ContentAttribute]] = {}

    def encode(self) -> bytes:
        return self._map.encode()

    def add(self, record: UpdateRecord, checks: yformat.CheckedUpdates | None = None) -> None:
        """Attribute what a logged update carries to its author, where no earlier
        update carried it (``checks``: the strict reader's results, when another
        pass over the same log has them)."""
        try:
            if checks is None:
                ranges = yformat.check_update(record.data, keep=lambda _: False)
            else:
                ranges = checks.check(record.data)
        except yformat.FormatError:
            return  # not applied either (collab check sets such entries aside)
        if not ranges.structs:
            return
        attribute = self._attributes.get(record.author)
        if attribute is None:
            attribute = [pycrdt.ContentAttribute(ATTRIBUTE, author_key(record.author))]
            self._attributes[record.author] = attribute
        index = self._map
        for client, start, end in ranges.structs:
            # Only the stretches no earlier update carried (IdMap's own difference
            # and union cost the whole map each: 20,000 updates took 49 s).
            for stretch in index.attributions(client, start, end - start):
                if not stretch.attributes:
                    index.insert(client, stretch.start, stretch.end - stretch.start, attribute)

    def extend(
        self,
        records: Sequence[UpdateRecord],
        meter: CpuMeter | None = None,
        checks: yformat.CheckedUpdates | None = None,
    ) -> None:
        for index, record in enumerate(records):
            self.add(record, checks)
            if meter is not None and index % 200 == 199:
                meter.check()

    def runs(self, client: int, clock: int, length: int) -> list[tuple[int, str | None]]:
        """``(length, author key or None)`` of each stretch of ``[clock, clock+length)``."""
        found: list[tuple[int, str | None]] = []
        for attr_range in self._map.attributions(client, clock, length):
            values = [a.value for a in attr_range.attributes if a.name == ATTRIBUTE]
            found.append((attr_range.end - attr_range.start, values[0] if values else None))
        return found


@dataclass(frozen=True, slots=True)
class Authorship:
    """A version's text and rich-text roots as runs, each with its author (an index
    into ``authors``, None: not known)."""

    seq: int
    authors: list[dict[str, str | None]]
    roots: dict[str, dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "authors": self.authors, "roots": self.roots}


class _Marks:
    """Authors numbered as they are met, each with its private-use character."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self._number: dict[str, int] = {}

    def mark(self, key: str | None) -> str:
        if key is None:
            return chr(FIRST_MARK)
        number = self._number.get(key)
        if number is None:
            if len(self.keys) >= MAX_MARKS:
                return chr(FIRST_MARK)
            self.keys.append(key)
            number = self._number[key] = len(self.keys)
        return chr(FIRST_MARK + number)


def marked(state: bytes, ranges: yformat.UpdateRanges, index: Index, marks: _Marks) -> bytes:
    """``state`` (one v1 update, read by check_update as ``ranges``) with each UTF-16
    unit of each string item replaced by its author's mark: the same structs, ids,
    origins and deletions, so pycrdt puts every character where it puts the real
    one."""
    out: list[bytes] = []
    at = 0
    for group in ranges.groups:
        for struct in group:
            if struct.kind != yformat.STRING:
                continue
            text = "".join(
                marks.mark(key) * length
                for length, key in index.runs(
                    struct.client, struct.clock, struct.end - struct.clock
                )
            )
            out.append(state[at : struct.content_at])
            encoded = text.encode()
            out.append(yformat.var_uint(len(encoded)) + encoded)
            at = struct.span[1]
    out.append(state[at:])
    return b"".join(out)


def _text_runs(real: str, marks: str) -> list[list[Any]]:
    """``[text, mark number]`` runs of ``real`` read beside its marked copy (a
    character outside the BMP is two UTF-16 units: two marks)."""
    if len(real) == len(marks):  # all in the BMP: cut where the marks change
        found: list[list[Any]] = []
        start = 0
        for mark, same in itertools.groupby(marks):
            length = sum(1 for _ in same)
            found.append([real[start : start + length], ord(mark) - FIRST_MARK])
            start += length
        return found
    runs: list[list[Any]] = []
    position = 0
    for char in real:
        mark = ord(marks[position]) - FIRST_MARK if position < len(marks) else 0
        position += 2 if ord(char) > 0xFFFF else 1
        if runs and runs[-1][1] == mark:
            runs[-1][0] += char
        else:
            runs.append([char, mark])
    return runs


def _xml_text(text: pycrdt.XmlText) -> str:
    return "".join(value for value, _ in text.diff() if isinstance(value, str))


class _XmlWalk:
    """A rich-text tree's text as the page's editor reads it: the text of each
    text block, blocks separated by one newline (no author)."""

    def __init__(self) -> None:
        self.runs: list[list[Any]] = []
        self.length = 0

    def add(self, runs: list[list[Any]]) -> None:
        for text, mark in runs:
            if self.runs and self.runs[-1][1] == mark:
                self.runs[-1][0] += text
            else:
                self.runs.append([text, mark])
            self.length += len(text)

    def walk(self, real: Any, marks: Any) -> None:
        children = list(real.children)
        marked_children = list(marks.children)
        texts = [c for c in children if isinstance(c, pycrdt.XmlText)]
        # A text block holds text, or is empty (an empty paragraph); a leaf node
        # that holds no text (a line break, a rule, an image) is none.
        is_block = isinstance(real, pycrdt.XmlElement) and (
            texts or (not children and real.tag not in LEAF_NODES)
        )
        if is_block and self.length > 0:
            self.add([["\n", None]])
        for child, twin in zip(children, marked_children, strict=False):
            if isinstance(child, pycrdt.XmlText):
                self.add(_text_runs(_xml_text(child), _xml_text(twin)))
            elif isinstance(child, pycrdt.XmlElement):
                self.walk(child, twin)


def authorship(
    sources: Sources,
    base: bytes | None,
    records: Sequence[UpdateRecord],
    budget: ReadBudget | None = None,
) -> Authorship:
    """Who wrote what in the version ``sources`` make, with the authors index
    ``base`` and the log entries after it (``records``). CPU-bound: run it in an
    executor (a worker process will do: everything here pickles)."""
    meter = cpu_meter(budget, f"finding the authors at seq {sources.seq}")
    checks = yformat.CheckedUpdates()  # both passes read the same log
    replica = rebuild(sources.snapshot, sources.updates, sources.chain, meter, checks)
    index = Index(base)
    index.extend(records, meter, checks)
    state = replica.doc.get_update()
    marks = _Marks()
    try:
        ranges = yformat.check_update(state)  # read once: the kinds and the marks
        kinds = yformat.root_types(state, ranges)
        marked_state = marked(state, ranges, index, marks)
    except yformat.FormatError as exc:
        raise StoreError(f"the rebuilt document cannot be read: {exc}") from None
    del ranges
    if meter is not None:
        meter.check()
    real = replica.doc
    copy = pycrdt.Doc()
    copy.apply_update(marked_state)
    roots: dict[str, dict[str, Any]] = {}
    for name, kind in sorted(kinds.items()):
        if kind not in SHOWN_KINDS:
            continue
        mine = real.get(name, type=ROOT_CLASSES[kind])
        twin = copy.get(name, type=ROOT_CLASSES[kind])
        if kind == yformat.TEXT:
            runs = _text_runs(str(mine), str(twin))
        else:
            walk = _XmlWalk()
            walk.walk(mine, twin)
            runs = walk.runs
        roots[name] = {"kind": kind, "runs": runs}
        if meter is not None:
            meter.check()
    # Authors numbered as they first appear in the text (roots by name): the same
    # version always lists them alike, and those of nothing visible are left out.
    numbers: dict[int, int] = {}
    for root in roots.values():
        root["runs"] = [
            {
                "text": text,
                "author": None if not mark else numbers.setdefault(mark, len(numbers)),
            }
            for text, mark in root["runs"]
        ]
    authors = []
    for mark in numbers:  # in the order numbered
        user, client = json.loads(marks.keys[mark - 1])
        authors.append({"user": user, "client": client, "name": user or client})
    return Authorship(sources.seq, authors, roots)


async def index_sources(
    store: Store,
    doc: str,
    seq: int,
    budget: ReadBudget | None = None,
    *,
    nearest: SnapshotRecord | None = None,
    known: Sequence[UpdateRecord] = (),
) -> tuple[bytes | None, list[UpdateRecord]]:
    """The newest authors index kept at or before ``seq`` and the log entries after
    it up to ``seq``. Snapshots written before indexes were kept have none: an
    older one's is taken (or the whole log's). ``nearest``: the newest snapshot at
    or before ``seq``, when the caller read it already (it is not read again).
    ``known``: log entries the caller read already, a run ending at ``seq`` (those
    of a version's sources): they are not read again, nor held twice. Each snapshot
    it reads is charged to ``budget`` whole, what it holds besides the index too."""
    doing = f"finding the authors at seq {seq}"
    base: bytes | None = None
    base_seq = 0
    if nearest is not None and nearest.seq <= seq:
        snapshot: SnapshotRecord | None = nearest
    else:
        snapshot = await charged_snapshot(store, doc, seq, budget, doing)
    while snapshot is not None:
        if snapshot.authors is not None:
            base, base_seq = snapshot.authors, snapshot.seq
            break
        snapshot = await charged_snapshot(store, doc, snapshot.seq - 1, budget, doing)
    kept = [record for record in known if record.seq > base_seq]
    if kept and kept[-1].seq != seq:
        raise ValueError(f"the known log entries end at seq {kept[-1].seq}, not at {seq}")
    until = kept[0].seq - 1 if kept else seq
    records = await read_log(store, doc, base_seq, until, budget, doing) if until > base_seq else []
    return base, records + kept


async def authors_at(
    store: Store,
    doc: str,
    seq: int | None = None,
    *,
    budget: ReadBudget | None = None,
    executor: Executor | None = None,
) -> Authorship:
    """Who wrote what in the version after update ``seq`` (default: the latest).
    ``budget`` and ``executor`` as for collab.core.history.state_at."""
    sources = await gather_sources(store, doc, seq, budget=budget)
    base, records = await index_sources(
        store, doc, sources.seq, budget, nearest=sources.nearest, known=sources.updates
    )
    loop = asyncio.get_running_loop()
    # As tuples to a worker process, like the sources' log (each entry's data once:
    # pickle keeps the objects the two share): 20,000 entries, 150 ms -> 20.
    return await loop.run_in_executor(executor, authorship, sources, base, Log(records), budget)


def index_at(
    base: bytes | None,
    records: Sequence[UpdateRecord],
    checks: yformat.CheckedUpdates | None = None,
) -> bytes:
    """The encoded authors index ``base`` with ``records`` added (a snapshot's)."""
    index = Index(base)
    index.extend(records, checks=checks)
    return index.encode()
