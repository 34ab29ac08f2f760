"""A store that stops writing (a full disk): new updates are refused before they are
applied, what was accepted stays queued and is retried, memory stays bounded,
/readyz says so, the real error is logged once, and once space returns everything
accepted is stored and acknowledged."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pycrdt
import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from collab.errors import StoreError
from collab.store import AppendResult, NewUpdate
from collab.store.sqlite import SQLiteStore
from tests.helpers import RawPeer, wait_until

DOC = "full"
VALUE_BYTES = 8 * 1024


class Disk:
    """Fills and frees the filesystem a store lives on: a real tmpfs when this
    process may mount one, else a SQLite store that fails as a full disk does."""

    def __init__(self, folder: Path, mounted: bool) -> None:
        self.folder = folder
        self.mounted = mounted
        self.full_on_purpose = False
        self._filler = folder / "filler"

    def store(self) -> SQLiteStore:
        if self.mounted:
            return SQLiteStore(self.folder / "collab.db")
        return FailingSQLiteStore(self.folder / "collab.db", self)

    def fill(self) -> None:
        if not self.mounted:
            self.full_on_purpose = True
            return
        descriptor = os.open(self._filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            for size in (1 << 20, 1 << 16, 1 << 12, 1):  # down to the last byte
                while True:
                    try:
                        os.write(descriptor, b"\0" * size)
                    except OSError as exc:
                        assert exc.errno == errno.ENOSPC
                        break
        finally:
            os.close(descriptor)

    def free(self) -> None:
        self.full_on_purpose = False
        with contextlib.suppress(FileNotFoundError):
            self._filler.unlink()


class FailingSQLiteStore(SQLiteStore):
    """Fallback where no filesystem can be mounted: appends fail as on a full disk."""

    def __init__(self, path: Path, disk: Disk) -> None:
        super().__init__(path)
        self._disk = disk

    async def append(self, updates: Sequence[NewUpdate]) -> AppendResult:
        if self._disk.full_on_purpose:
            raise StoreError("sqlite: database or disk is full")
        return await super().append(updates)


@pytest.fixture(params=["tmpfs", "failing store"])
def disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Disk]:
    """A real 8 MiB tmpfs (skipped where this process may not mount one), and the
    store that fails on purpose, which runs everywhere."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = False
    if request.param == "tmpfs":
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(folder)],
            capture_output=True,
            check=False,
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
        mounted = True
    try:
        yield Disk(folder, mounted)
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False)


