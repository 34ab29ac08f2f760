"""An instance alone on its SQLite file polls it for other instances' commits and
presence about once a second, not 50 times; a second instance that opens the file
is noticed at once, and what a command wrote to the file and exited before anyone
noticed it still arrives, at the slow poll."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from collab.config import Settings
from collab.store import Author, NewUpdate
from collab.store.sqlite import SQLiteStore
from collab.store.sqlite import base as sqlite_base
from tests.helpers import SeqWatcher, appends, wait_until

DOC = "notes"
AUDIT_S = 600.0  # the feed audit, which would find the update too, never runs


async def feed_reads_during(store: SQLiteStore, seconds: float) -> int:
    """How many reads the store's feed thread runs in ``seconds``."""
    reads = 0
    run = store._run

    async def counting(executor, fn):  # type: ignore[no-untyped-def]
        nonlocal reads
        if executor is store._feeder:
            reads += 1
        return await run(executor, fn)

    store._run = counting  # type: ignore[method-assign]
    try:
        await asyncio.sleep(seconds)
    finally:
        del store._run
    return reads


async def another_instance_writes(path: Path, *, close_at_once: bool) -> SQLiteStore:
    """Open the file as another instance would and append an update of ``DOC``."""
    other = SQLiteStore(path)
    await other.open()
    (update,) = appends(7, 1)
    await other.append([NewUpdate(DOC, update, time.time(), Author("bot", "bot", "other"))])
    if close_at_once:
        await other.close()
    return other


async def test_alone_on_the_file_the_feed_is_polled_about_once_a_second(
    start_server, settings: Settings, tmp_path: Path
):
    server = await start_server(settings.replace(store_url=f"sqlite:///{tmp_path}/one.db"))
    watcher = await SeqWatcher.join(server.port, "a", DOC)
    try:
        reads = await feed_reads_during(server.store, 1.0)
        # The commits' and the presence feed, each at most every ALONE_POLL_S: two
        # reads each in a second at most, the bound half as much again (at
        # feed_poll_s, 0.02 s, it would be 100).
        assert reads <= 6, reads
    finally:
        await watcher.close()


async def test_a_second_instance_opening_the_file_is_noticed_at_once(
    start_server, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # Only noticing the other instance can bring its update in time.
    monkeypatch.setattr(sqlite_base, "ALONE_POLL_S", 600.0)
    path = tmp_path / "shared.db"
    server = await start_server(
        settings.replace(store_url=f"sqlite:///{path}", feed_audit_s=AUDIT_S)
    )
    watcher = await SeqWatcher.join(server.port, "a", DOC)
    other = None
    try:
        await asyncio.sleep(0.3)  # the server has found itself alone
        other = await another_instance_writes(path, close_at_once=False)
        await wait_until(lambda: watcher.seqs[-1] == 1, timeout_s=10)
    finally:
        await watcher.close()
        if other is not None:
            await other.close()


async def test_what_a_command_wrote_and_exited_with_arrives_at_the_slow_poll(
    start_server, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # It is never noticed: it is gone before the server looks.
    monkeypatch.setattr(sqlite_base, "ALONE_CHECK_S", 600.0)
    monkeypatch.setattr(sqlite_base, "ALONE_POLL_S", 0.5)
    path = tmp_path / "shared.db"
    server = await start_server(
        settings.replace(store_url=f"sqlite:///{path}", feed_audit_s=AUDIT_S)
    )
    watcher = await SeqWatcher.join(server.port, "a", DOC)
    try:
        await asyncio.sleep(0.3)
        await another_instance_writes(path, close_at_once=True)
        await wait_until(lambda: watcher.seqs[-1] == 1, timeout_s=10)
    finally:
        await watcher.close()
