"""The export file: one document's whole history, as JSON lines (docs/EXPORT.md).

::

    {"format": "collab-export", "version": 1, "doc": "notes", "epoch": "...",
     "exported_s": 1764130000.0, "updates": 3}
    {"seq": 1, "time_s": 1764120000.0, "user": "ann", "client": "c1",
     "instance": "a", "update": "<base64>"}
    ...
    {"end": true, "updates": 3, "sha256": "<hex of every update's bytes, in order>"}

The first line says what the file is; one line per update follows, seqs 1, 2, 3
... without a gap; the last line counts them and carries a digest, so that a
truncated or altered file is refused, not imported in part. Every update must
pass the strict reader (collab.wire.yformat). Reading and writing lines is
sans-IO; :func:`export_document` and :func:`import_document` connect it to a
store.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import hashlib
import json
import time
from collections import deque
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
)
from dataclasses import dataclass
from typing import Any

from collab import memory
from collab.config import Settings
from collab.core import authors
from collab.core.history import LogOrder, apply_in_order, apply_log
from collab.core.snapshots import EMPTY_STATE_VECTOR, Cadence, Encoded, encode
from collab.errors import ProtocolError, StoreError
from collab.names import validate_document_name
from collab.store import Author, NewUpdate, Store, UpdateRecord
from collab.wire.replica import Replica
from collab.wire.yformat import FormatError, UpdateRanges, check_update
from collab.wire.ysplit import squash_runs

FORMAT = "collab-export"
VERSION = 1
MAX_TIME_S = 253402300799.0  # 9999-12-31T23:59:59Z
MAX_LINE_BYTES = 64 * 1024 * 1024  # base64 of the largest update a store takes, and more


class ArchiveError(ValueError):
    """The file is not a whole, valid export; ``line`` is where it went wrong."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line is not None else message)
        self.line = line


class DocumentExists(ArchiveError):
    """An import would overwrite a document: it only creates new ones."""


@dataclass(frozen=True, slots=True)
class ArchiveHeader:
    doc: str
    epoch: str | None
    exported_s: float
    updates: int


