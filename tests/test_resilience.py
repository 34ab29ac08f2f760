"""Staying connected: clients that ride out cuts, stalls and server restarts with
every edit stored once; resume by seq; epoch resets without duplicated text; a
sync in parts; an offline queue that survives the client process.

Clients connect through tests/proxy.py, a TCP proxy that cuts and stalls."""

from __future__ import annotations

import asyncio
import random
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pycrdt
import pytest

from collab.client import ClientState, CollabClient, RemoteDocument
from collab.errors import CloseCode
from collab.store.sqlite import SQLiteStore
from collab.wire.yformat import check_update
from tests.helpers import wait_until
from tests.processes import server_process
from tests.proxy import Proxy

pytestmark = pytest.mark.slow

FAST = {"backoff_min_s": 0.02, "backoff_max_s": 0.3, "heartbeat_s": 0.5, "heartbeat_timeout_s": 1.0}


@pytest.fixture
def proxy(io_loop, server) -> Iterator[Proxy]:
    proxy = io_loop.run_sync(Proxy(server.port).start)
    yield proxy
    io_loop.run_sync(proxy.close)


@pytest.fixture
def clients(io_loop) -> Any:
    """``await clients.open(url, **options)``: CollabClients closed after the test."""

    class Clients:
        def __init__(self) -> None:
            self.opened: list[CollabClient] = []

        async def open(self, url: str, **options: Any) -> CollabClient:
            client = await CollabClient.connect(url, **{**FAST, **options})
            self.opened.append(client)
            return client

    opened = Clients()
    yield opened
    for client in opened.opened:
        io_loop.run_sync(client.close)


def text(remote: RemoteDocument) -> str:
    return str(remote.doc.get("text", type=pycrdt.Text))


async def stored_log(path: Path, doc: str) -> list[bytes]:
    store = SQLiteStore(path)
    await store.open()
    try:
        return [r.data for r in await store.read_updates(doc)]
    finally:
        await store.close()


def assert_no_struct_stored_twice(log: list[bytes]) -> None:
    """Every struct (client, clock) is in at most one log entry."""
    seen: dict[int, list[tuple[int, int]]] = {}
    for update in log:
        for client, start, end in check_update(update).structs:
            for other_start, other_end in seen.get(client, []):
                assert end <= other_start or start >= other_end, f"client {client} stored twice"
            seen.setdefault(client, []).append((start, end))


def text_of_log(log: list[bytes]) -> str:
    doc = pycrdt.Doc()
    for update in log:
        doc.apply_update(update)
    return str(doc.get("text", type=pycrdt.Text))


async def test_two_clients_converge_through_20_random_cuts_with_every_edit_stored_once(
    server, settings, proxy: Proxy, clients
):
    url = f"{proxy.url}/ws"
    a, b = await clients.open(url), await clients.open(url)
    ra, rb = await a.subscribe("cuts"), await b.subscribe("cuts")
    rng = random.Random(20)

    # Typing and cutting at random moments of real time: cuts land mid-stream.
    async def type_into(remote: RemoteDocument, name: str) -> None:
        for i in range(150):
            items = remote.doc.get("items", type=pycrdt.Array)
            items.insert(rng.randrange(len(items) + 1), f"{name}{i}")
            await asyncio.sleep(rng.uniform(0, 0.01))

    async def cut_20_times() -> None:
        for _ in range(20):
            await asyncio.sleep(rng.uniform(0.02, 0.12))
            proxy.cut()

    def items(remote: RemoteDocument) -> list[str]:
        return list(remote.doc.get("items", type=pycrdt.Array).to_py())

    await asyncio.gather(type_into(ra, "a"), type_into(rb, "b"), cut_20_times())
    await ra.flushed(timeout_s=30)
    await rb.flushed(timeout_s=30)
    await ra.wait_for(lambda: items(ra) == items(rb), timeout_s=30)

    assert proxy.cuts == 20 and a.connections > 10 and b.connections > 10
    log = await stored_log(Path(settings.store_url.removeprefix("sqlite:///")), "cuts")
    assert_no_struct_stored_twice(log)
    stored = pycrdt.Doc()
    for update in log:
        stored.apply_update(update)
    stored_items = list(stored.get("items", type=pycrdt.Array).to_py())
    assert stored_items == items(ra) == items(rb)
    assert sorted(stored_items) == sorted(f"{n}{i}" for n in "ab" for i in range(150))


async def test_edits_made_offline_are_merged_into_one_pending_update(server, proxy: Proxy, clients):
    a = await clients.open(f"{proxy.url}/ws")
    ra = await a.subscribe("offline")
    proxy.refuse()
    proxy.cut()
    await wait_until(lambda: a.state is ClientState.OFFLINE)
    body = ra.doc.get("text", type=pycrdt.Text)
    for i in range(500):  # keystrokes: no exception, one queued update
        body.insert(len(body), str(i % 10))
    assert ra.queued == 1 and ra.pending is not None and not ra.unacked

    proxy.accept()
    await ra.flushed(timeout_s=10)
    assert a.state is ClientState.ONLINE and ra.queued == 0
    reader = await clients.open(f"ws://127.0.0.1:{server.port}/ws")
    rr = await reader.subscribe("offline")
    assert text(rr) == "".join(str(i % 10) for i in range(500))


