"""Several ``collab serve`` processes on one SQLite file, each with a native and a
y-websocket client: concurrent edits converge, the log holds every update once
with gap-free seqs, each peer sees seqs in increasing order, awareness crosses
both ways and leaves with its owner; a process SIGKILLed mid-stream loses nothing
acknowledged while the other keeps serving; a process started later loads the
document while the others write and ends identical."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pycrdt
import pytest

from tests.helpers import SeqWatcher
from tests.processes import ServerProcess, server_process
from tests.yjs_peer import YjsPeer

DOC = "team"
pytestmark = pytest.mark.slow


def appends(client_id: int, count: int, start: int = 0) -> list[bytes]:
    """``count`` appends by one Yjs client, each after its previous one; the text
    of append i is ``<client.i>``."""
    doc = pycrdt.Doc(client_id=client_id)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    text = doc.get("text", type=pycrdt.Text)
    for i in range(start + count):
        text.insert(len(str(text)), f"<{client_id}.{i}>")
    return updates[start:]


def stored_log(path: Path) -> list[tuple[int, bytes, str]]:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = connection.execute(
            "SELECT seq, data, origin_instance FROM updates WHERE doc = ? ORDER BY seq", (DOC,)
        ).fetchall()
    finally:
        connection.close()
    return [(seq, bytes(data), instance) for seq, data, instance in rows]


def text_of_log(log: list[tuple[int, bytes, str]]) -> str:
    doc = pycrdt.Doc()
    for _, data, _ in log:
        doc.apply_update(data)
    return str(doc.get("text", type=pycrdt.Text))


def increasing(seqs: list[int]) -> bool:
    return all(b > a for a, b in itertools.pairwise(seqs))


@contextlib.asynccontextmanager
async def instance(path: Path, name: str) -> AsyncIterator[ServerProcess]:
    async with server_process(f"sqlite:///{path}", "--instance-id", name) as server:
        yield server


async def yjs_peer(server: ServerProcess) -> YjsPeer:
    peer = YjsPeer(f"{server.ws_url}/yjs/{DOC}")
    await peer.reconnect()
    await peer.synced()
    return peer


def yjs_text(peer: YjsPeer) -> str:
    return str(peer.doc.get("text", type=pycrdt.Text))


async def test_two_processes_on_one_file_converge_in_seq_order_with_awareness_both_ways(
    tmp_path: Path,
):
    path = tmp_path / "shared.db"
    async with instance(path, "one") as one, instance(path, "two") as two:
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

            log = stored_log(path)
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


async def test_a_process_killed_mid_stream_loses_nothing_acknowledged(tmp_path: Path):
    path = tmp_path / "shared.db"
    victim_updates = appends(1, 400)
    survivor_updates = appends(2, 100)
    async with instance(path, "survivor") as survivor:
        steady = await SeqWatcher.join(survivor.port, "steady", DOC)
        try:
            async with instance(path, "victim") as victim:
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

            async with instance(path, "victim") as restarted:
                late = await SeqWatcher.join(restarted.port, "late", DOC)
                content = late.text()
                await late.close()
        finally:
            await steady.close()

    log = stored_log(path)
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
    tmp_path: Path,
):
    path = tmp_path / "shared.db"
    async with instance(path, "one") as one, instance(path, "two") as two:
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
            async with instance(path, "three") as three:
                late = await SeqWatcher.join(three.port, "late", DOC)
                await writing
                await late.wait_for(lambda: late.seqs[-1] == 600, timeout_s=20)
                assert increasing(late.seqs)
                assert late.seqs[1:] == list(range(late.seqs[0] + 1, 601))
                await late.close()
            for watcher in writers:
                await watcher.wait_for(lambda w=watcher: w.seqs[-1] == 600)
            assert late.text() == writers[0].text() == writers[1].text()
            assert late.text() == text_of_log(stored_log(path))
        finally:
            for watcher in writers:
                await watcher.close()


async def test_the_cursors_of_a_killed_process_disappear_from_the_other_within_the_ttl(
    tmp_path: Path,
):
    path = tmp_path / "shared.db"
    ttl = ("--awareness-ttl-s", "2", "--awareness-refresh-s", "0.5")
    async with server_process(f"sqlite:///{path}", "--instance-id", "stays", *ttl) as stays:
        watcher = await yjs_peer(stays)
        try:
            async with server_process(f"sqlite:///{path}", "--instance-id", "dies", *ttl) as dies:
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
            assert asyncio.get_running_loop().time() - killed < 2 + 1.5
        finally:
            await watcher.disconnect()
