"""Heartbeats: WebSocket ping frames from the server, application PING/PONG from
clients, and what happens to a peer that goes silent."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pycrdt
import pytest

from collab.web import heartbeat
from collab.wire import yjs as yjs_protocol
from tests.conftest import ws_url
from tests.helpers import GatedStore, RawPeer, SilentPeer, text_update, wait_until


async def test_the_server_answers_an_application_ping_with_the_same_id(raw, server):
    peer = await raw()
    await peer.hello()
    before_ms = int(time.time() * 1000)
    peer.send({"type": "ping", "id": "abc"})
    pong = await peer.recv_type("pong")
    assert pong["id"] == "abc"
    assert before_ms - 1000 <= pong["time_ms"] <= int(time.time() * 1000) + 1000


async def test_the_client_measures_round_trip_time(connect):
    client = await connect()
    rtt = await client.ping()
    assert 0 < rtt < 5


async def test_the_server_pings_itself_and_tornado_does_not(server, settings):
    # Tornado's own ping would wait 5 s for a close handshake with a dead peer.
    app_settings = server.application.settings
    assert app_settings["websocket_ping_interval"] == 0
    assert app_settings["websocket_max_message_size"] == settings.max_frame_bytes


@pytest.mark.slow
async def test_a_peer_that_stops_answering_pings_is_dropped_within_the_timeout(
    start_server, settings, connect
):
    interval, answer_within = 0.3, 0.3
    server = await start_server(
        settings.replace(ping_interval_s=interval, ping_timeout_s=answer_within)
    )
    watcher = await connect(server)
    w = await watcher.subscribe("hb")

    silent = await SilentPeer.connect(server.port)  # never reads: no pong ever comes back
    silent.send({"type": "hello", "version": 1})
    silent.send({"type": "subscribe", "doc": "hb"})
    awareness = pycrdt.Awareness(pycrdt.Doc(client_id=4242))
    awareness.set_local_state({"user": "sleepy"})
    update = awareness.encode_awareness_update([4242])
    silent.send({"type": "awareness", "doc": "hb", "update": update})
    await w.wait_for(lambda: 4242 in w.awareness.states)
    silent_since = time.monotonic()  # its last message
    try:
        # Found dead by the first ping after it went quiet, dropped at once (no
        # close handshake), and its cursor removed for everyone.
        await w.wait_for(lambda: 4242 not in w.awareness.states, timeout_s=5)
        gone_after = time.monotonic() - silent_since
        await wait_until(lambda: len(server.sockets) == 1)
    finally:
        silent.close()
    assert gone_after < interval + answer_within + 1.0


@pytest.mark.parametrize("path", ["/ws", "/yjs/held"])
async def test_a_peer_not_read_while_the_write_queue_is_full_is_not_dropped_as_silent(
    tmp_path, start_server, settings, path
):
    # While the store is behind, the server reads no more of a writer's socket
    # (backpressure): its pongs wait unread too. That is the server's silence, not
    # the peer's: once the store takes the writes, the peer is still connected.
    interval = 0.2
    store = GatedStore(tmp_path / "gated.db")
    limit = 64 * 1024
    server = await start_server(
        settings.replace(
            ping_interval_s=interval,
            ping_timeout_s=interval,
            max_frame_bytes=limit,
            write_queue_bytes=limit,
        ),
        store,
    )
    peer = await RawPeer.connect(ws_url(server, path))
    if path == "/ws":
        await peer.hello()
        await peer.subscribe("held")

    def send(ref: int, text: str) -> None:
        update = text_update(text, client_id=ref)
        if path == "/ws":
            peer.send({"type": "update", "doc": "held", "ref": ref, "update": update})
        else:
            peer.send_bytes(yjs_protocol.sync_update(update))

    send(1, "x" * (limit * 2 // 3))  # past half the queue
    try:
        await wait_until(lambda: server.rooms.writer.queued_bytes > limit // 2)
        send(2, "y")  # read; the socket is read no further until the queue drains
        # Several heartbeats: each would have dropped a peer heard from last before it.
        await asyncio.sleep(4 * 2 * interval)
        (handler,) = server.sockets
        assert handler.close_code is None
        store.gate.set()
        await wait_until(lambda: server.rooms.writer.queued == 0)
        if path == "/ws":
            assert (await peer.recv_type("ack"))["ref"] == 1
            assert (await peer.recv_type("ack"))["ref"] == 2
        assert peer.close_state == (None, None)
        assert list(server.sockets) == [handler]
    finally:
        store.gate.set()
        peer.close()


class CountedSocket:
    remote = "127.0.0.1"

    def __init__(self, events: list[str]) -> None:
        self.events = events

    def ping_now(self) -> bool:
        self.events.append("ping")
        return True

    def heard_since(self, moment: float) -> bool:
        return True

    def abort(self) -> None:
        raise AssertionError("it answered")


async def test_the_server_pings_a_batch_of_sockets_per_pass_of_the_event_loop():
    # Thousands of pings at once held the loop, and every peer's messages behind it.
    events: list[str] = []
    sockets = [CountedSocket(events) for _ in range(2 * heartbeat.PING_BATCH + 1)]
    beating = asyncio.create_task(heartbeat.beat(lambda: sockets, 60, 30))
    asyncio.get_running_loop().call_soon(events.append, "another callback")
    try:
        await wait_until(lambda: events.count("ping") == len(sockets))
        assert events.index("another callback") == heartbeat.PING_BATCH
    finally:
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating
