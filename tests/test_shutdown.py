"""Shutdown stops reading, stores and acknowledges every write the rooms accepted,
then closes sockets with 1012 (service restart: reconnect at once).

Updates still in flight when it starts are not acknowledged; clients keep and
resend those, so nothing acknowledged depends on them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pycrdt

from collab.errors import CloseCode
from collab.store import AppendResult, NewUpdate
from collab.store.sqlite import SQLiteStore
from tests.helpers import wait_until


class SlowStore(SQLiteStore):
    """Appends take a while, so that writes are pending when shutdown starts."""

    async def append(self, updates: Sequence[NewUpdate]) -> AppendResult:
        await asyncio.sleep(0.05)  # a slow disk: a deliberate delay, nothing awaited
        return await super().append(updates)


async def test_shutdown_stores_and_acknowledges_pending_writes_then_closes_with_1012(
    tmp_path, settings, start_server, connect
):
    server = await start_server(settings, SlowStore(tmp_path / "slow.db"))
    client = await connect(server)
    remote = await client.subscribe("bye")
    text = remote.doc.get("text", type=pycrdt.Text)
    for i in range(100):
        text.insert(len(text), f"{i},")
    room = server.rooms.get("bye")
    await wait_until(lambda: room.pending_writes > 0)
    # Updates that reached the room: stored and sent already, or queued. Later ones
    # are never acknowledged.
    applied = room.head_seq + room.pending_writes

    await server.stop()
    await client.closed()
    assert client.close_code == CloseCode.SERVICE_RESTART
    assert remote.seq >= applied  # their acks came before the close

    reopened = SQLiteStore(tmp_path / "slow.db")
    await reopened.open()
    try:
        stored = await reopened.read_updates("bye")
    finally:
        await reopened.close()
    doc = pycrdt.Doc()
    for record in stored:
        doc.apply_update(record.data)
    assert [r.seq for r in stored] == list(range(1, applied + 1))
    assert str(doc.get("text", type=pycrdt.Text)) == "".join(f"{i}," for i in range(applied))
