"""Retention: history older than ``history_retention_s`` is dropped down to a
snapshot; every version from there on is still exact, and older ones answer
"not retained" (410, ``not_retained``) on every route, never a wrong state.

The server's clock is the test's (tests.helpers.Clock): time passes when a test
moves it, not by waiting."""

from __future__ import annotations

import json

import pycrdt
import pytest

from collab.client import ClientError
from collab.core import archive
from tests.helpers import Clock, http_get, wait_until
from tests.test_documents_api import EventReader

DOC = "kept"
RETENTION_S = 30 * 24 * 3600.0
PAST_RETENTION_S = RETENTION_S + 1.0


@pytest.fixture
def settings(settings):
    # Snapshots are written by the tests, at the seqs they name: in the background,
    # every few updates, where they fall depends on how fast the last one was written.
    return settings.replace(snapshot_every_updates=10**6, history_retention_s=RETENTION_S)


async def old_history(server, remote, count: int) -> None:
    """``count`` edits, each stored before the next, and snapshots at 5 and 10."""
    text = remote.doc.get("text", type=pycrdt.Text)
    for i in range(count):
        text.insert(len(text), f"{i},")
        await remote.flushed()
    await server.rooms.writer.wait_idle(5)
    for seq in (5, 10):
        assert await server.rooms.snapshots.write(remote.name, seq)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server(io_loop, start_server, settings, clock):
    return io_loop.run_sync(lambda: start_server(settings, clock=clock))


async def test_history_past_the_retention_is_dropped_and_said_to_be(server, connect, clock):
    client = await connect()
    remote = await client.subscribe(DOC)
    text = remote.doc.get("text", type=pycrdt.Text)
    await old_history(server, remote, 12)
    versions = {}
    for seq in range(13):
        _, body = await http_get(server, f"/api/documents/{DOC}/versions/{seq}")
        versions[seq] = json.loads(body)["content"]
    clock.advance(PAST_RETENTION_S)
    for i in range(12, 15):
        text.insert(len(text), f"{i},")
        await remote.flushed()

    assert await server.rooms.drop_old_history() == 1

    snapshots = await server.store.snapshot_seqs(DOC)
    first = snapshots[0]
    assert first == 10  # the newest snapshot older than the retention
    for seq in range(first, 13):  # kept versions: exactly what they were
        code, body = await http_get(server, f"/api/documents/{DOC}/versions/{seq}")
        assert code == 200 and json.loads(body)["content"] == versions[seq], seq
    for path in (
        f"/api/documents/{DOC}/versions/3",
        f"/api/documents/{DOC}/state?seq=9",
        f"/api/documents/{DOC}/diff?from=2&to=12",
        f"/api/documents/{DOC}/events?after=0",
    ):
        code, body = await http_get(server, path)
        assert code == 410, path
        assert "no longer kept" in json.loads(body)["error"]
    _, body = await http_get(server, f"/api/documents/{DOC}/history")
    listed = json.loads(body)
    assert listed["retained_from"] == 10 and listed["updates"][0]["seq"] == 11
    with pytest.raises(ClientError) as refused:
        await client.history(DOC, after=0)
    assert refused.value.error is not None and refused.value.error.code == "not_retained"
    page = await client.history(DOC, after=10)
    assert [u["seq"] for u in page.updates] == [11, 12, 13, 14, 15]
    with pytest.raises(archive.ArchiveError, match="no longer kept"):
        async for _ in archive.export_document(server.store, DOC):
            pass
    # Live: the document, new edits and a new reader are whole.
    reader = EventReader(server, DOC, after=12)
    text.insert(len(text), "after")
    await remote.flushed()
    await wait_until(lambda: reader.seqs == [13, 14, 15, 16])
    reader.close()
    other = await (await connect()).subscribe(DOC)
    assert str(other.doc.get("text", type=pycrdt.Text)) == str(text)


async def test_without_a_retention_nothing_is_dropped(settings, start_server, connect, clock):
    server = await start_server(settings.replace(history_retention_s=0.0), clock=clock)
    remote = await (await connect(server)).subscribe(DOC)
    for i in range(12):
        remote.doc.get("text", type=pycrdt.Text).insert(0, str(i))
        await remote.flushed()
    clock.advance(10 * 365 * 24 * 3600.0)
    assert await server.rooms.drop_old_history() == 0
    assert [r.seq for r in await server.store.read_updates(DOC, limit=1)] == [1]
    _, body = await http_get(server, f"/api/documents/{DOC}/versions/1")
    assert json.loads(body)["seq"] == 1


async def test_times_and_diffs_before_the_history_kept_are_refused_not_guessed(
    server, connect, clock
):
    client = await connect()
    remote = await client.subscribe("old")
    text = remote.doc.get("text", type=pycrdt.Text)
    await old_history(server, remote, 12)
    clock.advance(PAST_RETENTION_S)
    text.insert(0, "new ")
    await remote.flushed()
    assert await server.rooms.drop_old_history() == 1

    code, body = await http_get(server, "/api/documents/old/versions?at=2000-01-01T00:00:00Z")
    assert code == 410 and "no longer kept" in json.loads(body)["error"]
    code, body = await http_get(server, "/api/documents/old/versions?at=2999-01-01T00:00:00Z")
    assert code == 200 and json.loads(body)["content"]["text"] == str(text)
    code, _ = await http_get(server, "/api/documents/old/diff")  # from 0: not kept
    assert code == 410
    code, body = await http_get(server, "/api/documents/old/diff?from=10")
    spans = json.loads(body)["spans"]
    assert code == 200 and (spans[0]["type"], spans[0]["text"]) == ("insert", "new ")
