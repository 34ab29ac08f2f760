"""Heartbeats: WebSocket ping frames from the server, application PING/PONG from
clients, and what happens to a peer that goes silent."""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import time

import msgpack
import pycrdt
import pytest

from tests.helpers import wait_until


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


class SilentPeer:
    """A WebSocket client over a bare TCP stream that never answers pings:
    a browser tab whose machine went to sleep."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> SilentPeer:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        response = await reader.readuntil(b"\r\n\r\n")
        assert response.startswith(b"HTTP/1.1 101"), response
        return cls(reader, writer)

    def send(self, message: dict) -> None:
        payload = msgpack.packb(message, use_bin_type=True)
        mask = os.urandom(4)
        header = bytes([0x82])  # FIN + binary
        if len(payload) < 126:
            header += bytes([0x80 | len(payload)])
        else:
            header += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(header + mask + masked)

    def close(self) -> None:
        self.writer.close()


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
