"""The contract every Store backend keeps (see collab/store/base.py).

A backend's test module subclasses :class:`StoreContract` and provides a ``store``
fixture: an opened store, closed after the test. A backend that keeps its data
across a close also overrides ``reopen``.

    class TestSQLiteStore(StoreContract):
        @pytest.fixture
        def store(self, io_loop, tmp_path): ...
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

import pytest

from collab.errors import SeqConflict
from collab.store.base import Origin, Repair, SnapshotRecord, Store, UpdateRecord

Reopen = Callable[[Store], Awaitable[Store]]


def record(doc: str, seq: int, data: bytes | None = None) -> UpdateRecord:
    return UpdateRecord(doc, seq, data if data is not None else f"{doc}:{seq}".encode(), 0.5)


def records(doc: str, first: int, last: int) -> list[UpdateRecord]:
    return [record(doc, seq) for seq in range(first, last + 1)]


def seqs(updates: list[UpdateRecord] | tuple[UpdateRecord, ...]) -> list[int]:
    return [u.seq for u in updates]


class StoreContract:
    @pytest.fixture
    def store(self) -> Store:
        raise NotImplementedError("a backend's test class provides the store fixture")

    @pytest.fixture
    def reopen(self) -> Reopen:
        """``await reopen(store)``: close ``store`` and open a new one on its data."""
        pytest.skip("this backend keeps nothing once closed")

    # -- documents and epochs ---------------------------------------------------------------

    async def test_loading_a_new_document_creates_it_empty_with_an_epoch(self, store: Store):
        assert await store.get_document("notes") is None

        loaded = await store.load("notes")

        assert loaded.name == "notes"
        assert isinstance(loaded.epoch, str) and loaded.epoch
        assert loaded.snapshot is None
        assert loaded.updates == ()
        assert loaded.head_seq == 0
        info = await store.get_document("notes")
        assert info is not None
        assert (info.name, info.epoch, info.head_seq) == ("notes", loaded.epoch, 0)

    async def test_the_epoch_stays_the_same_across_loads_and_appends(self, store: Store):
        first = await store.load("notes")
        await store.append(records("notes", 1, 3))
        second = await store.load("notes")

        assert second.epoch == first.epoch
        assert (await store.get_document("notes")).epoch == first.epoch

    async def test_every_document_gets_its_own_epoch(self, store: Store):
        epochs = {(await store.load(name)).epoch for name in ("a", "b", "c")}

        assert len(epochs) == 3

    async def test_concurrent_first_loads_agree_on_one_epoch(self, store: Store):
        loads = await asyncio.gather(*(store.load("notes") for _ in range(5)))

        assert len({loaded.epoch for loaded in loads}) == 1
        assert [d.name for d in await store.list_documents()] == ["notes"]

    async def test_the_epoch_and_the_log_survive_reopening(self, store: Store, reopen: Reopen):
        epoch = (await store.load("notes")).epoch
        await store.append(records("notes", 1, 3))
        await store.save_snapshot(SnapshotRecord("notes", 2, b"snap", 1.0))

        store = await reopen(store)

        loaded = await store.load("notes")
        assert loaded.epoch == epoch
        assert loaded.snapshot == SnapshotRecord("notes", 2, b"snap", 1.0)
        assert seqs(loaded.updates) == [3]
        assert await store.read_updates("notes") == records("notes", 1, 3)

    async def test_appending_to_a_document_never_loaded_creates_it(self, store: Store):
        await store.append(records("fresh", 1, 2))

        info = await store.get_document("fresh")
        assert info is not None and info.head_seq == 2
        assert (await store.load("fresh")).epoch == info.epoch

    async def test_documents_are_listed_by_name_with_their_head_seq(self, store: Store):
        before = time.time()
        await store.load("b")
        await store.load("a")
        await store.append(
            [UpdateRecord("a", seq, b"x", time.time()) for seq in (1, 2, 3)]
            + [UpdateRecord("c", 1, b"y", time.time())]
        )

        listed = await store.list_documents()

        assert [(d.name, d.head_seq) for d in listed] == [("a", 3), ("b", 0), ("c", 1)]
        for info in listed:
            assert info == await store.get_document(info.name)
            assert before - 1 <= info.created_s <= info.updated_s <= time.time() + 1

    async def test_an_unknown_document_has_no_info_no_updates_and_no_snapshot(self, store: Store):
        assert await store.get_document("nothing") is None
        assert await store.read_updates("nothing") == []
        assert await store.latest_snapshot("nothing") is None
        assert await store.list_documents() == []

    # -- appends ----------------------------------------------------------------------------

    async def test_appended_updates_come_back_with_origin_and_time(self, store: Store):
        written = [
            UpdateRecord("notes", 1, b"one", 1700000000.123456, Origin("ann", "c-1", "i-1")),
            UpdateRecord("notes", 2, b"two", 1700000001.654321, Origin()),
            UpdateRecord("notes", 3, b"three", time.time(), Origin(user="bob")),
            UpdateRecord("notes", 4, b"four", time.time(), Origin(client="c-2", instance="i-2")),
        ]
        await store.append(written)

        assert await store.read_updates("notes") == written
        assert (await store.load("notes")).updates == tuple(written)

    async def test_seq_must_start_at_one(self, store: Store):
        with pytest.raises(SeqConflict) as caught:
            await store.append([record("notes", 2)])

        assert caught.value.doc == "notes"
        assert await store.read_updates("notes") == []

    async def test_seq_must_continue_at_head_plus_one(self, store: Store):
        await store.append(records("notes", 1, 3))

        for bad in ([record("notes", 3)], [record("notes", 5)], records("notes", 2, 4)):
            with pytest.raises(SeqConflict):
                await store.append(bad)
        await store.append([record("notes", 4)])

        assert seqs(await store.read_updates("notes")) == [1, 2, 3, 4]
        assert (await store.get_document("notes")).head_seq == 4

    async def test_a_batch_with_a_gap_or_a_repeat_stores_nothing(self, store: Store):
        for bad in (
            [record("notes", 1), record("notes", 3)],
            [record("notes", 1), record("notes", 1)],
            [record("notes", 2), record("notes", 1)],
        ):
            with pytest.raises(SeqConflict):
                await store.append(bad)

        assert await store.read_updates("notes") == []

    async def test_a_conflict_in_one_document_stores_nothing_for_any_document(self, store: Store):
        await store.append([record("a", 1), record("b", 1)])

        with pytest.raises(SeqConflict) as caught:
            await store.append([record("a", 2), record("fresh", 1), record("b", 3), record("z", 1)])

        assert caught.value.doc == "b"
        assert seqs(await store.read_updates("a")) == [1]
        assert seqs(await store.read_updates("b")) == [1]
        assert await store.read_updates("fresh") == []
        assert await store.read_updates("z") == []
        assert [(d.name, d.head_seq) for d in await store.list_documents()] == [
            ("a", 1),
            ("b", 1),
        ]

    async def test_one_batch_may_carry_several_documents_interleaved(self, store: Store):
        await store.append([record("a", 1), record("b", 1), record("a", 2), record("b", 2)])

        assert seqs(await store.read_updates("a")) == [1, 2]
        assert seqs(await store.read_updates("b")) == [1, 2]

    async def test_an_empty_batch_stores_nothing(self, store: Store):
        await store.append([])

        assert await store.list_documents() == []

    # -- reading the log --------------------------------------------------------------------

    async def test_read_updates_honours_after_until_and_limit_in_seq_order(self, store: Store):
        await store.append(records("notes", 1, 10))
        await store.append(records("other", 1, 5))

        async def read(**kwargs: int | None) -> list[int]:
            return seqs(await store.read_updates("notes", **kwargs))

        assert await read() == list(range(1, 11))
        assert await read(after_seq=3) == list(range(4, 11))
        assert await read(until_seq=5) == [1, 2, 3, 4, 5]
        assert await read(after_seq=3, until_seq=6) == [4, 5, 6]
        assert await read(after_seq=3, limit=2) == [4, 5]
        assert await read(after_seq=3, until_seq=5, limit=10) == [4, 5]
        assert await read(until_seq=99) == list(range(1, 11))
        assert await read(after_seq=10) == []
        assert await read(after_seq=6, until_seq=6) == []
        assert await read(after_seq=6, until_seq=2) == []
        # limit=0 means no rows, not "no limit" (MongoDB's limit(0) is unlimited).
        assert await read(limit=0) == []
        assert await store.read_updates("notes", after_seq=8) == records("notes", 9, 10)

    # -- snapshots --------------------------------------------------------------------------

    async def test_latest_snapshot_is_the_newest_at_or_before_a_seq(self, store: Store):
        await store.append(records("notes", 1, 9))
        for seq in (3, 6):
            await store.save_snapshot(SnapshotRecord("notes", seq, f"s{seq}".encode(), seq))

        async def latest(at: int | None = None) -> int | None:
            snapshot = await store.latest_snapshot("notes", at_or_before_seq=at)
            return snapshot.seq if snapshot else None

        assert await latest() == 6
        assert await latest(9) == 6
        assert await latest(6) == 6
        assert await latest(5) == 3
        assert await latest(3) == 3
        assert await latest(2) is None
        assert await store.latest_snapshot("notes", at_or_before_seq=4) == SnapshotRecord(
            "notes", 3, b"s3", 3
        )
        assert await store.latest_snapshot("other") is None

    async def test_saving_a_snapshot_that_exists_is_a_no_op(self, store: Store):
        await store.append(records("notes", 1, 4))
        await store.save_snapshot(SnapshotRecord("notes", 4, b"first", 1.0))
        written = store.stats.snapshots_written

        await store.save_snapshot(SnapshotRecord("notes", 4, b"second", 2.0))

        assert await store.latest_snapshot("notes") == SnapshotRecord("notes", 4, b"first", 1.0)
        assert store.stats.snapshots_written == written

    async def test_load_reads_the_latest_snapshot_and_only_the_updates_after_it(self, store: Store):
        await store.load("notes")
        await store.append(records("notes", 1, 10))
        await store.save_snapshot(SnapshotRecord("notes", 4, b"old", 1.0))
        await store.save_snapshot(SnapshotRecord("notes", 7, b"new", 2.0))
        rows_before = store.stats.log_rows_read

        loaded = await store.load("notes")

        assert loaded.snapshot == SnapshotRecord("notes", 7, b"new", 2.0)
        assert loaded.updates == tuple(records("notes", 8, 10))
        assert loaded.head_seq == 10
        assert store.stats.log_rows_read - rows_before == 3

    async def test_a_snapshot_at_the_head_leaves_no_updates_to_load(self, store: Store):
        await store.append(records("notes", 1, 5))
        await store.save_snapshot(SnapshotRecord("notes", 5, b"all", 1.0))
        rows_before = store.stats.log_rows_read

        loaded = await store.load("notes")

        assert loaded.updates == ()
        assert loaded.head_seq == 5
        assert store.stats.log_rows_read == rows_before

    async def test_snapshots_never_drop_updates_from_the_log(self, store: Store):
        await store.append(records("notes", 1, 6))
        await store.save_snapshot(SnapshotRecord("notes", 6, b"all", 1.0))

        assert await store.read_updates("notes") == records("notes", 1, 6)

    async def test_stats_count_appended_rows_and_batches(self, store: Store):
        rows, batches = store.stats.log_rows_written, store.stats.append_batches

        await store.append(records("a", 1, 3) + records("b", 1, 2))
        await store.append(records("a", 4, 4))

        assert store.stats.log_rows_written - rows == 6
        assert store.stats.append_batches - batches == 2

    # -- repairs ----------------------------------------------------------------------------

    async def test_snapshot_seqs_lists_a_documents_snapshots_oldest_first(self, store: Store):
        await store.append(records("notes", 1, 9))
        for seq in (6, 3, 9):
            await store.save_snapshot(SnapshotRecord("notes", seq, b"s", 1.0))

        assert await store.snapshot_seqs("notes") == [3, 6, 9]
        assert await store.snapshot_seqs("other") == []

    async def test_a_repair_replaces_entries_in_place_and_quarantines_the_originals(
        self, store: Store
    ):
        epoch = (await store.load("notes")).epoch
        await store.append(records("notes", 1, 5))
        for seq in (2, 4):
            await store.save_snapshot(SnapshotRecord("notes", seq, f"s{seq}".encode(), 1.0))

        new_epoch = await store.repair(
            "notes",
            {3: Repair(b"kept", "stray bytes"), 5: Repair(b"\x00\x00", "too deep")},
            {4: "built over update 3"},
        )

        assert new_epoch != epoch
        assert (await store.get_document("notes")).epoch == new_epoch
        assert (await store.load("notes")).epoch == new_epoch
        log = await store.read_updates("notes")
        assert seqs(log) == [1, 2, 3, 4, 5]
        assert [u.data for u in log] == [b"notes:1", b"notes:2", b"kept", b"notes:4", b"\x00\x00"]
        assert await store.snapshot_seqs("notes") == [2]
        quarantined = await store.quarantined("notes")
        assert [(q.kind, q.seq, q.data, q.reason) for q in quarantined] == [
            ("update", 3, b"notes:3", "stray bytes"),
            ("update", 5, b"notes:5", "too deep"),
            ("snapshot", 4, b"s4", "built over update 3"),
        ]
        assert await store.quarantined("other") == []

    # -- bytes ------------------------------------------------------------------------------

    async def test_update_and_snapshot_bytes_round_trip_exactly(self, store: Store):
        blobs = [
            b"\x00",
            b"\x00\x00",
            b"\x00\x00\x00\xff",
            bytes(range(256)),
            "é😀".encode() + b"\x80\xfe",  # not valid UTF-8 as a whole
            random.Random(7).randbytes(1024 * 1024),
        ]
        await store.append([record("notes", i + 1, blob) for i, blob in enumerate(blobs)])
        for i, blob in enumerate(blobs):
            await store.save_snapshot(SnapshotRecord("notes", i + 1, blob, 1.0))

        stored = await store.read_updates("notes")
        assert [u.data for u in stored] == blobs
        assert all(type(u.data) is bytes for u in stored)
        for i, blob in enumerate(blobs):
            snapshot = await store.latest_snapshot("notes", at_or_before_seq=i + 1)
            assert type(snapshot.data) is bytes
            assert snapshot.data == blob

    # -- lifecycle --------------------------------------------------------------------------

    async def test_close_can_be_called_twice(self, store: Store):
        await store.load("notes")

        await store.close()
        await store.close()
