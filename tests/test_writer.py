"""The group-commit writer: batches appends, acknowledges only what is durable,
retries failures, flushes on stop and isolates a document whose log moved on."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest

from collab.config import Settings
from collab.core.writer import PendingWrite, Writer
from collab.errors import SeqConflict, StoreError
from collab.store.base import SnapshotRecord, Store, UpdateRecord
from collab.store.memory import MemoryStore
from collab.store.sqlite import SQLiteStore
from tests.helpers import TIMEOUT_S, text_update

SETTINGS = Settings(write_retry_max_s=0.05, shutdown_flush_timeout_s=5.0)


class RecordingStore(MemoryStore):
    """A memory store that can hold appends at a gate and fail the first few.

    ``committed`` lists every (doc, seq) stored, in commit order, and ``batches``
    the seqs of each committed batch.
    """

    def __init__(self, *, fail_first: int = 0, error: type[Exception] = StoreError) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()
        self.append_started = asyncio.Event()
        self.attempts: list[list[tuple[str, int]]] = []
        self.batches: list[list[tuple[str, int]]] = []
        self.committed: list[tuple[str, int]] = []
        self._fail_first = fail_first
        self._error = error

    async def append(self, updates: Sequence[UpdateRecord]) -> None:
        keys = [(u.doc, u.seq) for u in updates]
        self.attempts.append(keys)
        self.append_started.set()
        await self.gate.wait()
        if len(self.attempts) <= self._fail_first:
            raise self._error(f"disk unavailable (attempt {len(self.attempts)})")
        await super().append(updates)
        self.batches.append(keys)
        self.committed.extend(keys)


def update(doc: str, seq: int) -> UpdateRecord:
    return UpdateRecord(doc, seq, text_update(f"{doc}{seq}", client_id=seq), time.time())


class Acks:
    """on_durable callbacks that note what the store held when they ran."""

    def __init__(self, store: RecordingStore | None = None) -> None:
        self.store = store
        self.order: list[str] = []
        self.premature: list[str] = []
        self._waiters: dict[str, asyncio.Event] = {}

    def callback(self, name: str, needs: Sequence[tuple[str, int]] = ()) -> Callable[[], None]:
        done = self._waiters.setdefault(name, asyncio.Event())

        def on_durable() -> None:
            if self.store is not None and not set(needs) <= set(self.store.committed):
                self.premature.append(name)
            self.order.append(name)
            done.set()

        return on_durable

    async def wait(self, *names: str) -> None:
        for name in names:
            await asyncio.wait_for(self._waiters[name].wait(), TIMEOUT_S)


def submit(writer: Writer, acks: Acks, doc: str, seq: int) -> None:
    name = f"{doc}{seq}"
    writer.submit(PendingWrite(doc, update(doc, seq), acks.callback(name, [(doc, seq)])))


@contextlib.asynccontextmanager
async def running(
    store: Store, settings: Settings = SETTINGS
) -> AsyncIterator[tuple[Writer, list[tuple[str, SeqConflict]]]]:
    conflicts: list[tuple[str, SeqConflict]] = []
    writer = Writer(store, settings, on_conflict=lambda doc, exc: conflicts.append((doc, exc)))
    writer.start()
    try:
        yield writer, conflicts
    finally:
        await writer.stop()


async def test_entries_submitted_during_a_commit_go_into_the_next_batch():
    store = RecordingStore()
    acks = Acks(store)
    async with running(store) as (writer, _):
        store.gate.clear()
        submit(writer, acks, "notes", 1)
        await asyncio.wait_for(store.append_started.wait(), TIMEOUT_S)
        for seq in range(2, 51):
            submit(writer, acks, "notes", seq)
        store.gate.set()
        await acks.wait("notes50")

    assert store.batches == [[("notes", 1)], [("notes", seq) for seq in range(2, 51)]]
    assert store.stats.append_batches == writer.batches_committed == 2
    assert acks.order == [f"notes{seq}" for seq in range(1, 51)]


async def test_concurrent_writers_share_commits_on_a_real_sqlite_file(tmp_path: Path):
    # Twenty editors, each waiting for its ACK before sending its next update, as
    # clients waiting on a flush do: every commit carries one update from each.
    editors, rounds = 20, 25
    store = SQLiteStore(tmp_path / "collab.db")
    await store.open()
    try:
        async with running(store) as (writer, _):

            async def edit(doc: str) -> None:
                for seq in range(1, rounds + 1):
                    durable = asyncio.Event()
                    writer.submit(PendingWrite(doc, update(doc, seq), durable.set))
                    await asyncio.wait_for(durable.wait(), TIMEOUT_S)

            await asyncio.gather(*(edit(f"doc{i}") for i in range(editors)))

        total = editors * rounds
        assert store.stats.log_rows_written == total
        assert store.stats.append_batches <= total // 10
        for i in range(editors):
            assert (await store.get_document(f"doc{i}")).head_seq == rounds
    finally:
        await store.close()


async def test_on_durable_runs_only_after_the_batch_is_committed():
    store = RecordingStore()
    acks = Acks(store)
    async with running(store) as (writer, _):
        store.gate.clear()
        submit(writer, acks, "notes", 1)
        submit(writer, acks, "notes", 2)
        await asyncio.wait_for(store.append_started.wait(), TIMEOUT_S)
        for _ in range(20):  # give a wrongly early ACK every chance to happen
            await asyncio.sleep(0)

        assert acks.order == []
        assert await store.read_updates("notes") == []

        store.gate.set()
        await acks.wait("notes1", "notes2")

    assert acks.order == ["notes1", "notes2"]
    assert acks.premature == []


@pytest.mark.allow_error_logs
async def test_a_failing_append_is_retried_and_acknowledged_only_once_stored(
    caplog: pytest.LogCaptureFixture,
):
    store = RecordingStore(fail_first=3)
    acks = Acks(store)
    async with running(store) as (writer, _):
        store.gate.clear()
        submit(writer, acks, "notes", 1)
        await asyncio.wait_for(store.append_started.wait(), TIMEOUT_S)
        submit(writer, acks, "notes", 2)  # queued behind the failing batch
        store.gate.set()
        await acks.wait("notes1", "notes2")
        submit(writer, acks, "notes", 3)
        await acks.wait("notes3")

    assert store.attempts[:3] == [[("notes", 1)]] + [[("notes", 1), ("notes", 2)]] * 2
    assert store.committed == [("notes", 1), ("notes", 2), ("notes", 3)]
    assert [u.seq for u in await store.read_updates("notes")] == [1, 2, 3]
    assert acks.premature == []
    assert acks.order == ["notes1", "notes2", "notes3"]
    # One error for the episode, with the store's own message and no traceback;
    # the retries after it at debug level; one line when it recovers.
    store_logs = [r for r in caplog.records if r.name == "collab.store"]
    errors = [r for r in store_logs if r.levelno >= logging.WARNING]
    assert [r.levelname for r in errors] == ["ERROR", "WARNING"]
    assert "disk unavailable (attempt 1)" in errors[0].getMessage()
    assert errors[0].exc_info is None
    assert "recovered" in errors[1].getMessage()
    assert len([r for r in store_logs if "failed again" in r.getMessage()]) == 2
    assert writer.failure is None


@pytest.mark.allow_error_logs
async def test_an_unexpected_store_exception_is_retried_too(caplog: pytest.LogCaptureFixture):
    store = RecordingStore(fail_first=1, error=RuntimeError)
    acks = Acks(store)
    async with running(store) as (writer, _):
        submit(writer, acks, "notes", 1)
        await acks.wait("notes1")

    assert store.committed == [("notes", 1)]
    assert acks.premature == []
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.exc_info[0] for r in errors] == [RuntimeError]


async def test_an_entry_without_a_record_is_acknowledged_after_earlier_entries_are_durable():
    store = RecordingStore()
    acks = Acks(store)
    async with running(store) as (writer, _):
        store.gate.clear()
        submit(writer, acks, "notes", 1)
        await asyncio.wait_for(store.append_started.wait(), TIMEOUT_S)
        # A replay of what the room has: nothing to store, but the ACK must not
        # overtake the update still being committed.
        writer.submit(PendingWrite("notes", None, acks.callback("replay", [("notes", 1)])))
        for _ in range(20):
            await asyncio.sleep(0)
        assert acks.order == []

        store.gate.set()
        await acks.wait("notes1", "replay")

    assert acks.order == ["notes1", "replay"]
    assert acks.premature == []
    assert [u.seq for u in await store.read_updates("notes")] == [1]


async def test_an_entry_without_a_record_on_an_idle_writer_is_acknowledged_promptly():
    store = RecordingStore()
    acks = Acks(store)
    async with running(store) as (writer, _):
        writer.submit(PendingWrite("notes", None, acks.callback("replay")))
        await acks.wait("replay")

    assert await store.read_updates("notes") == []


async def test_stop_flushes_every_queued_write(tmp_path: Path):
    store = SQLiteStore(tmp_path / "collab.db")
    await store.open()
    acks = Acks()
    try:
        writer = Writer(store, SETTINGS, on_conflict=lambda doc, exc: None)
        writer.start()
        for seq in range(1, 201):
            submit(writer, acks, "notes", seq)
        assert writer.queued == 200

        await writer.stop()

        assert writer.queued == 0
        assert acks.order == [f"notes{seq}" for seq in range(1, 201)]
        assert [u.seq for u in await store.read_updates("notes")] == list(range(1, 201))
        with pytest.raises(StoreError, match="shutting down"):
            submit(writer, acks, "notes", 201)
    finally:
        await store.close()


@pytest.mark.allow_error_logs
async def test_stop_gives_up_after_the_flush_timeout_without_acknowledging(
    caplog: pytest.LogCaptureFixture,
):
    store = RecordingStore()
    acks = Acks(store)
    store.gate.clear()  # the disk never answers
    writer = Writer(store, SETTINGS.replace(shutdown_flush_timeout_s=0.1), lambda d, e: None)
    writer.start()
    submit(writer, acks, "notes", 1)
    submit(writer, acks, "notes", 2)

    await asyncio.wait_for(writer.stop(), TIMEOUT_S)

    assert acks.order == []
    assert store.committed == []
    assert any("2 updates could not be stored" in r.getMessage() for r in caplog.records)


@pytest.mark.allow_error_logs
async def test_a_seq_conflict_drops_only_that_documents_entries():
    store = RecordingStore()
    # Another server already wrote seqs 1 and 2 of "taken".
    theirs = [UpdateRecord("taken", seq, b"theirs", time.time()) for seq in (1, 2)]
    await MemoryStore.append(store, theirs)
    acks = Acks(store)
    async with running(store) as (writer, conflicts):
        store.gate.clear()
        submit(writer, acks, "free", 1)
        await asyncio.wait_for(store.append_started.wait(), TIMEOUT_S)
        submit(writer, acks, "taken", 1)
        submit(writer, acks, "free", 2)
        submit(writer, acks, "taken", 2)
        submit(writer, acks, "free", 3)
        store.gate.set()
        await acks.wait("free1", "free2", "free3")

        assert [doc for doc, _ in conflicts] == ["taken"]
        assert isinstance(conflicts[0][1], SeqConflict)
        assert writer.queued == 0
        # The writer carries on.
        submit(writer, acks, "free", 4)
        await acks.wait("free4")

    assert acks.order == ["free1", "free2", "free3", "free4"]
    assert [u.seq for u in await store.read_updates("free")] == [1, 2, 3, 4]
    assert await store.read_updates("taken") == theirs


async def test_an_entry_asking_for_a_snapshot_gets_one_once_durable():
    written = asyncio.Event()

    class SnapshotStore(RecordingStore):
        async def save_snapshot(self, snapshot: SnapshotRecord) -> None:
            await super().save_snapshot(snapshot)
            written.set()

    store = SnapshotStore()
    async with running(store) as (writer, _):
        for seq in range(1, 4):
            record = update("notes", seq)
            writer.submit(PendingWrite("notes", record, None, snapshot_after=seq == 3))
        await asyncio.wait_for(written.wait(), TIMEOUT_S)

    snapshot = await store.latest_snapshot("notes")
    assert snapshot is not None and snapshot.seq == 3
    assert store.stats.snapshots_written == 1
