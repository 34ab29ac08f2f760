"""A storm of new connections: the server takes on at most ``max_handshakes`` at once
(collab.web.accepting), the listen backlog holds the rest, every one of them still
syncs, and connected peers are answered meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest
from tornado.httpclient import AsyncHTTPClient

from collab.web.accepting import HANDSHAKE_SLOT_S, Handshakes
from tests.helpers import TIMEOUT_S, wait_until
from tests.yjs_peer import YjsPeer


class Clock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def test_handshakes_are_counted_up_to_the_limit_and_each_ends_once():
    freed: list[int] = []
    handshakes = Handshakes(2, clock=Clock())
    handshakes.on_free = lambda: freed.append(len(handshakes))
    handshakes.begin("a", "10.0.0.1")
    assert not handshakes.full
    handshakes.begin("b", "10.0.0.2")
    assert handshakes.full and handshakes.peak == 2
    handshakes.end("a")
    handshakes.end("a")  # the socket's open and its close both end it
    assert len(handshakes) == 1 and freed == [1]


def test_a_handshake_holds_its_slot_only_so_long():
    clock = Clock()
    handshakes = Handshakes(2, clock=clock)
    handshakes.begin("silent", "10.0.0.1")
    clock.now_s += HANDSHAKE_SLOT_S / 2
    handshakes.begin("slow", "10.0.0.1")
    assert handshakes.expire() == pytest.approx(HANDSHAKE_SLOT_S / 2)
    clock.now_s += HANDSHAKE_SLOT_S / 2
    assert handshakes.expire() == pytest.approx(HANDSHAKE_SLOT_S / 2)
    assert len(handshakes) == 1  # the first expired, the second has half its time left
    clock.now_s += HANDSHAKE_SLOT_S
    assert handshakes.expire() is None and len(handshakes) == 0


def test_one_address_holds_at_most_its_share_of_the_slots():
    handshakes = Handshakes(4, address_share=2, clock=Clock())
    for i in range(3):
        handshakes.begin(f"c{i}", "10.0.0.1")  # the third is served uncounted
    handshakes.begin("d", "10.0.0.2")
    assert len(handshakes) == 3 and not handshakes.full


def test_no_limit_counts_nothing():
    handshakes = Handshakes(0)
    handshakes.begin("a", "10.0.0.1")
    assert len(handshakes) == 0 and not handshakes.full


async def test_a_storm_of_connections_is_taken_on_a_few_at_a_time_and_every_one_syncs(
    settings, start_server, raw
):
    limit = 8
    server = await start_server(settings.replace(max_handshakes=limit, max_connections_per_ip=0))
    watcher = await raw()
    await watcher.hello()
    peers = [YjsPeer(f"ws://127.0.0.1:{server.port}/yjs/storm-{i % 20}") for i in range(300)]
    storm = asyncio.gather(*(peer.reconnect() for peer in peers))
    # A connected peer is answered throughout (generous bound: no timing is tested).
    pongs = 0
    while not storm.done():
        watcher.send({"type": "ping", "id": str(pongs)})
        assert (await watcher.recv_type("pong", timeout_s=TIMEOUT_S))["id"] == str(pongs)
        pongs += 1
    await storm
    try:
        await asyncio.gather(*(peer.synced(timeout_s=4 * TIMEOUT_S) for peer in peers))
        assert 1 < server.handshakes.peak <= limit
        assert pongs >= 1
        await wait_until(lambda: len(server.handshakes) == 0)
    finally:
        await asyncio.gather(*(peer.disconnect() for peer in peers), return_exceptions=True)


async def test_connections_that_send_nothing_do_not_keep_others_out(settings, start_server, yjs):
    server = await start_server(settings.replace(max_handshakes=2, max_connections_per_ip=0))
    silent = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(2)]
    try:
        await wait_until(lambda: server.handshakes.full)
        # Accepting pauses; the silent ones leave their slots after HANDSHAKE_SLOT_S.
        peer = await yjs.connect(server, "after-the-silent")
        await peer.synced()
    finally:
        for sock in silent:
            sock.close()


async def test_plain_http_requests_hold_no_slot_once_their_head_is_read(server):
    client = AsyncHTTPClient(force_instance=True)
    try:
        answers = await asyncio.gather(*(client.fetch(f"{server.url}/healthz") for _ in range(20)))
        assert {answer.code for answer in answers} == {200}
        await wait_until(lambda: len(server.handshakes) == 0)
    finally:
        client.close()


async def test_a_server_that_stopped_accepting_at_the_limit_still_shuts_down(
    settings, start_server
):
    server = await start_server(settings.replace(max_handshakes=1, max_connections_per_ip=0))
    held = socket.create_connection(("127.0.0.1", server.port))
    try:
        await wait_until(lambda: server.handshakes.full)
        await asyncio.wait_for(server.stop(), TIMEOUT_S)
        with pytest.raises(OSError), contextlib.closing(socket.socket()) as late:
            late.settimeout(TIMEOUT_S)
            late.connect(("127.0.0.1", server.port))
            late.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            if not late.recv(1):
                raise ConnectionResetError("closed without an answer")
    finally:
        held.close()
