"""``collab check``: finds the entries that earlier servers stored although they
cannot be read (findings 3 and 4 of the hardening issue), and ``--repair`` sets
them aside so that the document loads, snapshots and syncs again."""

from __future__ import annotations

from pathlib import Path

import pycrdt

from collab.core.history import state_at
from collab.store import NewUpdate, SnapshotRecord
from collab.store.sqlite import SQLiteStore
from collab.wire.yformat import check_update
from tests.cli import collab_in_process, collab_process
from tests.helpers import text_of

DOC = "poisoned"


def edit(text: str, client_id: int) -> bytes:
    doc = pycrdt.Doc(client_id=client_id)
    doc.get("text", type=pycrdt.Text).insert(0, text)
    return doc.get_update()


def deep_value(depth: int) -> bytes:
    item = b"\x28\x01\x03map\x04deep\x01"
    return b"\x01\x01\x05\x00" + item + b"\x75\x01" * depth + b"\x7e" + b"\x00"


async def poisoned_store(path: Path) -> SQLiteStore:
    """A store as a server before the strict reader could leave it: an update with
    stray bytes after it, one nested 10,000 levels deep, good ones around them, and
    a snapshot written over the bad ones."""
    store = SQLiteStore(path)
    await store.open()
    await store.load(DOC)
    entries = [
        edit("one ", 1),
        edit("two ", 2) + b"\x00\x07",  # finding 4: trailing bytes
        deep_value(10_000),  # finding 3: Yjs cannot read it
        edit("three", 3),
    ]
    await store.append([NewUpdate(DOC, data, 1.0) for data in entries])
    await store.save_snapshot(SnapshotRecord(DOC, 1, entries[0], 1.0))
    await store.save_snapshot(SnapshotRecord(DOC, 4, b"\x00" + entries[3], 1.0))
    await store.append([NewUpdate("clean", edit("fine", 9), 1.0)])
    return store


async def collab(*args: str, process: bool = False) -> tuple[int, str]:
    """``collab ARGS``, in-process or as ``python -m collab`` in a process (tests/cli.py):
    the exit status and what it printed, stdout and stderr together."""
    run = collab_process if process else collab_in_process
    code, out, _ = await run(*args, merge_stderr=True)
    return code, out


async def test_check_reports_unreadable_entries_and_exits_1(tmp_path: Path):
    store = await poisoned_store(tmp_path / "old.db")
    await store.close()

    code, out = await collab("check", "--store-url", f"sqlite:///{tmp_path}/old.db", process=True)

    assert code == 1, out
    assert "ok      clean (1 updates, 0 snapshots)" in out
    assert f"BROKEN  {DOC} (4 updates, 2 snapshots)" in out
    assert "update 2: the update is not a valid Yjs v1 update: trailing bytes" in out
    assert "update 3: the update is not a valid Yjs v1 update: value nests deeper" in out
    assert "snapshot 4:" in out
    assert "checked 2 documents: 1 broken, 3 entries found" in out


async def test_repair_sets_entries_aside_keeps_what_is_readable_and_gives_a_new_epoch(
    tmp_path: Path,
):
    path = tmp_path / "old.db"
    store = await poisoned_store(path)
    epoch = (await store.get_document(DOC)).epoch
    await store.close()

    code, out = await collab("check", "--repair", "--store-url", f"sqlite:///{path}")

    assert code == 0, out
    assert "set aside, new epoch" in out
    code, out = await collab("check", "--store-url", f"sqlite:///{path}")
    assert code == 0, out
    assert f"ok      {DOC} (4 updates, 1 snapshots)" in out

    store = SQLiteStore(path)
    await store.open()
    try:
        assert (await store.get_document(DOC)).epoch != epoch
        log = await store.read_updates(DOC)
        assert [u.seq for u in log] == [1, 2, 3, 4]  # gap-free still
        for record in log:
            check_update(record.data)
        assert log[1].data == edit("two ", 2)  # the stray bytes are gone, the edit kept
        assert log[2].data == b"\x00\x00"
        quarantined = await store.quarantined(DOC)
        assert [(q.kind, q.seq) for q in quarantined] == [
            ("update", 2),
            ("update", 3),
            ("snapshot", 4),
        ]
        assert quarantined[1].data == deep_value(10_000)
        assert await store.snapshot_seqs(DOC) == [1]
        _, state = await state_at(store, DOC)
        assert sorted(text_of(state).split()) == ["one", "three", "two"]
    finally:
        await store.close()


async def test_a_clean_store_checks_clean(tmp_path: Path):
    store = SQLiteStore(tmp_path / "clean.db")
    await store.open()
    await store.append([NewUpdate("a", edit("x", 1), 1.0)])
    await store.close()

    code, out = await collab("check", "--quiet", "--store-url", f"sqlite:///{tmp_path}/clean.db")

    assert code == 0
    assert out.strip() == "checked 1 documents: 0 broken, 0 entries found"
