"""A closed connection is freed as soon as it closes, by reference counting: none of
its objects waits for the cyclic garbage collector. (collab serve sets aside what
survives a full collection, collab.garbage: a closed connection caught in a cycle
would stay in memory until the next rescan, and a server whose clients come and go
would grow meanwhile.)"""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref
from collections.abc import Iterator

import pytest

from tests.helpers import SeqWatcher, wait_until

PEERS = 6


@pytest.fixture
def no_collector() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def test_closed_and_cut_connections_are_freed_without_the_collector(
    server, yjs, no_collector, caplog: pytest.LogCaptureFixture
):
    # Log records kept for the test's report would hold the connections their
    # lines name: none are made.
    caplog.set_level(logging.WARNING, logger="collab")
    for i in range(PEERS):
        peer = await yjs.connect(server, f"doc-{i % 2}")
        await peer.synced()
    watchers = [await SeqWatcher.join(server.port, f"n{i}", f"doc-{i % 2}") for i in range(PEERS)]
    await wait_until(lambda: len(server.sockets) == 2 * PEERS)
    held = [weakref.ref(handler) for handler in server.sockets]
    held += [weakref.ref(handler.connection) for handler in server.sockets]
    await yjs.close()  # with a close handshake
    for watcher in watchers:
        watcher.peer.ws.stream.close()  # cut: the server's read ends in StreamClosedError
        await watcher.close()
    await wait_until(lambda: not server.sockets)
    await asyncio.sleep(0.2)  # the connections' close tasks end
    alive = [ref() for ref in held if ref() is not None]
    assert alive == [], [type(obj).__name__ for obj in alive]
