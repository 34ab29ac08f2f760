"""What an idle WebSocket connection keeps once it is open: not the upgrade's HTTP
state, not a task or a coroutine frame, and what is read later still answers (the
peer's address, the URL in an error's log line, the place under the address's cap)."""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
import sys
import tracemalloc
from typing import Any

import pytest
import tornado.iostream
import tornado.web
import tornado.websocket
from tornado.httputil import HTTPServerRequest
from tornado.websocket import WebSocketProtocol13

from collab.web.sockets import SocketHandler
from collab.web.stream_queues import release_idle_queues
from tests.helpers import wait_until
from tests.test_frame_reader import Wire
from tests.test_frames import frame

STEP1_EMPTY = bytes([0, 0, 1, 0])  # y-websocket sync step 1, empty state vector


async def synced_peer(port: int, doc: str) -> Wire:
    """A y-websocket peer on raw frames, open until the server's sync step 2."""
    wire = await Wire.connect(port, f"/yjs/{doc}")
    await wire.write(frame(STEP1_EMPTY))
    while True:
        _, payload = await wire.read_frame()
        if payload[:2] == b"\x00\x01":
            return wire


def tasks_holding(handler: Any) -> list[asyncio.Task[Any]]:
    """Tasks with a coroutine, anywhere down what they await, whose locals hold
    ``handler``."""
    holding = []
    for task in asyncio.all_tasks() - {asyncio.current_task()}:
        coroutine: Any = task.get_coro()
        while coroutine is not None:
            frame_ = getattr(coroutine, "cr_frame", None)
            if frame_ is not None and any(v is handler for v in frame_.f_locals.values()):
                holding.append(task)
                break
            coroutine = getattr(coroutine, "cr_await", None)
    return holding


async def test_an_idle_connection_holds_no_task_and_no_coroutine(server):
    wires = [await synced_peer(server.port, "idle") for _ in range(3)]
    await wait_until(lambda: len(server.sockets) == 3)
    for handler in server.sockets:
        assert tasks_holding(handler) == []
    for wire in wires:
        wire.close()


@pytest.mark.allow_error_logs  # the error logged on purpose
async def test_an_open_socket_keeps_what_is_read_after_the_upgrade(server, caplog):
    wire = await synced_peer(server.port, "kept?token=secret")
    (handler,) = server.sockets
    assert handler.request.connection is None  # the upgrade's HTTP state is gone
    assert not handler.request.headers
    assert not handler.request.query_arguments and not handler.request.arguments  # the token
    assert handler.get_query_argument("token", None) is None
    assert handler.remote == "127.0.0.1"
    assert handler.connection.remote == "127.0.0.1"
    # An unexpected error names the request, its token left out.
    try:
        raise ValueError("boom")
    except ValueError:
        handler.log_exception(*sys.exc_info())
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage().endswith("GET /yjs/kept?token=[redacted]")
    # HTTP is over: its methods are refused, and the headers left take nothing.
    for method, args in [("write", (b"x",)), ("finish", ()), ("set_header", ("A", "b"))]:
        with pytest.raises(RuntimeError):
            getattr(handler, method)(*args)
    with pytest.raises(TypeError):
        handler.request.headers["X-Late"] = "no"
    # The socket still works.
    await wire.write(frame(STEP1_EMPTY))
    _, payload = await wire.read_frame()
    assert payload[:2] == b"\x00\x01"
    wire.close()


async def test_a_closed_y_websocket_frees_its_place_under_the_address_cap(settings, start_server):
    server = await start_server(settings.replace(max_connections_per_ip=1))
    wire = await synced_peer(server.port, "capped")
    wire.close()
    await wait_until(lambda: server.connections.open_from("127.0.0.1") == 0)
    again = await synced_peer(server.port, "capped")  # refused with 1013 if still counted
    assert len(server.sockets) == 1
    again.close()


async def test_an_idle_y_websocket_connection_costs_well_under_12_kib(server):
    """A generous bound, counted by tracemalloc on what Tornado and collab allocate
    (7 KiB measured; 15 KiB before the upgrade's state was let go and the reader
    left Tornado's coroutines). docs/PERFORMANCE.md has the RSS figures."""
    count = 100
    warm = [await synced_peer(server.port, f"warm-{i}") for i in range(10)]
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        wires = [await synced_peer(server.port, f"idle-{i % 10}") for i in range(count)]
        await wait_until(lambda: len(server.sockets) == count + len(warm))
        await asyncio.sleep(0.2)  # the last answers written
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    ours = [
        tracemalloc.Filter(True, "*/tornado/*"),
        tracemalloc.Filter(True, "*/collab/*"),
    ]
    grown = sum(
        stat.size_diff
        for stat in after.filter_traces(ours).compare_to(before.filter_traces(ours), "filename")
    )
    assert grown / count < 12 * 1024, f"{grown / count / 1024:.1f} KiB per connection"
    for wire in [*warm, *wires]:
        wire.close()


def test_the_parts_of_tornado_the_release_relies_on_are_still_there():
    """SocketHandler replaces Tornado's _detach_stream and lets go of the upgrade's
    state once open ran; if this fails, Tornado changed under it."""
    source = inspect.getsource(tornado.websocket.WebSocketHandler._detach_stream)
    for name in ("write", "redirect", "set_header", "set_cookie", "set_status", "flush", "finish"):
        assert f'"{name}"' in source, name  # the methods SocketHandler refuses too
        assert getattr(SocketHandler, name) is not getattr(tornado.web.RequestHandler, name)
    source = inspect.getsource(WebSocketProtocol13._accept_connection)
    # open runs after the stream is detached and before anything is read.
    assert source.index("handler._detach_stream()") < source.index("handler.open(")
    assert source.index("handler.open(") < source.index("self._receive_frame_loop()")
    source = inspect.getsource(HTTPServerRequest.__init__)
    for name in ("connection", "server_connection", "headers", "remote_ip"):
        assert f"self.{name} =" in source, name


async def test_a_stream_closed_before_its_socket_opened_is_left_as_it_is():
    """The answer to the upgrade can fail (the peer went): open then finds its
    stream closed, with no queues to release."""
    ours, theirs = socket.socketpair()
    stream = tornado.iostream.IOStream(ours)
    theirs.close()
    stream.close()
    release_idle_queues(stream)
    assert stream.closed()
