"""Several ``collab serve`` processes on one store (a SQLite file, a MongoDB
database), each with a native and a y-websocket client: concurrent edits
converge, the log holds every update once with gap-free seqs, each peer sees seqs
in increasing order, awareness crosses both ways and leaves with its owner; a
process SIGKILLed mid-stream loses nothing acknowledged while the other keeps
serving; a process started later loads the document while the others write and
ends identical."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pycrdt
import pytest
from pymongo import AsyncMongoClient

from tests.helpers import SeqWatcher, appends
from tests.processes import ServerProcess, server_process
from tests.yjs_peer import YjsPeer

DOC = "team"
pytestmark = pytest.mark.slow


@dataclass
class SharedStore:
    """The store the processes share, and a way to read its log from outside."""

    url: str
    read_log: Callable[[], Awaitable[list[tuple[int, bytes, str]]]]


def sqlite_log(path: Path) -> list[tuple[int, bytes, str]]:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = connection.execute(
            "SELECT seq, data, origin_instance FROM updates WHERE doc = ? ORDER BY seq", (DOC,)
        ).fetchall()
    finally:
        connection.close()
    return [(seq, bytes(data), instance) for seq, data, instance in rows]


async def mongodb_log(url: str) -> list[tuple[int, bytes, str]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    try:
        rows = (
            await client.get_default_database()
            .updates.find({"doc": DOC}, sort=[("seq", 1)])
            .to_list()
        )
    finally:
        await client.close()
    # One MongoDB document per appended batch (collab/store/mongodb/log.py).
    return [
        (seq, update["data"], update["instance"])
        for row in rows
        for seq, update in enumerate(row["updates"], row["seq"])
    ]


@pytest.fixture(params=["sqlite", "mongodb"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> SharedStore:
    if request.param == "sqlite":
        path = tmp_path / "shared.db"
        return SharedStore(f"sqlite:///{path}", lambda: asyncio.to_thread(sqlite_log, path))
    url = request.getfixturevalue("mongodb_url")
    return SharedStore(url, lambda: mongodb_log(url))


def text_of_log(log: list[tuple[int, bytes, str]]) -> str:
    doc = pycrdt.Doc()
    for _, data, _ in log:
        doc.apply_update(data)
    return str(doc.get("text", type=pycrdt.Text))


def increasing(seqs: list[int]) -> bool:
    return all(b > a for a, b in itertools.pairwise(seqs))


@contextlib.asynccontextmanager
async def instance(shared: SharedStore, name: str, *args: str) -> AsyncIterator[ServerProcess]:
    async with server_process(shared.url, "--instance-id", name, *args) as server:
        yield server


async def yjs_peer(server: ServerProcess) -> YjsPeer:
    peer = YjsPeer(f"{server.ws_url}/yjs/{DOC}")
    await peer.reconnect()
    await peer.synced()
    return peer


def yjs_text(peer: YjsPeer) -> str:
    return str(peer.doc.get("text", type=pycrdt.Text))


async def test_two_processes_on_one_store_converge_in_seq_order_with_awareness_both_ways(
    shared: SharedStore,
):
    async with instance(shared, "one") as one, instance(shared, "two") as two:
        native = [
            await SeqWatcher.join(one.port, "n1", DOC),
            await SeqWatcher.join(two.port, "n2", DOC),
        ]
        yjs = [await yjs_peer(one), await yjs_peer(two)]
        try:
            batches = [appends(1, 60), appends(2, 60)]
            for i in range(60):  # both instances at once, nobody waiting for acks
                native[0].send(i, batches[0][i])
                native[1].send(i, batches[1][i])
                if i % 3 == 0:
                    for number, peer in enumerate(yjs, 3):
                        text = peer.doc.get("text", type=pycrdt.Text)
                        text.insert(0, f"<{number}.{i // 3}>")
            await asyncio.gather(*(w.wait_for(lambda w=w: len(w.acks) == 60) for w in native))
            for peer in yjs:
                await peer.synced()
            total = 120 + 2 * 20
            for watcher in native:
                await watcher.wait_for(lambda w=watcher: w.seqs[-1] == total, timeout_s=20)
            for peer in yjs:
                await peer.wait_for(lambda p=peer: yjs_text(p).count("<") == total, timeout_s=20)

            log = await shared.read_log()
            assert [seq for seq, _, _ in log] == list(range(1, total + 1))
            assert {instance for _, _, instance in log} == {"one", "two"}
            content = text_of_log(log)
            for client, count in ((1, 60), (2, 60), (3, 20), (4, 20)):
                for i in range(count):
                    assert content.count(f"<{client}.{i}>") == 1
            assert {w.text() for w in native} | {yjs_text(p) for p in yjs} == {content}
            for watcher in native:
                assert increasing(watcher.seqs), watcher.seqs
                assert watcher.seqs[1:] == list(range(watcher.seqs[0] + 1, total + 1))

            # Awareness, both ways, and gone when its owner leaves.
            yjs[0].awareness.set_local_state({"user": "ann"})
            yjs[1].awareness.set_local_state({"user": "bob"})
            await yjs[1].wait_for(lambda: {"user": "ann"} in yjs[1].awareness.states.values())
            await yjs[0].wait_for(lambda: {"user": "bob"} in yjs[0].awareness.states.values())
            await yjs[0].disconnect()
            await yjs[1].wait_for(lambda: {"user": "ann"} not in yjs[1].awareness.states.values())
        finally:
            for watcher in native:
                await watcher.close()
            for peer in yjs:
                await peer.disconnect()


async def test_a_process_killed_mid_stream_loses_nothing_acknowledged(shared: SharedStore):
    victim_updates = appends(1, 400)
    survivor_updates = appends(2, 100)
    async with instance(shared, "survivor") as survivor:
        steady = await SeqWatcher.join(survivor.port, "steady", DOC)
        try:
            async with instance(shared, "victim") as victim:
                doomed = await SeqWatcher.join(victim.port, "doomed", DOC)
                for ref, update in enumerate(victim_updates):
                    doomed.send(ref, update)
                for ref in range(50):  # the other process writes meanwhile
                    steady.send(ref, survivor_updates[ref])
                await doomed.wait_for(lambda: len(doomed.acks) >= 150)
                victim.process.send_signal(signal.SIGKILL)
                await victim.process.wait()
                acked = set(doomed.acks)
                await doomed.close()

            # The survivor kept serving while the other process was dead.
            for ref in range(50, 100):
                steady.send(ref, survivor_updates[ref])
            await steady.wait_for(lambda: len(steady.acks) == 100)

            async with instance(shared, "victim") as restarted:
                late = await SeqWatcher.join(restarted.port, "late", DOC)
                content = late.text()
                await late.close()
        finally:
            await steady.close()

    log = await shared.read_log()
    seqs = [seq for seq, _, _ in log]
    assert seqs == list(range(1, len(log) + 1))
    stored = text_of_log(log)
    assert stored == content
    for ref in acked:
        assert stored.count(f"<1.{ref}>") == 1, f"acknowledged update {ref} lost or doubled"
    for ref in range(100):
        assert stored.count(f"<2.{ref}>") == 1
    # One client's appends chain: what survived of them is a prefix.
    survived = [i for i in range(400) if f"<1.{i}>" in stored]
    assert survived == list(range(len(survived)))


async def test_a_process_started_later_loads_while_others_write_and_ends_identical(
    shared: SharedStore,
):
    async with instance(shared, "one") as one, instance(shared, "two") as two:
        writers = [
            await SeqWatcher.join(one.port, "w1", DOC),
            await SeqWatcher.join(two.port, "w2", DOC),
        ]
        streams = [appends(1, 300), appends(2, 300)]
        try:

            async def write(watcher: SeqWatcher, updates: list[bytes]) -> None:
                for ref, update in enumerate(updates):
                    watcher.send(ref, update)
                    if ref % 10 == 9:
                        await watcher.wait_for(lambda ref=ref: ref in watcher.acks)

            writing = asyncio.gather(*(write(w, u) for w, u in zip(writers, streams, strict=True)))
            await writers[0].wait_for(lambda: len(writers[0].acks) >= 60)
            async with instance(shared, "three") as three:
                late = await SeqWatcher.join(three.port, "late", DOC)
                await writing
                await late.wait_for(lambda: late.seqs[-1] == 600, timeout_s=20)
                assert increasing(late.seqs)
                assert late.seqs[1:] == list(range(late.seqs[0] + 1, 601))
                await late.close()
            for watcher in writers:
                await watcher.wait_for(lambda w=watcher: w.seqs[-1] == 600)
            assert late.text() == writers[0].text() == writers[1].text()
            assert late.text() == text_of_log(await shared.read_log())
        finally:
            for watcher in writers:
                await watcher.close()


async def test_the_cursors_of_a_killed_process_disappear_from_the_other_within_the_ttl(
    shared: SharedStore,
):
    ttl_s = 1.0  # renewed every quarter of it while its process lives
    ttl = ("--awareness-ttl-s", str(ttl_s), "--awareness-refresh-s", str(ttl_s / 4))
    async with instance(shared, "stays", *ttl) as stays:
        watcher = await yjs_peer(stays)
        try:
            async with instance(shared, "dies", *ttl) as dies:
                doomed = await yjs_peer(dies)
                doomed.awareness.set_local_state({"user": "ann"})
                await watcher.wait_for(lambda: {"user": "ann"} in watcher.awareness.states.values())
                dies.process.send_signal(signal.SIGKILL)  # no goodbye, no removal
                await dies.process.wait()
                killed = asyncio.get_running_loop().time()
                await doomed.closed()

            await watcher.wait_for(
                lambda: {"user": "ann"} not in watcher.awareness.states.values(), timeout_s=10
            )
            assert asyncio.get_running_loop().time() - killed < ttl_s + 1.5
        finally:
            await watcher.disconnect()