def _line(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


class ArchiveWriter:
    """Lines of an export: :meth:`header`, :meth:`update` for each, :meth:`end`."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self._count = 0

    def header(self, header: ArchiveHeader) -> bytes:
        return _line(
            {
                "format": FORMAT,
                "version": VERSION,
                "doc": header.doc,
                "epoch": header.epoch,
                "exported_s": header.exported_s,
                "updates": header.updates,
            }
        )

    def update(self, record: UpdateRecord) -> bytes:
        self._count += 1
        if record.seq != self._count:
            raise ArchiveError(f"seq {record.seq} where {self._count} was expected")
        self._digest.update(record.data)
        return _line(
            {
                "seq": record.seq,
                "time_s": record.time_s,
                **record.author.as_dict(),
                "update": base64.b64encode(record.data).decode(),
            }
        )

    def end(self) -> bytes:
        return _line({"end": True, "updates": self._count, "sha256": self._digest.hexdigest()})


class LineSplitter:
    """An export's lines from its bytes as they arrive (an HTTP body, read in
    chunks), so that the file is held once, as lines, and never whole besides:
    :meth:`feed` each chunk, then :meth:`lines` gives every line in order, each
    let go once it has been read."""

    def __init__(self) -> None:
        self._lines: deque[bytes] = deque()
        self._partial = bytearray()  # the line under way

    def feed(self, chunk: bytes) -> None:
        end = chunk.rfind(b"\n")
        if end < 0:
            self._partial += chunk
            return
        self._partial += memoryview(chunk)[:end]
        self._lines.extend(bytes(self._partial).split(b"\n"))
        self._partial = bytearray(memoryview(chunk)[end + 1 :])

    def lines(self) -> Iterator[bytes]:
        """Every line, the last one too if the file does not end with a newline."""
        if self._partial:
            self._lines.append(bytes(self._partial))
            self._partial = bytearray()
        while self._lines:
            yield self._lines.popleft()


def read_archive(
    lines: Iterable[bytes], *, order: LogOrder | None = None
) -> tuple[ArchiveHeader, Iterator[UpdateRecord]]:
    """The header, and the updates as records (named for the header's document).
    The iterator raises ArchiveError at the first fault, including a missing or
    wrong end line, so a caller that stores records as they come must be ready
    to undo them (collab.core.archive imports into a new document only).
    ``order`` is told each update's check, as it is read."""
    numbered = enumerate(lines, 1)
    try:
        number, first = next(numbered)
    except StopIteration:
        raise ArchiveError("the file is empty") from None
    head = _json(first, number)
    if head.get("format") != FORMAT:
        raise ArchiveError(f"not a {FORMAT} file", number)
    if head.get("version") != VERSION:
        raise ArchiveError(
            f"format version {head.get('version')!r}; this collab reads version {VERSION}", number
        )
    doc, epoch = head.get("doc"), head.get("epoch")
    exported_s, count = head.get("exported_s"), head.get("updates")
    if not isinstance(doc, str) or not doc:
        raise ArchiveError("the header names no document", number)
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise ArchiveError("the header's update count is not a count", number)
    if (
        not isinstance(exported_s, (int, float))
        or not 0 <= exported_s <= MAX_TIME_S
        or (epoch is not None and not isinstance(epoch, str))
    ):
        raise ArchiveError("the header's time or epoch is malformed", number)
    header = ArchiveHeader(doc, epoch, float(exported_s), count)
    return header, _records(header, numbered, order)


def _records(
    header: ArchiveHeader, numbered: Iterator[tuple[int, bytes]], order: LogOrder | None
) -> Iterator[UpdateRecord]:
    digest = hashlib.sha256()
    seq = 0
    for number, raw in numbered:
        entry = _json(raw, number)
        if entry.get("end") is True:
            if entry.get("updates") != seq or seq != header.updates:
                raise ArchiveError(
                    f"{seq} updates read; the file says {entry.get('updates')!r} "
                    f"(header {header.updates})",
                    number,
                )
            if entry.get("sha256") != digest.hexdigest():
                raise ArchiveError(
                    "the updates' digest does not match: the file was altered", number
                )
            for extra_number, extra in numbered:
                if extra.strip():
                    raise ArchiveError("content after the end line", extra_number)
            return
        seq += 1  # noqa: SIM113 - it counts updates, not lines
        record, ranges = _record(header.doc, entry, seq, number)
        digest.update(record.data)  # of the file's bytes
        squashed = squash_runs(record.data, ranges)
        if squashed is not None:  # stored as the live path stores it (collab.wire.ysplit)
            record, ranges = dataclasses.replace(record, data=squashed), check_update(squashed)
        if order is not None:
            order.take(ranges)
        yield record
    raise ArchiveError("the file ends without its end line: it is truncated")


def _record(
    doc: str, entry: dict[str, Any], seq: int, number: int
) -> tuple[UpdateRecord, UpdateRanges]:
    if entry.get("seq") != seq:
        raise ArchiveError(f"seq {entry.get('seq')!r} where {seq} was expected", number)
    time_s = entry.get("time_s")
    if (
        not isinstance(time_s, (int, float))
        or isinstance(time_s, bool)
        or not 0 <= time_s <= MAX_TIME_S  # NaN fails both
    ):
        raise ArchiveError(f"time_s is not a time between 1970 and 9999: {time_s!r}", number)
    names = [entry.get(key) for key in ("user", "client", "instance")]
    if any(name is not None and not isinstance(name, str) for name in names):
        raise ArchiveError("user, client and instance must be strings or null", number)
    raw = entry.get("update")
    if not isinstance(raw, str):
        raise ArchiveError("the update is missing", number)
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise ArchiveError("the update is not base64", number) from None
    try:
        ranges = check_update(data)
    except FormatError as exc:
        raise ArchiveError(
            f"the update at seq {seq} is not a valid Yjs update: {exc}", number
        ) from None
    return UpdateRecord(doc, seq, data, float(time_s), Author(*names)), ranges


def _json(raw: bytes, number: int) -> dict[str, Any]:
    if len(raw) > MAX_LINE_BYTES:
        raise ArchiveError("the line is too long", number)
    try:
        value = json.loads(raw)
    except ValueError:
        raise ArchiveError("not JSON", number) from None
    if not isinstance(value, dict):
        raise ArchiveError("not a JSON object", number)
    return value


# -- export and import through a store ----------------------------------------------------

IMPORT_BATCH = 1000  # updates per append
MAX_NAME_BYTES = 512  # of an imported document's name, as the server's default
EXPORT_PAGE = 1000  # updates per read


async def export_lines(
    doc: str,
    epoch: str | None,
    head_seq: int,
    read_page: Callable[[int], Awaitable[list[UpdateRecord]]],
    *,
    progress: Callable[[int], None] | None = None,
) -> AsyncIterator[bytes]:
    """The lines of ``doc``'s export; ``read_page(after_seq)`` gives the next
    updates (a store, or a server's API). Raises ArchiveError when the log does
    not hold every seq up to ``head_seq``."""
    writer = ArchiveWriter()
    yield writer.header(ArchiveHeader(doc, epoch, time.time(), head_seq))
    after = 0
    while after < head_seq:
        page = [record for record in await read_page(after) if record.seq <= head_seq]
        if not page:
            break
        if page[0].seq != after + 1:
            raise ArchiveError(
                f"{doc!r}: updates {after + 1}..{page[0].seq - 1} are no longer kept "
                "(retention): only whole histories are exported"
            )
        for record in page:
            yield writer.update(record)
        after = page[-1].seq
        if progress is not None:
            progress(after)
    if after != head_seq:
        raise ArchiveError(f"{doc!r}: the log ends at seq {after}, not {head_seq}")
    yield writer.end()


async def export_document(
    store: Store, doc: str, *, progress: Callable[[int], None] | None = None
) -> AsyncIterator[bytes]:
    """The lines of ``doc``'s export, from a store."""
    info = await store.get_document(doc)
    if info is None:
        raise ArchiveError(f"no document named {doc!r}")

    async def read_page(after: int) -> list[UpdateRecord]:
        return await store.read_updates(doc, after_seq=after, limit=EXPORT_PAGE)

    async for line in export_lines(doc, info.epoch, info.head_seq, read_page, progress=progress):
        yield line


async def import_document(
    store: Store,
    lines: Iterable[bytes] | AsyncIterable[bytes],
    *,
    name: str | None = None,
    max_name_bytes: int = MAX_NAME_BYTES,
    progress: Callable[[int, int], None] | None = None,
    importer: str | None = None,
    cadence: Cadence | None = None,
    trim_memory: bool = True,
) -> tuple[str, int]:
    """Import an export as a new document (``name``, or the one it was exported
    from), with its updates' seqs, times and authors (the instance as
    ``import:INSTANCE``: no running instance takes them for its own; with
    ``importer``, the user who imported them, as ``import:by:USER``: the file's
    authors are its word, not the server's). Every line is checked
    before anything is stored, so a bad file stores nothing. Snapshots and
    checkpoints are written as the updates are stored, where and as the writer
    would have written them (``cadence``: the server's default settings), so an
    imported document loads as fast as any other; with ``trim_memory``, the memory
    a large snapshot's copies took is handed back to the system after each.
    Returns ``(name, updates)``. Raises ArchiveError (the file, or a document of
    that name exists; or an update that cannot be applied, the import then taken
    back), StoreError."""
    if isinstance(lines, AsyncIterable):
        lines = [line async for line in lines]
    order = LogOrder()  # whether the history applies as merged runs, needing no more checks
    header, records = read_archive(lines, order=order)
    doc = name or header.doc
    try:
        doc = validate_document_name(doc, max_name_bytes)  # as /ws would have it
    except ProtocolError as exc:
        raise ArchiveError(f"{doc!r}: {exc.message}") from None
    loop = asyncio.get_running_loop()
    # Every line checked first, off the event loop: a bad file stores nothing.
    checked = await loop.run_in_executor(None, list, records)
    if await store.get_document(doc) is not None:
        raise DocumentExists(f"a document named {doc!r} exists; import under another name")
    if not checked:
        await store.load(doc, create=True)  # an empty document, as it was exported
    # (Where the snapshots fall is a pass over every record: on a thread too.)
    history = await loop.run_in_executor(
        None,
        _ImportedHistory,
        doc,
        checked,
        cadence or Cadence.of(Settings()),
        order.in_order,
        trim_memory,
    )
    total = len(checked)
    # Each batch let go of once stored: the file's updates are not all held to the end.
    batches = deque(checked[at : at + IMPORT_BATCH] for at in range(0, total, IMPORT_BATCH))
    del checked
    stored = 0
    try:
        while batches:
            records = batches.popleft()
            batch = [
                NewUpdate(
                    doc,
                    record.data,
                    record.time_s,
                    Author(
                        record.author.user,
                        record.author.client,
                        f"import:by:{importer}"
                        if importer is not None
                        else _imported(record.author.instance),
                    ),
                )
                for record in records
            ]
            result = await store.append(batch)
            expected = list(range(stored + 1, stored + 1 + len(batch)))
            if [r.seq for r in result.records] != expected:
                raise ArchiveError(
                    f"{doc!r} was written by someone else during the import; its seqs differ "
                    "from the file's"
                )
            del batch, result
            if history.epoch is None:
                info = await store.get_document(doc)
                if info is None:
                    raise ArchiveError(f"{doc!r} was deleted during the import")
                history.epoch = info.epoch
            count = len(records)
            runs = deque(history.runs(records))
            del records  # each run let go of once applied
            while runs:
                await _advance(store, doc, history, runs.popleft())
            stored += count
            if progress is not None:
                progress(stored, total)
    except StoreError:
        # The store failed part way (a full disk): take the part back, so that a
        # failed import leaves no half document behind. (If that fails too, the
        # name stays taken and the error says why.)
        with contextlib.suppress(StoreError):
            await store.delete_document(doc)
        raise
    return doc, stored


class _ImportedHistory:
    """The document an import builds, update by update, as the store's log will
    hold it: at each point where the writer would have snapshotted (by the
    cadence), a checkpoint, and a snapshot where thinning would have kept one
    (all the points are known beforehand: the others are not written at all)."""

    def __init__(
        self,
        doc: str,
        records: list[UpdateRecord],
        cadence: Cadence,
        in_order: bool,
        trim_memory: bool,
    ) -> None:
        self.doc = doc
        self.trim_memory = trim_memory
        # Every update needs only what came before it (LogOrder): applied as merged
        # runs without checking each again (the reader checked every one).
        self._apply = apply_in_order if in_order else apply_log
        self.epoch: str | None = None  # known once the first batch is stored
        self._replica = Replica(name=doc)
        self._points = set(cadence.points(len(record.data) for record in records))
        self._kept = cadence.kept(sorted(self._points))
        self._base: tuple[int, bytes] = (0, EMPTY_STATE_VECTOR)  # the last checkpoint's
        self._authors = authors.Index()  # kept with each snapshot, as the writer's are

    def runs(self, records: list[UpdateRecord]) -> list[list[UpdateRecord]]:
        """``records`` cut after each snapshot point among them."""
        found: list[list[UpdateRecord]] = []
        start = 0
        for end, record in enumerate(records, 1):
            if record.seq in self._points:
                found.append(records[start:end])
                start = end
        if start < len(records):
            found.append(records[start:])
        return found

    def advance(self, run: list[UpdateRecord]) -> Encoded | None:
        """Apply the next run of records (in seq order: see :meth:`runs`) and encode
        the snapshot point it ends at, if it does. CPU-bound: run it in an
        executor. Raises ArchiveError for an update that cannot be applied (the
        store's own log would fail to load)."""
        try:
            self._apply(self._replica, run)
        except StoreError as exc:
            raise ArchiveError(f"{exc}: the history cannot be loaded") from None
        self._authors.extend(run)
        seq = run[-1].seq
        if seq not in self._points:
            return None
        encoded = encode(
            self._replica,
            self.doc,
            seq,
            self.epoch,
            snapshot=seq in self._kept,
            checkpoint_base=self._base,
            authors=self._authors.encode() if seq in self._kept else None,
        )
        assert encoded.checkpoint is not None
        self._base = (seq, encoded.checkpoint.state_vector)
        snapshot = encoded.snapshot
        if self.trim_memory and snapshot and len(snapshot.data) >= memory.TRIM_AFTER_BYTES:
            memory.trim()  # pycrdt's buffer of the encoding, copied and freed
        return encoded


async def _advance(
    store: Store, doc: str, history: _ImportedHistory, run: list[UpdateRecord]
) -> None:
    """Apply a run of stored records to the imported document and store the
    snapshot and checkpoint it ends at, if any, before the next is made: each is
    the document's size, and a batch of records may hold several."""
    loop = asyncio.get_running_loop()
    # Applied and encoded on a thread: a pass over the document per snapshot.
    try:
        encoded = await loop.run_in_executor(None, history.advance, run)
    except ArchiveError:
        with contextlib.suppress(StoreError):
            await store.delete_document(doc)  # what was stored of it
        raise
    if encoded is None:
        return
    snapshot, checkpoint = encoded.snapshot, encoded.checkpoint
    del encoded
    if snapshot is not None:
        await store.save_snapshot(snapshot)
        large = len(snapshot.data) >= memory.TRIM_AFTER_BYTES
        del snapshot
        if large and history.trim_memory:
            # The store's copy of it, freed now: handed back before the next is made.
            await loop.run_in_executor(None, memory.trim)
    if checkpoint is not None:
        await store.save_checkpoint(checkpoint)


def _imported(instance: str | None) -> str:
    if instance is not None and instance.startswith("import:"):
        return instance
    return f"import:{instance or '-'}"