async def test_a_resume_after_a_short_outage_gets_log_records_after_a_long_one_the_diff(
    settings, start_server, clients
):
    # A ring of 50 records and a resume from the log of at most 100 (defaults: 500
    # and 1000), so that a long outage is 150 edits, not 1500.
    server = await start_server(settings.replace(resume_ring_updates=50, resume_max_updates=100))
    proxy = await Proxy(server.port).start()
    writer = await clients.open(f"ws://127.0.0.1:{server.port}/ws")
    w = await writer.subscribe("resume")
    body = w.doc.get("text", type=pycrdt.Text)
    body.insert(0, "x" * 200_000)
    with w.doc.transaction():  # a document that was edited: many deletions (one update)
        for start in range(0, 100_000, 10):
            del body[start // 2 : start // 2 + 5]
    await w.flushed(timeout_s=30)
    reader = await clients.open(f"{proxy.url}/ws")
    r = await reader.subscribe("resume")
    assert r.sync_mode == "diff" and r.sync_update_bytes > 100_000

    async def outage(edits: int) -> None:
        proxy.refuse()
        proxy.cut()
        await wait_until(lambda: reader.state is ClientState.OFFLINE)
        body = w.doc.get("text", type=pycrdt.Text)
        for i in range(edits):
            body.insert(i % 1000, "y")
        await w.flushed(timeout_s=30)
        proxy.accept()
        await r.wait_for(lambda: r.synced and r.seq == w.seq, timeout_s=30)

    await outage(3)
    assert r.sync_mode == "log"
    assert r.sync_update_bytes < 200  # three records; the diff has every deletion of it
    assert text(r) == text(w)

    await outage(150)  # more than resume_max_updates and than the ring holds
    assert r.sync_mode == "diff"
    assert text(r) == text(w)
    await proxy.close()


async def test_a_document_recreated_under_a_new_epoch_resets_the_client_without_duplicates(
    tmp_path: Path, settings, start_server, clients
):
    first = await start_server(settings.replace(store_url=f"sqlite:///{tmp_path}/first.db"))
    port = first.port
    network = await Proxy(port).start()  # held down until the document is back
    a = await clients.open(f"{network.url}/ws")
    ra = await a.subscribe("notes")
    ra.doc.get("text", type=pycrdt.Text).insert(0, "hello")
    await ra.flushed()
    old_epoch = ra.epoch
    resets: list[RemoteDocument] = []
    ra.on_reset.append(resets.append)
    network.refuse()
    await first.stop()
    await wait_until(lambda: a.state is not ClientState.ONLINE)
    # Made while the document is being recreated elsewhere: never acknowledged.
    ra.doc.get("text", type=pycrdt.Text).insert(5, " world")
    ra.doc.get("map", type=pycrdt.Map)["offline"] = "kept"

    # The document comes back from a backup, typed again: the same text under
    # other item ids, and a new epoch.
    second = await start_server(
        settings.replace(store_url=f"sqlite:///{tmp_path}/second.db", port=port)
    )
    typist = await clients.open(f"ws://127.0.0.1:{second.port}/ws", reconnect=False)
    rt = await typist.subscribe("notes")
    rt.doc.get("text", type=pycrdt.Text).insert(0, "hello")
    await rt.flushed()
    network.accept()

    await ra.wait_for(lambda: ra.resets == 1 and ra.synced, timeout_s=15)
    await ra.flushed()
    await rt.wait_for(lambda: rt.doc.get("map", type=pycrdt.Map).to_py() == {"offline": "kept"})

    await rt.wait_for(lambda: text(rt) == "hello world")
    assert ra.epoch != old_epoch and resets == [ra] and ra.sync_mode == "reset"
    # The copy's "hello" was dropped (a merge would have made "hellohello world"),
    # its unacknowledged edits were made again on the new document.
    assert text(ra) == text(rt) == "hello world"
    assert ra.not_rebased == []
    await network.close()


async def test_a_large_sync_comes_in_parts_within_the_clients_frame_limit(server, clients, raw):
    writer = await clients.open(f"ws://127.0.0.1:{server.port}/ws")
    w = await writer.subscribe("large")
    w.doc.get("text", type=pycrdt.Text).insert(0, "".join(chr(97 + i % 26) for i in range(600_000)))
    await w.flushed(timeout_s=30)

    reader = await clients.open(f"ws://127.0.0.1:{server.port}/ws", max_message_bytes=64 * 1024)
    progress: list[tuple[int, int]] = []
    r = await reader.subscribe("large", wait=False)
    await r.wait_for(lambda: bool(progress.append(r.sync_progress)) or r.synced, timeout_s=30)
    assert text(r) == text(w)
    seen = [p for p in progress if p is not None]
    assert len(seen) > 5 and seen[-1][0] == seen[-1][1] > 600_000

    peer = await raw()
    peer.send({"type": "hello", "version": 1, "max_frame_bytes": 32 * 1024})
    await peer.recv_type("welcome")
    peer.send({"type": "subscribe", "doc": "large"})
    sizes = []
    while True:
        frame = await peer.recv_bytes()
        sizes.append(len(frame))
        message = __import__("msgpack").unpackb(frame)
        if message["type"] == "sync" and message.get("part") == message.get("parts", 1) - 1:
            break
    assert max(sizes) <= 32 * 1024 and len(sizes) > 10


@pytest.fixture
def port() -> int:
    from tests.mongodb import free_port

    return free_port()


async def test_edits_made_while_the_server_is_down_reach_it_after_a_restart(
    tmp_path: Path, port: int
):
    url = f"sqlite:///{tmp_path}/collab.db"
    ws = f"ws://127.0.0.1:{port}/ws"
    async with server_process(url, "--port", str(port)):
        a = await CollabClient.connect(ws, **FAST)
        b = await CollabClient.connect(ws, **FAST)
    try:
        ra, rb = await a.subscribe("down", wait=False), await b.subscribe("down", wait=False)
        await wait_until(lambda: a.state is not ClientState.ONLINE)
        ra.doc.get("text", type=pycrdt.Text).insert(0, "written while the server was down")
        assert ra.queued == 1
        async with server_process(url, "--port", str(port)):
            await ra.flushed(timeout_s=20)
            await rb.wait_for(lambda: text(rb) == text(ra), timeout_s=20)
        assert text(rb) == "written while the server was down"
    finally:
        await a.close()
        await b.close()


OFFLINE_WRITER = """
import asyncio, os, signal, sqlite3, sys
import pycrdt
from collab.client import CollabClient

def saved():
    with sqlite3.connect(sys.argv[2]) as queue:
        return queue.execute("SELECT 1 FROM queue WHERE doc = 'queued'").fetchone() is not None

async def main():
    client = await CollabClient.connect(sys.argv[1], wait_online=False, queue_path=sys.argv[2])
    remote = await client.subscribe("queued", wait=False)
    remote.doc.get("text", type=pycrdt.Text).insert(0, "typed offline, then the process died")
    while not saved():  # the queue is saved within 50 ms
        await asyncio.sleep(0.01)
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


async def test_a_client_process_killed_while_offline_delivers_its_edits_after_restarting(
    tmp_path: Path, port: int
):
    url = f"sqlite:///{tmp_path}/collab.db"
    ws = f"ws://127.0.0.1:{port}/ws"
    queue = tmp_path / "queue.db"
    writer = await asyncio.create_subprocess_exec(
        sys.executable, "-c", OFFLINE_WRITER, ws, str(queue)
    )
    assert await writer.wait() == -signal.SIGKILL

    async with server_process(url, "--port", str(port)):
        again = await CollabClient.connect(ws, queue_path=queue, **FAST)
        reader = await CollabClient.connect(ws, **FAST)
        try:
            r = await again.subscribe("queued")
            await r.flushed()
            rr = await reader.subscribe("queued")
            assert text(rr) == "typed offline, then the process died"
        finally:
            await again.close()
            await reader.close()
    log = await stored_log(tmp_path / "collab.db", "queued")
    assert len(log) == 1


async def test_sigterm_with_writes_in_flight_loses_nothing_acknowledged(tmp_path: Path, port: int):
    url = f"sqlite:///{tmp_path}/collab.db"
    ws = f"ws://127.0.0.1:{port}/ws"
    clients = []
    try:
        async with server_process(url, "--port", str(port)) as first:
            clients = [await CollabClient.connect(ws, **FAST) for _ in range(3)]
            remotes = [await c.subscribe("deploy") for c in clients]

            async def write(remote: RemoteDocument, k: int) -> None:
                for i in range(200):
                    body = remote.doc.get("text", type=pycrdt.Text)
                    body.insert(len(body), f"<{k}.{i}>")
                    await asyncio.sleep(0.002)  # a steady stream, still going at SIGTERM

            writing = asyncio.gather(*(write(r, k) for k, r in enumerate(remotes)))
            await asyncio.sleep(0.2)  # SIGTERM lands mid-stream: writes are in flight
            first.process.send_signal(signal.SIGTERM)
            assert await first.process.wait() == 0
        for client in clients:
            await client.closed()  # it read the close (the process may exit first)
            assert client.close_code == CloseCode.SERVICE_RESTART
        async with server_process(url, "--port", str(port)):
            await writing
            for remote in remotes:
                await remote.flushed(timeout_s=30)
            await remotes[0].wait_for(lambda: len({text(r) for r in remotes}) == 1, timeout_s=30)
        log = await stored_log(tmp_path / "collab.db", "deploy")
        assert_no_struct_stored_twice(log)
        stored = text_of_log(log)
        assert stored == text(remotes[0])
        for k in range(3):
            for i in range(200):
                assert stored.count(f"<{k}.{i}>") == 1
    finally:
        for client in clients:
            await client.close()
