"""Scenarios on a stored document: seeding it, loading it cold after a restart, and
reading its history."""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import time
from typing import Any

from .. import HOST
from ..loadgen.updates import CHUNK, TEXT_NAME
from ..loadgen.yjs import ClockCounter, YClient, close_all, yjs_url
from ..sampler import rss_kib, sample_durable, wait_durable, wait_quiet
from .memory import write_and_observe


async def scenario_seed(p: dict[str, Any]) -> dict[str, Any]:
    """Store ``updates`` appends in document ``doc``, then wait until the server's
    database holds them (or, where it cannot be read, until the server is idle)."""
    counter = ClockCounter(len(CHUNK))
    observer = await YClient.open(yjs_url(p["port"], p["doc"]), counter)
    writer = await YClient.open(yjs_url(p["port"], p["doc"]))
    await asyncio.wait_for(asyncio.gather(observer.synced.wait(), writer.synced.wait()), 30)
    before, _ = await sample_durable(p["probe"])
    started = time.perf_counter()
    await write_and_observe(writer, counter, p["updates"])
    relayed_s = time.perf_counter() - started
    durable_s = None
    if before is not None:
        # pycrdt-store commits each update on its own: give it time in proportion.
        durable_s = await wait_durable(p["probe"], before + p["updates"], 600 + p["updates"] / 50)
    await wait_quiet(p["pid"])
    stored, _ = await sample_durable(p["probe"])
    if stored is not None and before is not None:
        stored -= before
    await close_all([observer, writer])
    await wait_quiet(p["pid"])
    return {"relayed_s": relayed_s, "durable_s": durable_s, "stored": stored}


async def time_to_sync(p: dict[str, Any], expected_chars: int) -> tuple[float, int]:
    """From the start of the TCP connect until the client's document holds the
    whole text: a server that answers step 1 before its load finished (and sends
    the content later as an update) is timed until the content is there. Returns
    the time and the characters the text then has (more than expected: doubled)."""
    from pycrdt import Doc, Text

    doc = Doc()
    text = doc.get(TEXT_NAME, type=Text)
    complete = asyncio.Event()

    def on_update(payload: bytes, _arrived: float) -> None:
        doc.apply_update(payload)
        if len(text) >= expected_chars:
            complete.set()

    started = time.perf_counter()
    client = await YClient.open(yjs_url(p["port"], p["doc"]), on_update)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(complete.wait(), 120)
    elapsed = time.perf_counter() - started
    received = len(text)
    await close_all([client])
    return elapsed, received


async def scenario_coldload(p: dict[str, Any]) -> dict[str, Any]:
    """Time to a full sync of the seeded document on a freshly started server (the
    first client triggers the load), then again for a second client (in memory).
    Convergence: both clients' texts have exactly the seeded characters."""
    expected = p["updates"] * len(CHUNK)
    cold_s, cold_chars = await time_to_sync(p, expected)
    warm_s, warm_chars = await time_to_sync(p, expected)
    return {
        "cold_ms": 1000 * cold_s if cold_chars == expected else None,
        "warm_ms": 1000 * warm_s if warm_chars == expected else None,
        "chars": cold_chars if cold_chars != expected else warm_chars,
        "expected_chars": expected,
        "rss_mib": rss_kib(p["pid"]) / 1024,
    }


async def scenario_history(p: dict[str, Any]) -> dict[str, Any]:
    """``requests`` reads of the document's state at a random seq (collab's HTTP API,
    one at a time): time per request, and the update-log rows the server read for
    it (from its ``collab_store_log_rows_read`` metric). Each answer must name the
    seq asked for."""
    from tornado.httpclient import AsyncHTTPClient

    http = AsyncHTTPClient()
    base = f"http://{HOST}:{p['port']}"
    rng = random.Random(p.get("seed", 7))

    async def rows_read() -> float:
        body = (await http.fetch(f"{base}/metrics")).body.decode()
        for line in body.splitlines():
            if line.startswith("collab_store_log_rows_read "):
                return float(line.split()[1])
        raise RuntimeError("the server has no collab_store_log_rows_read metric")

    times_ms: list[float] = []
    rows: list[float] = []
    for _ in range(p["requests"]):
        seq = rng.randint(1, p["updates"])
        before = await rows_read()
        started = time.perf_counter()
        response = await http.fetch(f"{base}/api/documents/{p['doc']}/state?seq={seq}")
        times_ms.append(1000 * (time.perf_counter() - started))
        if response.headers["X-Collab-Seq"] != str(seq):
            raise RuntimeError(f"asked for seq {seq}, got {response.headers['X-Collab-Seq']}")
        rows.append(await rows_read() - before)
    times_ms.sort()
    rows.sort()
    return {
        "p50_ms": statistics.median(times_ms),
        "p99_ms": times_ms[min(len(times_ms) - 1, int(0.99 * len(times_ms)))],
        "max_ms": times_ms[-1],
        "rows_p50": statistics.median(rows),
        "rows_max": rows[-1],
        "requests": len(times_ms),
    }
