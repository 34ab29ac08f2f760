"""The group-commit writer: batches appends, hands each entry its stored record only
once it is durable, retries failures (a lost seq race too), bounds its queue,
slows writers down before refusing them, flushes on stop, and snapshots."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest

from collab.config import Settings
from collab.core.snapshots import Snapshotter
from collab.core.writer import Submission, Writer
from collab.errors import Overloaded, SeqConflict, StoreError
from collab.store import AppendResult, NewUpdate, SnapshotRecord, Store, UpdateRecord
from collab.store.memory import MemoryStore
from collab.store.sqlite import SQLiteStore
from tests.helpers import TIMEOUT_S, text_of, text_update

SETTINGS = Settings(write_retry_max_s=0.05, shutdown_flush_timeout_s=5.0)


def update(doc: str, n: int) -> NewUpdate:
    """An update whose text names it: ``doc`` then ``n``."""
    return NewUpdate(doc, text_update(f"{doc}{n}", client_id=n), time.time())


def name_of(update: NewUpdate | UpdateRecord) -> str:
    return text_of(update.data)


class RecordingStore(MemoryStore):
    """A memory store that can hold appends at a gate and fail the first few.

    ``attempts`` and ``batches`` list the names of the updates of each attempted
    and each committed batch; ``committed``, every name stored, in commit order.
    """

    def __init__(self, *, fail_first: int = 0, error: type[Exception] = StoreError) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()
        self.append_started = asyncio.Event()
        self.attempts: list[list[str]] = []
        self.batches: list[list[str]] = []
        self.committed: list[str] = []
        self._fail_first = fail_first
        self._error = error

    async def append(self, updates: Sequence[NewUpdate]) -> AppendResult:
        names = [name_of(u) for u in updates]
        self.attempts.append(names)
        self.append_started.set()
        await self.gate.wait()
        if len(self.attempts) <= self._fail_first:
            if self._error is SeqConflict:
                raise SeqConflict(updates[0].doc, "another instance took the seq")
            raise self._error(f"disk unavailable (attempt {len(self.attempts)})")
        result = await super().append(updates)
        self.batches.append(names)
        self.committed.extend(names)
        return result


class Report:
    """What the writer reports, to one callback: committed(record)."""

    def __init__(self, on_committed: Callable[[UpdateRecord | None], None]) -> None:
        self.on_committed = on_committed

    def committed(self, submission: Submission, record: UpdateRecord | None) -> None:
        self.on_committed(record)

    def dropped(self, submission: Submission) -> None:
        raise AssertionError(f"{submission} was dropped")


def entry(
    doc: str, new: NewUpdate | None, on_committed: Callable[[UpdateRecord | None], None]
) -> Submission:
    return Submission(doc, None, new, Report(on_committed))


class Acks:
    """on_committed callbacks that note the records they got and what the store
    held when they ran."""

    def __init__(self, store: RecordingStore | None = None) -> None:
        self.store = store
        self.order: list[str] = []
        self.records: dict[str, UpdateRecord | None] = {}
        self.premature: list[str] = []
        self._waiters: dict[str, asyncio.Event] = {}

    def callback(
        self, name: str, needs: Sequence[str] = ()
    ) -> Callable[[UpdateRecord | None], None]:
        done = self._waiters.setdefault(name, asyncio.Event())

        def on_committed(record: UpdateRecord | None) -> None:
            if self.store is not None and not set(needs) <= set(self.store.committed):
                self.premature.append(name)
            self.order.append(name)
            self.records[name] = record
            done.set()

        return on_committed

    async def wait(self, *names: str) -> None:
        for name in names:
            await asyncio.wait_for(self._waiters[name].wait(), TIMEOUT_S)


def submit(writer: Writer, acks: Acks, doc: str, n: int) -> None:
    name = f"{doc}{n}"
    writer.submit(entry(doc, update(doc, n), acks.callback(name, [name])))


@contextlib.asynccontextmanager
async def running(store: Store, settings: Settings = SETTINGS) -> AsyncIterator[Writer]:
    writer = Writer(store, settings)
    writer.start()
    try:
        yield writer
    finally:
        await writer.stop()


async def test_entries_submitted_during_a_commit_go_into_the_next_batch():
    store = RecordingStore()
    acks = Acks(store)
    async with running(store) as writer:
        store.gate.clear()
        submit(writer, acks, "notes", 1)
        await asyncio.wait_for(store.append_started.wait(), TIMEOUT_S)
        for n in range(2, 51):
            submit(writer, acks, "notes", n)
        store.gate.set()
        await acks.wait("notes50")

    assert store.batches == [["notes1"], [f"notes{n}" for n in range(2, 51)]]
    assert store.stats.append_batches == writer.batches_committed == 2
    assert acks.order == [f"notes{n}" for n in range(1, 51)]


async def test_each_entry_gets_the_record_the_store_made_of_it_with_its_seq():
    store = RecordingStore()
    acks = Acks(store)
    async with running(store) as writer:
        for n in (1, 2):
            submit(writer, acks, "a", n)
        submit(writer, acks, "b", 3)
        submit(writer, acks, "a", 4)
        await acks.wait("a1", "a2", "b3", "a4")

    assert {name: (r.doc, r.seq) for name, r in acks.records.items() if r} == {
        "a1": ("a", 1),
        "a2": ("a", 2),
        "b3": ("b", 1),
        "a4": ("a", 3),
    }
    assert all(name_of(record) == name for name, record in acks.records.items() if record)


async def test_concurrent_writers_share_commits_on_a_real_sqlite_file(tmp_path: Path):
    # Twenty editors, each waiting for its ACK before sending its next update, as
    # clients waiting on a flush do: every commit carries one update from each.
    editors, rounds = 20, 25
    store = SQLiteStore(tmp_path / "collab.db")
    await store.open()
    try:
        async with running(store) as writer:

            async def edit(doc: str) -> None:
                for n in range(1, rounds + 1):
                    durable = asyncio.Event()
                    writer.submit(entry(doc, update(doc, n), lambda _, d=durable: d.set()))
                    await asyncio.wait_for(durable.wait(), TIMEOUT_S)

            await asyncio.gather(*(edit(f"doc{i}") for i in range(editors)))

        total = editors * rounds
        assert store.stats.log_rows_written == total
        assert store.stats.append_batches <= total // 10
        for i in range(editors):
            assert (await store.get_document(f"doc{i}")).head_seq == rounds
    finally:
        await store.close()


async def test_on_committed_runs_only_after_the_batch_is_committed():
    store = RecordingStore()
    acks = Acks(store)
    async with running(store) as writer:
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
    async with running(store) as writer:
        store.gate.clear()
        submit(writer, acks, "notes", 1)
        await asyncio.wait_for(store.append_started.wait(), TIMEOUT_S)
        submit(writer, acks, "notes", 2)  # queued behind the failing batch
        store.gate.set()
        await acks.wait("notes1", "notes2")
        submit(writer, acks, "notes", 3)
        await acks.wait("notes3")

    assert store.attempts[:3] == [["notes1"]] + [["notes1", "notes2"]] * 2
    assert store.committed == ["notes1", "notes2", "notes3"]
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
    async with running(store) as writer:
        submit(writer, acks, "notes", 1)
        await acks.wait("notes1")

    assert store.committed == ["notes1"]
    assert acks.premature == []
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.exc_info[0] for r in errors] == [RuntimeError]


@pytest.mark.allow_error_logs
async def test_a_lost_seq_race_is_retried_and_nothing_is_dropped_or_left_waiting():
    store = RecordingStore(fail_first=1, error=SeqConflict)
    acks = Acks(store)
    async with running(store) as writer:
        for n in range(1, 4):
            submit(writer, acks, "raced", n)
        await acks.wait("raced1", "raced2", "raced3")
        assert writer.queued == 0

    assert store.committed == ["raced1", "raced2", "raced3"]
    assert [r.seq for r in await store.read_updates("raced")] == [1, 2, 3]


async def test_an_entry_without_an_update_runs_after_earlier_entries_are_durable():
    store = RecordingStore()
    acks = Acks(store)
    async with running(store) as writer:
        store.gate.clear()
        submit(writer, acks, "notes", 1)
        await asyncio.wait_for(store.append_started.wait(), TIMEOUT_S)
        # A replay of what the room has: nothing to store, but the ACK must not
        # overtake the update still being committed.
        writer.submit(entry("notes", None, acks.callback("replay", ["notes1"])))
        for _ in range(20):  # turns of the loop, no time: an early ACK's every chance
            await asyncio.sleep(0)
        assert acks.order == []

        store.gate.set()
        await acks.wait("notes1", "replay")

    assert acks.order == ["notes1", "replay"]
    assert acks.records["replay"] is None
    assert acks.premature == []
    assert [u.seq for u in await store.read_updates("notes")] == [1]


async def test_an_entry_without_an_update_on_an_idle_writer_runs_promptly():
    store = RecordingStore()
    acks = Acks(store)
    async with running(store) as writer:
        writer.submit(entry("notes", None, acks.callback("replay")))
        await acks.wait("replay")

    assert await store.read_updates("notes") == []


async def test_past_half_the_queue_writers_wait_and_past_all_of_it_they_are_refused():
    store = RecordingStore()
    settings = SETTINGS.replace(max_frame_bytes=1024, write_queue_bytes=4096)
    acks = Acks(store)
    size = len(update("q", 1).data)
    async with running(store, settings) as writer:
        store.gate.clear()
        assert writer.backpressure() is None
        count = 0
        while writer.queued_bytes + size <= settings.write_queue_bytes:
            writer.admit(size)
            count += 1
            submit(writer, acks, "q", count)
        waiting = writer.backpressure()
        assert waiting is not None  # more than half full: read no more for now

        with pytest.raises(Overloaded, match="write queue is full"):
            writer.admit(size)
        assert writer.queued_bytes <= settings.write_queue_bytes
        store.gate.set()
        await asyncio.wait_for(waiting, TIMEOUT_S)
        assert writer.queued_bytes <= settings.write_queue_bytes // 2
        await acks.wait(f"q{count}")


async def test_stop_flushes_every_queued_write_and_refuses_new_ones(tmp_path: Path):
    store = SQLiteStore(tmp_path / "collab.db")
    await store.open()
    acks = Acks()
    try:
        writer = Writer(store, SETTINGS)
        writer.start()
        for n in range(1, 201):
            submit(writer, acks, "notes", n)
        assert writer.queued == 200

        await writer.stop()

        assert writer.queued == 0
        assert acks.order == [f"notes{n}" for n in range(1, 201)]
        assert [u.seq for u in await store.read_updates("notes")] == list(range(1, 201))
        with pytest.raises(Overloaded, match="shutting down"):
            writer.admit(10)
    finally:
        await store.close()


@pytest.mark.allow_error_logs
async def test_stop_gives_up_after_the_flush_timeout_without_acknowledging(
    caplog: pytest.LogCaptureFixture,
):
    store = RecordingStore()
    acks = Acks(store)
    store.gate.clear()  # the disk never answers
    writer = Writer(store, SETTINGS.replace(shutdown_flush_timeout_s=0.1))
    writer.start()
    submit(writer, acks, "notes", 1)
    submit(writer, acks, "notes", 2)

    await asyncio.wait_for(writer.stop(), TIMEOUT_S)

    assert acks.order == []
    assert store.committed == []
    assert any("2 updates could not be stored" in r.getMessage() for r in caplog.records)


async def test_a_document_past_its_snapshot_interval_gets_a_snapshot_from_the_log():
    written = asyncio.Event()

    class SnapshotStore(RecordingStore):
        async def save_snapshot(self, snapshot: SnapshotRecord) -> None:
            await super().save_snapshot(snapshot)
            written.set()

    store = SnapshotStore()
    acks = Acks(store)
    settings = SETTINGS.replace(snapshot_every_updates=3)
    snapshots = Snapshotter(store, settings)
    snapshots.start()
    writer = Writer(store, settings, on_heads=snapshots.committed)  # as the rooms have it
    writer.start()
    try:
        for n in range(1, 3):
            submit(writer, acks, "notes", n)
        await acks.wait("notes1", "notes2")
        assert await store.snapshot_seqs("notes") == []
        submit(writer, acks, "notes", 3)
        await asyncio.wait_for(written.wait(), TIMEOUT_S)
    finally:
        await writer.stop()
        await snapshots.stop(TIMEOUT_S)

    snapshot = await store.latest_snapshot("notes")
    assert snapshot is not None and snapshot.seq == 3
    assert sorted(text_of(snapshot.data)) == sorted("notes1notes2notes3")


async def test_a_snapshot_is_left_to_the_instance_that_holds_the_lease():
    store = RecordingStore()
    await store.append([update("notes", 1)])
    assert await store.lease_snapshot("notes", "other-instance", 60.0)

    snapshots = Snapshotter(store, SETTINGS.replace(instance_id="this-one"))

    assert not await snapshots.write("notes", 1)
    assert await store.snapshot_seqs("notes") == []
