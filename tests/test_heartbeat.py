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


async def test_websocket_ping_frames_are_configured_from_settings(server, settings):
    app_settings = server.application.settings
    assert app_settings["websocket_ping_interval"] == settings.ping_interval_s
    assert app_settings["websocket_ping_timeout"] == settings.ping_timeout_s
    assert app_settings["websocket_max_message_size"] == settings.max_frame_bytes


@pytest.mark.slow
async def test_a_peer_that_stops_answering_pings_is_closed_and_its_awareness_removed(
    start_server, settings, connect
):
    server = await start_server(settings.replace(ping_interval_s=0.2, ping_timeout_s=0.2))
    watcher = await connect(server)
    w = await watcher.subscribe("hb")

    silent = await SilentPeer.connect(server.port)
    silent.send({"type": "hello", "version": 1})
    silent.send({"type": "subscribe", "doc": "hb"})
    awareness = pycrdt.Awareness(pycrdt.Doc(client_id=4242))
    awareness.set_local_state({"user": "sleepy"})
    update = awareness.encode_awareness_update([4242])
    silent.send({"type": "awareness", "doc": "hb", "update": update})
    await w.wait_for(lambda: 4242 in w.awareness.states)
    try:
        # Tornado closes after ping interval + timeout, then waits up to 5 s for
        # the close handshake before dropping the socket.
        await w.wait_for(lambda: 4242 not in w.awareness.states, timeout_s=15)
        await wait_until(lambda: len(server.sockets) == 1)
    finally:
        silent.close()


@pytest.mark.slow
async def test_a_silent_y_websocket_client_is_closed_and_its_awareness_removed(
    start_server, settings, connect
):
    server = await start_server(settings.replace(ping_interval_s=0.2, ping_timeout_s=0.2))
    watcher = await connect(server)
    w = await watcher.subscribe("hb-yjs")

    silent = await SilentPeer.connect(server.port, "/yjs/hb-yjs")
    awareness = pycrdt.Awareness(pycrdt.Doc(client_id=4343))
    awareness.set_local_state({"user": "gone quiet"})
    silent.send_frame(pycrdt.create_awareness_message(awareness.encode_awareness_update([4343])))
    await w.wait_for(lambda: 4343 in w.awareness.states)
    try:
        await w.wait_for(lambda: 4343 not in w.awareness.states, timeout_s=15)
        await wait_until(lambda: len(server.sockets) == 1)
    finally:
        silent.close()
