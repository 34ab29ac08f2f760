"""Many connections on one instance: what idle ones cost (``idle``), how fast a storm
of new ones is served (``storm``), and how the server answers a ping meanwhile
(``probe``, its own process, so that its own event loop is idle).

Connection ``i`` of ``conns`` goes to document ``i % docs``; shard ``k`` of ``shards``
opens the connections with ``i % shards == k``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from ..loadgen.yjs import YClient, close_all, yjs_url
from ..sampler import latency_summary
from .shard import barrier

SYNC_TIMEOUT_S = 120.0
PING_EVERY_S = 0.02
PING_TIMEOUT_S = 30.0


def my_connections(p: dict[str, Any], first: int = 0, end: int | None = None) -> list[int]:
    end = p["conns"] if end is None else end
    return [i for i in range(first, end) if i % p["shards"] == p["shard"]]


async def open_synced(p: dict[str, Any], indices: list[int]) -> tuple[list[YClient], list[str]]:
    """Open connection ``i`` for every ``i`` at once, each until the server's sync
    step 2; the clients that synced, and why the others did not."""

    async def one(i: int) -> YClient:
        client = await YClient.open(yjs_url(p["port"], f"{p['prefix']}-{i % p['docs']}"))
        try:
            await asyncio.wait_for(client.synced.wait(), SYNC_TIMEOUT_S)
        except TimeoutError:
            await close_all([client])
            raise
        return client

    outcomes = await asyncio.gather(*(one(i) for i in indices), return_exceptions=True)
    clients = [c for c in outcomes if isinstance(c, YClient)]
    failures = [repr(c)[:200] for c in outcomes if not isinstance(c, YClient)]
    return clients, failures


async def open_gated(
    p: dict[str, Any], indices: list[int], concurrency: int
) -> tuple[list[YClient], list[str]]:
    """``open_synced``, ``concurrency`` handshakes at a time."""
    clients: list[YClient] = []
    failures: list[str] = []
    for start in range(0, len(indices), concurrency):
        opened, failed = await open_synced(p, indices[start : start + concurrency])
        clients += opened
        failures += failed
    return clients, failures


async def scenario_idle(p: dict[str, Any]) -> dict[str, Any]:
    """This shard's share of ``conns`` connections, opened after the ``start``
    barrier (``concurrency`` handshakes at a time), each synced, then left idle until
    the driver, at the ``connected`` barrier, has read the server's memory."""
    await barrier("start")
    started = time.perf_counter()
    clients, failures = await open_gated(p, my_connections(p), p["concurrency"])
    connect_s = time.perf_counter() - started
    await barrier("connected")
    await close_all(clients)
    return {
        "conns": len(clients),
        "connect_s": connect_s,
        "failures": failures[:5],
        "failed": len(failures),
    }


async def scenario_storm(p: dict[str, Any]) -> dict[str, Any]:
    """After the driver's go, this shard's share of ``conns`` connections in waves:
    every wave of ``wave`` connections (this shard's share of it) opens at once, and
    the next starts when all of it synced. Reports when the last synced, from the
    go, and each wave's time."""
    go = await barrier("ready")
    clients: list[YClient] = []
    failures: list[str] = []
    waves_s = []
    for first in range(0, p["conns"], p["wave"]):
        started = time.perf_counter()
        opened, failed = await open_synced(p, my_connections(p, first, first + p["wave"]))
        waves_s.append(time.perf_counter() - started)
        clients += opened
        failures += failed
    synced_s = time.perf_counter() - go
    await barrier("synced")
    await close_all(clients)
    return {
        "conns": len(clients),
        "synced_s": synced_s,
        "waves_s": waves_s,
        "failures": failures[:5],
        "failed": len(failures),
    }


async def scenario_probe(p: dict[str, Any]) -> dict[str, Any]:
    """One y-websocket connection of its own (document ``{prefix}-probe``) that sends
    a WebSocket ping every PING_EVERY_S, whether or not the previous pong came back,
    and records each round trip: for ``baseline_s`` before the ``ready`` barrier (the
    idle server), then from the go until the driver says go after ``synced``."""
    client = await YClient.open(yjs_url(p["port"], f"{p['prefix']}-probe"))
    await asyncio.wait_for(client.synced.wait(), SYNC_TIMEOUT_S)
    idle_ms: list[float] = []
    pinger = asyncio.create_task(ping_every(client, idle_ms))
    await asyncio.sleep(p["baseline_s"])
    pinger.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await pinger
    await barrier("ready")
    storm_ms: list[float] = []
    pinger = asyncio.create_task(ping_every(client, storm_ms))
    await barrier("synced")
    pinger.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await pinger
    await close_all([client])
    return {
        "idle": latency_summary(idle_ms),
        "storm": latency_summary(storm_ms),
        "pings": len(storm_ms),
    }


async def ping_every(client: YClient, rtts_ms: list[float]) -> None:
    """Ping every PING_EVERY_S until cancelled; each pong's round trip, in ms, goes
    to ``rtts_ms`` as it arrives (a ping unanswered after PING_TIMEOUT_S: inf)."""
    waiting: set[asyncio.Task[None]] = set()

    async def one() -> None:
        try:
            pong = await client.ws.ping()
            rtts_ms.append(1000 * await asyncio.wait_for(pong, PING_TIMEOUT_S))
        except TimeoutError:
            rtts_ms.append(float("inf"))

    try:
        next_at = time.perf_counter()
        while True:
            task = asyncio.create_task(one())
            waiting.add(task)
            task.add_done_callback(waiting.discard)
            next_at += PING_EVERY_S
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    finally:
        for task in list(waiting):
            task.cancel()
