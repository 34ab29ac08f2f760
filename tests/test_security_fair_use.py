"""Fair use: no single client, however abusive, degrades everyone else. Rate
limits close a flooding socket with a documented error; per-address, per-user
and per-update caps hold; bad-input log lines are rate-limited."""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import pycrdt
import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from collab.auth import Authenticator
from collab.config import Settings
from collab.errors import CloseCode
from collab.store import NewUpdate
from tests.helpers import RawPeer, appends, text_of, text_update

SECRET = "fair-use-test-secret-of-32-bytes-or-more"
ROOT = Path(__file__).resolve().parent.parent


async def native_peer(raw, server, doc: str | None = None, **hello) -> RawPeer:
    peer = await raw(target=server)
    assert (await peer.hello(**hello))["type"] == "welcome"
    if doc is not None:
        await peer.subscribe(doc)
    return peer


async def test_a_socket_past_its_message_rate_is_told_and_closed(raw, settings, start_server):
    server = await start_server(settings.replace(rate_messages_per_s=50, rate_messages_burst=100))
    bystander = await native_peer(raw, server, "doc")
    flood = await native_peer(raw, server, "doc")
    for _ in range(500):
        flood.send({"type": "ping"})
    messages = []
    while (frame := await flood.recv_bytes()) is not None:
        messages.append(frame)
    assert flood.ws.close_code == CloseCode.POLICY_VIOLATION
    last = msgpack.unpackb(messages[-1])
    assert (last["type"], last["code"]) == ("error", "rate_limited")
    assert len(messages) < 150  # nothing past the burst was handled
    bystander.send({"type": "update", "doc": "doc", "ref": 1, "update": text_update("ok")})
    assert (await bystander.recv_type("ack"))["seq"] == 1


async def test_a_socket_past_its_byte_rate_is_closed(raw, settings, start_server):
    server = await start_server(
        settings.replace(
            max_frame_bytes=64 * 1024, rate_bytes_per_s=10_000, rate_bytes_burst=64 * 1024
        )
    )
    peer = await raw("/yjs/doc", target=server)
    await peer.recv_bytes()
    for _ in range(10):  # an unknown message type: ignored, but its bytes count
        peer.send_bytes(b"\x64" + b"\x00" * 30_000)
    assert (await peer.closed())[0] == CloseCode.POLICY_VIOLATION


async def test_connections_from_one_address_are_capped(raw, settings, start_server):
    server = await start_server(settings.replace(max_connections_per_ip=3))
    peers = [await native_peer(raw, server) for _ in range(3)]
    extra = await raw("/yjs/doc", target=server)
    assert (await extra.closed())[0] == CloseCode.TRY_AGAIN_LATER
    await server.store.append([NewUpdate("x", text_update("x"), time.time())])
    with pytest.raises(HTTPClientError) as refused:
        await AsyncHTTPClient().fetch(f"http://127.0.0.1:{server.port}/api/documents/x/events")
    assert refused.value.code == 429
    peers[0].close()
    await asyncio.sleep(0.1)
    await native_peer(raw, server)  # a place came free


async def test_a_user_creates_at_most_so_many_documents_a_minute(raw, settings, start_server):
    server = await start_server(
        settings.replace(auth_secret=SECRET, max_documents_created_per_minute=2)
    )
    peer = await native_peer(raw, server, token=Authenticator(SECRET).issue("u", {"*": "write"}))
    for doc in ("one", "two", "three"):
        await peer.subscribe(doc)
    for i, doc in enumerate(("one", "two", "three")):
        peer.send({"type": "update", "doc": doc, "ref": i, "update": text_update(doc)})
    answers = [await peer.recv() for _ in range(3)]
    assert sorted((m["type"], m["doc"], m["ref"]) for m in answers) == [
        ("ack", "one", 0),
        ("ack", "two", 1),
        ("error", "three", 2),
    ]
    assert next(m for m in answers if m["type"] == "error")["code"] == "rate_limited"
    assert await server.store.get_document("three") is None
    # Writing to documents that exist is not creating.
    peer.send({"type": "update", "doc": "one", "ref": 9, "update": text_update("more")})
    assert (await peer.recv_type("ack"))["ref"] == 9


async def test_an_update_with_too_many_structs_is_refused_and_changes_nothing(
    raw, settings, start_server
):
    server = await start_server(settings.replace(max_update_structs=1000))
    peer = await native_peer(raw, server, "doc")
    doc = pycrdt.Doc()
    text = doc.get("text", type=pycrdt.Text)
    for i in range(1500):  # each insert at the start: a struct of its own
        text.insert(0 if i % 2 else len(text), "x")
    peer.send({"type": "update", "doc": "doc", "ref": 1, "update": doc.get_update()})
    assert (await peer.recv_type("error"))["code"] == "too_large"
    peer.send({"type": "update", "doc": "doc", "ref": 2, "update": text_update("fine")})
    assert (await peer.recv_type("ack"))["seq"] == 1
    assert text_of(server.rooms.get("doc").encode_state()) == "fine"


