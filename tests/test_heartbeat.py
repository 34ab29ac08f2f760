"""Heartbeats: WebSocket ping frames from the server, application PING/PONG from
clients, and what happens to a peer that goes silent."""

from __future__ import annotations

import time

import pycrdt
import pytest

from tests.helpers import SilentPeer, wait_until


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
