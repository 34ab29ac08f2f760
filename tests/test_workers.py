"""``collab serve --workers N`` (N processes on one port, SO_REUSEPORT, sharing the
store) and ``--event-loop uvloop``, as real processes: clients spread over the
workers edit one document and converge, nothing is lost when the workers stop or
one of them is killed, and the supervisor restarts a worker that died."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pycrdt
import pytest

from collab.client import CollabClient
from tests.helpers import http_get, wait_until
from tests.mongodb import free_port
from tests.processes import ServerProcess, server_process

pytestmark = pytest.mark.slow


async def all_listening(server: ServerProcess, workers: int) -> None:
    await wait_until(lambda: b"".join(server.log).count(b"listening on") == workers, 20)


async def instance_of(server: ServerProcess) -> str:
    """The instance that answered (a new connection each time: simple_httpclient)."""
    _, body = await http_get(server, "/healthz")
    return json.loads(body)["instance"]


async def serve_until_exit(*args: str) -> tuple[int | None, bytes]:
    """Run ``collab serve ARGS`` to its end; its exit status and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "collab", "serve", *args, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(process.communicate(), 20)
    return process.returncode, err


def worker_pids(supervisor: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(supervisor)], capture_output=True, text=True)
    return [int(pid) for pid in out.stdout.split()]


def stored_text(db: Path, doc: str) -> str:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT data FROM updates WHERE doc = ? ORDER BY seq", (doc,))
        updates = [row[0] for row in rows]
    replica = pycrdt.Doc()
    for update in updates:
        replica.apply_update(update)
    return str(replica.get("text", type=pycrdt.Text))


async def test_workers_share_the_port_and_the_documents(tmp_path):
    db = tmp_path / "collab.db"
    port = free_port()
    async with server_process(
        f"sqlite:///{db}", "--port", str(port), "--workers", "2", "--feed-poll-s", "0.01"
    ) as server:
        # The kernel spreads connections over both workers.
        await all_listening(server, 2)
        instances = {await instance_of(server) for _ in range(40)}
        assert len(instances) == 2, instances
        assert {i.rsplit("-", 1)[1] for i in instances} == {"0", "1"}
        # Both opened the new SQLite file at once, and neither failed doing so.
        assert b"restarting" not in b"".join(server.log), server.log_text()

        clients = [await CollabClient.connect(f"{server.ws_url}/ws") for _ in range(6)]
        try:
            docs = [await c.subscribe("shared") for c in clients]
            for k, remote in enumerate(docs):
                for i in range(20):
                    remote.doc.get("text", type=pycrdt.Text).insert(0, f"<{k}.{i}>")
            for remote in docs:
                await asyncio.wait_for(remote.flushed(), 20)
            expected = {f"<{k}.{i}>" for k in range(6) for i in range(20)}

            def converged() -> bool:
                texts = {str(r.doc.get("text", type=pycrdt.Text)) for r in docs}
                if len(texts) != 1:
                    return False
                (text,) = texts
                return all(piece in text for piece in expected)

            await wait_until(converged, 20)
        finally:
            for client in clients:
                await client.close()
        server.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(server.process.wait(), 30) == 0
    text = stored_text(db, "shared")
    assert len(text) == sum(len(piece) for piece in expected)
    assert all(piece in text for piece in expected)


async def test_a_worker_that_dies_is_restarted_and_acknowledged_edits_survive(tmp_path):
    db = tmp_path / "collab.db"
    port = free_port()
    # The supervisor waits 0.1 s before the restart, not its 1 s: the same restart, sooner.
    quick = "import collab.workers\ncollab.workers.RESTART_DELAY_S = 0.1"
    async with server_process(
        f"sqlite:///{db}", "--port", str(port), "--workers", "2", python_prelude=quick
    ) as server:
        client = await CollabClient.connect(f"{server.ws_url}/ws")
        remote = await client.subscribe("kept")
        remote.doc.get("text", type=pycrdt.Text).insert(0, "acknowledged")
        await asyncio.wait_for(remote.flushed(), 20)
        await client.close()

        before = worker_pids(server.process.pid)
        assert len(before) == 2
        os.kill(before[0], signal.SIGKILL)
        await wait_until(
            lambda: len(after := worker_pids(server.process.pid)) == 2 and before[0] not in after,
            20,
        )
        await wait_until(lambda: b"restarting it" in b"".join(server.log), 5)

        # Whichever worker it reaches, a new client finds the edit.
        for _ in range(4):
            reader = await CollabClient.connect(f"{server.ws_url}/ws")
            copy = await reader.subscribe("kept")
            assert str(copy.doc.get("text", type=pycrdt.Text)) == "acknowledged"
            await reader.close()
    assert stored_text(db, "kept") == "acknowledged"


async def test_a_server_on_uvloop_syncs_and_stores(tmp_path):
    db = tmp_path / "collab.db"
    async with server_process(f"sqlite:///{db}", "--event-loop", "uvloop") as server:
        writer = await CollabClient.connect(f"{server.ws_url}/ws")
        reader = await CollabClient.connect(f"{server.ws_url}/ws")
        try:
            mine = await writer.subscribe("fast")
            theirs = await reader.subscribe("fast")
            mine.doc.get("text", type=pycrdt.Text).insert(0, "on uvloop")
            await asyncio.wait_for(mine.flushed(), 10)
            await wait_until(lambda: str(theirs.doc.get("text", type=pycrdt.Text)) == "on uvloop")
        finally:
            await writer.close()
            await reader.close()
    assert stored_text(db, "fast") == "on uvloop"


async def test_a_second_supervisor_on_the_same_address_refuses_to_start(tmp_path):
    port = free_port()
    async with server_process(
        f"sqlite:///{tmp_path}/a.db", "--port", str(port), "--workers", "2"
    ) as first:
        code, err = await serve_until_exit(
            "--port", str(port), "--workers", "2", "--store-url", f"sqlite:///{tmp_path}/b.db"
        )
        assert code == 1
        assert b"is served by the workers of" in err
        # The first deployment alone still answers on the port.
        await all_listening(first, 2)
        prefixes = {(await instance_of(first)).rsplit("-", 1)[0] for _ in range(10)}
        assert len(prefixes) == 1


async def test_workers_that_cannot_start_stop_the_supervisor(tmp_path):
    port = free_port()
    with socket.socket() as taken:  # the port is taken by something else
        taken.bind(("127.0.0.1", port))
        taken.listen()
        code, err = await serve_until_exit(
            "--port", str(port), "--workers", "2", "--store-url", f"sqlite:///{tmp_path}/c.db"
        )
    assert code == 1
    assert b"could not start" in err
    assert b"restarting" not in err


async def test_workers_stop_when_their_supervisor_is_killed(tmp_path):
    port = free_port()
    async with server_process(
        f"sqlite:///{tmp_path}/d.db", "--port", str(port), "--workers", "2"
    ) as server:
        pids = worker_pids(server.process.pid)
        assert len(pids) == 2
        server.process.kill()
        await server.process.wait()

        def gone(pid: int) -> bool:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            # A zombie until reaped by init: its state is Z.
            with open(f"/proc/{pid}/stat") as stat:
                return stat.read().rsplit(")", 1)[1].split()[0] == "Z"

        await wait_until(lambda: all(gone(pid) for pid in pids), 20)
