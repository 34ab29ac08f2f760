"""Shared fixtures: real servers on loopback ports, real clients, real SQLite files.

pytest-tornasync runs each ``async def test_...`` on a fresh IOLoop (``io_loop``);
fixtures that need the loop start and stop things with ``io_loop.run_sync``.

A module (or class) marked ``inprocess`` tests protocol rules, not sockets: there
``server`` and ``start_server`` give in-process servers (tests/inprocess.py: the
peers' state machines on a room manager, no socket), and ``connect``, ``raw`` and
``yjs`` reach them without one. Its tests marked ``socket`` get real servers, so
that each feature still runs end to end over a real socket.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tornado.ioloop import IOLoop

from collab.app import CollabServer
from collab.client import CollabClient
from collab.config import Settings
from tests.helpers import RawPeer, started_servers
from tests.inprocess import (  # noqa: F401 - fixtures
    InProcessServer,
    inprocess,
    inprocess_raw,
    start_inprocess,
)
from tests.mongodb import MongoServer, session_server
from tests.yjs_peer import YjsPeers

# The suite starts hundreds of Python processes (servers, the CLI, the expensive reads'
# workers, the xdist workers); where PYTHONDONTWRITEBYTECODE is set, each compiled
# collab from source again (0.1 s of CPU a process) and each xdist worker rewrote every
# test module (3 s a worker). The bytecode is written, under __pycache__ (git ignores it).
sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        host="127.0.0.1",
        port=0,
        store_url=f"sqlite:///{tmp_path}/collab.db",
        log_level="debug",
        instance_id="test",
        ping_interval_s=5.0,
        ping_timeout_s=5.0,
        room_linger_s=0.0,  # tests watch rooms unload; tests/test_rooms.py checks lingering
        # Many tests are bulk writers (thousands of updates a second on one socket);
        # tests/test_security_fair_use.py runs the default rate limits.
        rate_messages_per_s=1e6,
        rate_messages_burst=10**6,
        rate_bytes_per_s=2**40,
        rate_bytes_burst=2**40,
    )


@pytest.fixture(scope="session")
def mongo_server() -> Iterator[MongoServer]:
    """MongoDB for the whole run: SecantusDB started once, or COLLAB_TEST_MONGODB_URL."""
    yield from session_server()


@pytest.fixture
def mongodb_url(io_loop: IOLoop, mongo_server: MongoServer) -> Iterator[str]:
    """A database of this test's own on the test MongoDB. Dropped afterwards on an
    external server; SecantusDB's files go at the end of the run (it drops a
    database slowly, under a lock that stops every other command)."""
    from pymongo import AsyncMongoClient

    database = mongo_server.new_database()
    yield mongo_server.url(database)
    if not mongo_server.external:
        return

    async def drop() -> None:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server.base_url)
        try:
            await client.drop_database(database)
        finally:
            await client.close()

    io_loop.run_sync(drop)


def in_process(request: pytest.FixtureRequest) -> bool:
    """The test is marked ``inprocess`` (its module, usually) and not ``socket``."""
    node = request.node
    return node.get_closest_marker("inprocess") is not None and (
        node.get_closest_marker("socket") is None
    )


@pytest.fixture
def start_server(
    request: pytest.FixtureRequest, io_loop: IOLoop
) -> Iterator[Callable[..., Awaitable[Any]]]:
    """``await start_server(settings, store=None, clock=...)`` inside a test; every server
    started this way is stopped after the test (stopping twice is harmless).
    In-process servers for tests marked ``inprocess`` (above)."""
    if in_process(request):
        yield request.getfixturevalue("start_inprocess")
        return
    yield from started_servers(io_loop, CollabServer)


@pytest.fixture
def server(io_loop: IOLoop, start_server: Callable[..., Awaitable[Any]], settings: Settings) -> Any:
    """A server on the test's settings: a CollabServer, or an InProcessServer for
    tests marked ``inprocess``."""
    return io_loop.run_sync(lambda: start_server(settings))


def ws_url(server: CollabServer, path: str = "/ws") -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


@pytest.fixture
def connect(io_loop: IOLoop, server: Any) -> Iterator[Callable[..., Awaitable[CollabClient]]]:
    """``await connect(target=server, **options)``: a native client on ``target``
    (over a socket, or in-process through the client's ``dial`` when ``target`` is
    an InProcessServer), closed after the test."""
    clients: list[CollabClient] = []

    async def open_client(target: Any = None, **kwargs: Any) -> CollabClient:
        target = target or server
        if isinstance(target, InProcessServer):
            client = await CollabClient.connect("ws://in-process/ws", dial=target.dial, **kwargs)
        else:
            client = await CollabClient.connect(ws_url(target), **kwargs)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        io_loop.run_sync(client.close)


@pytest.fixture
def raw(io_loop: IOLoop, server: Any) -> Iterator[Callable[..., Awaitable[Any]]]:
    """``await raw(path="/ws", target=server)``: a bare WebSocket for sending
    hand-made frames (an InProcessPeer, with RawPeer's API, on an InProcessServer)."""
    peers: list[Any] = []

    async def open_peer(path: str = "/ws", target: Any = None) -> Any:
        target = target or server
        if isinstance(target, InProcessServer):
            peer: Any = (await target.dial(path)).peer
        else:
            peer = await RawPeer.connect(ws_url(target, path))
        peers.append(peer)
        return peer

    yield open_peer
    for peer in peers:
        peer.close()


@pytest.fixture
def yjs(io_loop: IOLoop) -> Iterator[YjsPeers]:
    """``await yjs.connect(server, "doc?token=...")``: y-websocket peers, closed after
    the test."""
    peers = YjsPeers()
    yield peers
    io_loop.run_sync(peers.close)


@pytest.fixture(autouse=True)
def no_unexpected_errors(
    request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> Iterator[None]:
    """Fail a test when the server logged an error it did not expect.

    Tests that provoke errors on purpose mark themselves ``allow_error_logs``.
    """
    caplog.set_level(logging.DEBUG, logger="collab")
    yield
    if request.node.get_closest_marker("allow_error_logs"):
        return
    errors = [
        r
        for r in caplog.get_records("call") + caplog.get_records("teardown")
        if r.levelno >= logging.ERROR and r.name.startswith("collab")
    ]
    assert not errors, "unexpected error logs:\n" + "\n".join(
        f"{r.name}: {r.getMessage()}" for r in errors
    )