async def test_a_large_update_is_checked_off_the_event_loop_and_applied_in_order(raw, server):
    peer = await native_peer(raw, server, "doc")
    big = text_update("y" * 300_000, client_id=5)
    follow = appends(6, 1)[0]
    peer.send({"type": "update", "doc": "doc", "ref": 1, "update": big})
    peer.send({"type": "update", "doc": "doc", "ref": 2, "update": follow})
    acks = [await peer.recv_type("ack"), await peer.recv_type("ack")]
    assert [(a["ref"], a["seq"]) for a in acks] == [(1, 1), (2, 2)]


async def test_bad_input_log_lines_are_rate_limited_with_a_count(raw, server, caplog):
    peer = await native_peer(raw, server)
    for _ in range(200):
        peer.send({"type": "subscribe", "doc": ""})
    for _ in range(200):
        assert (await peer.recv())["code"] == "invalid_document_name"
    peer.close()
    await asyncio.sleep(0.2)
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.name == "collab.protocol" and "invalid_document_name" in r.getMessage()
    ]
    assert 1 <= len(lines) <= 12
    flushed = [r.getMessage() for r in caplog.records if "lines were suppressed" in r.getMessage()]
    assert flushed and int(flushed[0].split(": ")[1].split()[0]) >= 180


async def test_refused_history_requests_and_refused_connections_are_logged_on_a_budget(
    raw, settings, start_server, caplog
):
    server = await start_server(settings.replace(max_connections_per_ip=2))
    peer = await native_peer(raw, server)
    for i in range(200):  # no such document (or more than 2 at a time): each refused
        peer.send({"type": "history", "doc": "nothing-here", "id": i})
    for _ in range(200):
        assert (await peer.recv())["code"] in ("not_found", "overloaded")
    await native_peer(raw, server)
    for _ in range(100):  # past the per-address cap
        extra = await raw("/yjs/doc", target=server)
        assert (await extra.closed())[0] == CloseCode.TRY_AGAIN_LATER
    messages = [r.getMessage() for r in caplog.records]
    assert 1 <= sum("history of 'nothing-here'" in m for m in messages) <= 12
    assert 1 <= sum("refused a connection" in m for m in messages) <= 12


@pytest.mark.slow
async def test_a_flooding_client_does_not_slow_another_peer_s_acks(
    raw, settings, start_server, caplog
):
    """A flooder in another process (garbage frames, awareness, valid updates, each
    on a new socket after the last was closed) against one document, on a server
    with the default limits; a peer of the document measures the time from each
    update it sends to its ack."""
    caplog.set_level(logging.INFO, logger="collab")
    defaults = Settings()
    server = await start_server(
        settings.replace(
            rate_messages_per_s=defaults.rate_messages_per_s,
            rate_messages_burst=defaults.rate_messages_burst,
        )
    )
    victim = await native_peer(raw, server, "shared")
    writes = appends(1, 400)

    async def latencies(count: int, start: int) -> list[float]:
        times = []
        for i in range(count):
            sent = time.perf_counter()
            victim.send(
                {"type": "update", "doc": "shared", "ref": start + i, "update": writes[start + i]}
            )
            await victim.recv_type("ack")
            times.append((time.perf_counter() - sent) * 1000)
            await asyncio.sleep(0.005)
        return times

    quiet = await latencies(100, 0)
    flooder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.flooder",
        f"ws://127.0.0.1:{server.port}/ws",
        "shared",
        "60",  # at most: it is stopped once the acks under it are measured
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )
    assert flooder.stdout is not None
    assert await flooder.stdout.readline() == b"ready\n"
    assert await flooder.stdout.readline() == b"flooding\n"  # its frames made, a socket open
    flooded = await latencies(300, 100)
    flooder.terminate()  # the flood ends, and reports
    report = json.loads((await flooder.communicate())[0])

    def p(values: list[float], q: float) -> float:
        return statistics.quantiles(values, n=100)[q - 1]

    print(
        f"\nack latency, quiet: p50 {p(quiet, 50):.2f} ms, p99 {p(quiet, 99):.2f} ms; "
        f"under flood: p50 {p(flooded, 50):.2f} ms, p99 {p(flooded, 99):.2f} ms, "
        f"max {max(flooded):.2f} ms; flooder: {report}"
    )
    print(
        "acks slower than 20 ms (index, ms):",
        [(i, round(v)) for i, v in enumerate(flooded) if v > 20],
    )
    closes = report["closes"]
    assert any(key.endswith(f":{int(CloseCode.POLICY_VIOLATION)}") for key in closes)
    assert report["sent"] > 10_000
    # The goal is a p99 under 50 ms on a quiet machine (docs/SECURITY.md). Here another
    # test worker shares the 2 cores, and its bursts land on the slowest few acks: the
    # bound is on the 95th percentile, generous, and grows with what the machine gave
    # the peer before the flood. Without the limits, most acks wait for seconds.
    assert p(flooded, 95) < max(100, 5 * p(quiet, 99))
    assert await server.store.get_document("shared") is not None