def entry(index: int) -> bytes:
    """An update setting map key ``k<index>`` to an 8 KiB value."""
    doc = pycrdt.Doc(client_id=1000 + index)
    doc.get("map", type=pycrdt.Map)[f"k{index}"] = f"{index:08d}" * (VALUE_BYTES // 8)
    return doc.get_update()


async def readyz(server) -> tuple[int, dict]:
    try:
        response = await AsyncHTTPClient().fetch(f"{server.url}/readyz")
    except HTTPClientError as exc:
        assert exc.response is not None
        return exc.code, json.loads(exc.response.body)
    return response.code, json.loads(response.body)


@pytest.mark.allow_error_logs
async def test_a_full_disk_refuses_new_updates_keeps_the_accepted_and_recovers(
    settings, start_server, disk: Disk, caplog: pytest.LogCaptureFixture
):
    settings = settings.replace(
        max_frame_bytes=64 * 1024,
        write_queue_bytes=256 * 1024,
        write_retry_max_s=0.2,
    )
    server = await start_server(settings, store=disk.store())
    peer = await RawPeer.connect(f"ws://127.0.0.1:{server.port}/ws")
    await peer.hello()
    await peer.subscribe(DOC)
    answers: dict[int, dict] = {}

    async def send(index: int) -> None:
        peer.send({"type": "update", "doc": DOC, "ref": index, "update": entry(index)})

    async def collect(predicate) -> None:
        while not predicate():
            message = await peer.recv()
            if message["type"] in ("ack", "error") and "ref" in message:
                answers[message["ref"]] = message

    for index in range(5):
        await send(index)
    await collect(lambda: len(answers) == 5)
    assert all(answers[i]["type"] == "ack" for i in range(5))

    disk.fill()
    # 4 MiB of updates into a store that cannot write: at first some are queued,
    # then every one is refused before it is applied.
    for index in range(5, 5 + 512):
        await send(index)
    await collect(lambda: len(answers) >= 5 + 512 - server.rooms.writer.queued)
    refused = [i for i, a in answers.items() if a["type"] == "error"]
    assert refused and all(answers[i]["code"] == "overloaded" for i in refused)
    queued = sorted(set(range(5, 5 + 512)) - set(answers))
    assert server.rooms.writer.queued_bytes <= settings.write_queue_bytes
    assert len(queued) * VALUE_BYTES <= settings.write_queue_bytes
    assert server.rooms.writer.failure is not None
    status, body = await readyz(server)
    assert status == 503 and body["store"] == "failing"
    assert "full" in body["store_error"]
    health = await AsyncHTTPClient().fetch(f"{server.url}/healthz")
    assert health.code == 200
    # A refused update never reached the document.
    room = server.rooms.get(DOC)
    live = pycrdt.Doc()
    live.apply_update(room.encode_state())
    keys = set(live.get("map", type=pycrdt.Map).keys())
    assert not keys & {f"k{i}" for i in refused}

    disk.free()
    await collect(lambda: all(i in answers for i in queued))
    assert all(answers[i]["type"] == "ack" for i in queued)
    status, _ = await readyz(server)
    assert status == 200
    # The refused ones, sent again (16 at a time, as the queue allows), are accepted.
    answers.clear()
    for start in range(0, len(refused), 16):
        batch = refused[start : start + 16]
        for index in batch:
            await send(index)
        await collect(lambda batch=batch: all(i in answers for i in batch))
    assert all(a["type"] == "ack" for a in answers.values())
    peer.close()

    store_logs = [r for r in caplog.records if r.name == "collab.store"]
    failures = [r for r in store_logs if r.levelno >= logging.ERROR]
    assert len(failures) == 1, [r.getMessage() for r in failures]
    assert "database or disk is full" in failures[0].getMessage()
    assert not [r for r in caplog.records if "cannot rollback" in r.getMessage()]
    assert any("recovered" in r.getMessage() for r in store_logs)

    # Nothing acknowledged is lost: a restarted server holds every key.
    await server.stop()
    again = await start_server(settings, store=disk.store())
    reader = await RawPeer.connect(f"ws://127.0.0.1:{again.port}/ws")
    await reader.hello()
    sync = await reader.subscribe(DOC)
    reader.close()
    stored = pycrdt.Doc()
    stored.apply_update(sync["update"])
    assert set(stored.get("map", type=pycrdt.Map).keys()) == {f"k{i}" for i in range(5 + 512)}


@pytest.mark.allow_error_logs
async def test_a_yjs_peer_refused_while_the_store_fails_is_closed_with_1013_and_resends(
    settings, start_server, tmp_path: Path, yjs
):
    disk = Disk(tmp_path, mounted=False)  # the store that fails on purpose
    server = await start_server(settings.replace(write_retry_max_s=0.1), store=disk.store())
    peer = await yjs.connect(server, DOC)
    await peer.synced()
    disk.fill()
    peer.doc.get("text", type=pycrdt.Text).insert(0, "queued")  # accepted, not yet stored
    await wait_until(lambda: server.rooms.writer.failure is not None)

    peer.doc.get("text", type=pycrdt.Text).insert(0, "refused ")

    code, _ = await peer.closed()
    assert code == 1013
    room = server.rooms.get(DOC)
    live = pycrdt.Doc()
    live.apply_update(room.encode_state())
    assert str(live.get("text", type=pycrdt.Text)) == "queued"
    disk.free()
    await wait_until(lambda: server.rooms.writer.failure is None)
    await peer.reconnect()  # as the provider does after 1013: its sync step 2 resends
    await peer.synced()
    await server.rooms.get(DOC).flushed()
    stored = await server.store.read_updates(DOC)
    text = pycrdt.Doc()
    for record in stored:
        text.apply_update(record.data)
    assert str(text.get("text", type=pycrdt.Text)) == "refused queued"
