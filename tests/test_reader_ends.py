"""How a WebSocket connection ends while collab's reader waits (collab.web.reading):
a stream that closes while a handler's awaitable holds the reader back still tells
the handler once, and the connection leaves the server."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import Sequence
from typing import Any

from collab.errors import CloseCode
from collab.store import AppendResult, NewUpdate
from collab.store.sqlite import SQLiteStore
from tests.helpers import text_update, wait_until
from tests.test_frame_reader import HELLO, Wire, native, read_path  # noqa: F401 - fixture
from tests.test_frames import frame


async def test_a_flooding_socket_closed_for_its_rate_leaves_the_server_once_it_is_gone(
    settings, start_server
):
    # The flood's reader stops for good (connection._stop_reading); the socket is
    # dropped 5 s after its close frame, and that drop must reach the handler.
    server = await start_server(settings.replace(rate_messages_per_s=50, rate_messages_burst=100))
    wire = await Wire.connect(server.port)
    await wire.write(HELLO)
    assert (await wire.read_message())["type"] == "welcome"
    await wire.write(b"".join(native({"type": "ping", "id": i}) for i in range(500)))
    assert await wire.close_code() == CloseCode.POLICY_VIOLATION
    wire.close()
    await wait_until(lambda: not server.sockets)


class GatedStore(SQLiteStore):
    """Appends wait for ``gate``: a shutdown waits to flush meanwhile."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Event()

    async def append(self, updates: Sequence[NewUpdate]) -> AppendResult:
        await self.gate.wait()
        return await super().append(updates)


async def test_a_socket_paused_by_a_shutdown_leaves_the_server_when_its_peer_goes(
    tmp_path, settings, start_server
):
    store = GatedStore(tmp_path / "gated.db")
    server = await start_server(settings, store)
    wire = await Wire.connect(server.port)
    await wire.write(HELLO + native({"type": "subscribe", "doc": "d"}))
    await wire.write(native({"type": "update", "doc": "d", "ref": 1, "update": text_update("a")}))
    await wait_until(lambda: server.rooms.writer.queued > 0)
    stopping = asyncio.ensure_future(server.stop())  # waits for the gated append
    try:
        await wait_until(lambda: server.stopping)
        (handler,) = server.sockets
        await wire.write(native({"type": "ping", "id": "late"}))
        await wait_until(lambda: handler._paused is not None)  # read, and reading stopped
        wire.close()  # the peer goes while its socket is paused
        await wait_until(lambda: not server.sockets)
    finally:
        store.gate.set()
        await stopping


async def test_a_large_frame_dripped_byte_by_byte_costs_the_server_about_its_size(server):
    # Slowloris: each byte of a frame under way arrives alone, and is read alone.
    wire = await Wire.connect(server.port)
    await wire.write(HELLO)
    assert (await wire.read_message())["type"] == "welcome"
    header = frame(b"", length=1024 * 1024)  # within max_frame_bytes: its payload is awaited
    await wire.write(header)
    dripped = 8192
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(dripped):
            wire.writer.write(b"x")  # sent at once: nothing is queued before it
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 2 * dripped + 32 * 1024
    wire.close()
