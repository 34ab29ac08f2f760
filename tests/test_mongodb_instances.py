"""Instances on MongoDB when the change stream cannot go on: an instance that fell
behind the oplog (paused while others wrote) follows from the end again and its
live rooms read what they missed from the log, in seq order, nothing twice; a
restarted instance follows on from its saved position."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from collab.store.mongodb import MongoStore
from tests.helpers import SeqWatcher, appends, wait_until
from tests.mongodb import MongoServer, collect_cancelled_connects, start_secantus
from tests.processes import ServerProcess, server_process

DOC = "team"
pytestmark = pytest.mark.slow


SMALL_OPLOG = ("--oplog-max-entries", "50", "--sync-on-commit")


@contextlib.asynccontextmanager
async def small_oplog(tmp_path: Path) -> AsyncIterator[MongoServer]:
    """A server that keeps 50 oplog entries (pruned every 1,000 writes) and what
    it acknowledged across a kill."""
    server = start_secantus(*SMALL_OPLOG, storage=tmp_path / "mongo")
    try:
        yield server
    finally:
        server.stop()


async def push_the_oplog_past(server: MongoServer) -> None:
    """Enough writes elsewhere for the server to prune its oplog."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(server.base_url)
    try:  # one command: SecantusDB writes an oplog entry per document all the same
        await client.scratch.filler.insert_many([{"i": i} for i in range(1100)])
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def instance(url: str, name: str) -> AsyncIterator[ServerProcess]:
    async with server_process(url, "--instance-id", name) as server:
        yield server


async def test_an_instance_behind_the_oplog_reads_what_it_missed_from_the_log(tmp_path: Path):
    mongo = start_secantus(*SMALL_OPLOG, storage=tmp_path / "mongo")
    servers = [mongo]
    try:
        url = mongo.url("collab")
        updates = appends(1, 60)
        async with instance(url, "a") as a, instance(url, "b") as b:
            writer = await SeqWatcher.join(a.port, "writer", DOC)
            reader = await SeqWatcher.join(b.port, "reader", DOC)
            try:
                for ref in range(10):
                    writer.send(ref, updates[ref])
                await reader.wait_for(lambda: reader.seqs[-1] == 10)

                b.process.send_signal(signal.SIGSTOP)  # b falls behind
                try:
                    for ref in range(10, 60):
                        writer.send(ref, updates[ref])
                    await writer.wait_for(lambda: len(writer.acks) == 60)
                    await push_the_oplog_past(mongo)
                    # b's change stream must resume from its token, which the oplog
                    # no longer reaches. (mongod ends an open stream that falls
                    # behind too; SecantusDB's passes over the gap: docs/MONGODB.md.)
                    mongo.kill()
                    servers.append(
                        start_secantus(*SMALL_OPLOG, storage=mongo.storage_path, port=mongo.port)
                    )
                finally:
                    b.process.send_signal(signal.SIGCONT)

                await reader.wait_for(lambda: reader.seqs[-1] == 60, timeout_s=20)
                assert reader.seqs == list(range(0, 61))
                assert reader.text() == writer.text()
                await wait_until(lambda: "cannot continue from its position" in b.log_text())
            finally:
                await writer.close()
                await reader.close()
    finally:
        for server in servers:
            server.stop()
        collect_cancelled_connects()


async def test_a_restarted_instance_follows_on_from_its_saved_position(tmp_path: Path):
    async with small_oplog(tmp_path) as mongo:
        url = mongo.url("collab")
        async with instance(url, "a") as a:
            async with instance(url, "b") as b:
                writer = await SeqWatcher.join(a.port, "writer", DOC)
                reader = await SeqWatcher.join(b.port, "reader", DOC)
                writer.send(0, appends(2, 1)[0])
                await reader.wait_for(lambda: reader.seqs[-1] == 1)
                await reader.close()
                store = MongoStore(url)
                await store.open()
                try:  # b saves its position at most once a second: the first at once
                    for _ in range(200):  # 10 s at most
                        if await store.saved_feed_position("b") is not None:
                            break
                        await asyncio.sleep(0.05)
                    else:
                        raise AssertionError("b saved no feed position")
                finally:
                    await store.close()
            await writer.close()

            async with instance(url, "b") as again:
                reader = await SeqWatcher.join(again.port, "reader", DOC)
                writer = await SeqWatcher.join(a.port, "writer", DOC)
                try:
                    writer.send(1, appends(3, 1)[0])
                    await reader.wait_for(lambda: reader.seqs[-1] == 2)
                finally:
                    await reader.close()
                    await writer.close()
                assert "cannot continue from its position" not in again.log_text()
    collect_cancelled_connects()
