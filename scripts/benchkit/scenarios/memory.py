"""Memory: idle connections, then a burst of fan-out."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from ..loadgen.updates import CHUNK, AppendRun, new_client_id
from ..loadgen.yjs import (
    ClockCounter,
    OnUpdate,
    YClient,
    close_all,
    open_many,
    update_message,
    yjs_url,
)
from ..sampler import rss_kib, wait_quiet

# Appends a writer may have sent that its document's observer has not received.
SEED_WINDOW = 64


async def write_and_observe(writer: YClient, observer: ClockCounter, count: int) -> AppendRun:
    """Append ``count`` updates through ``writer`` with a window of SEED_WINDOW,
    until the observer has them all."""
    run = AppendRun(new_client_id())
    observer.watch(run.client)
    for i in range(count):
        await observer.within_window(run.client, i, SEED_WINDOW)
        await writer.send(update_message(run.update(i)))
    await observer.within_window(run.client, count, 1)
    return run


async def scenario_memory(p: dict[str, Any]) -> dict[str, Any]:
    """RSS of the server: idle; with C synced, idle connections spread evenly over D
    documents; and after one writer per document appended U updates, which every
    other connection on the document received (RSS is a high-water mark: what a
    burst of fan-out allocated and the process kept counts too). Convergence:
    each document's observer received every append (``write_and_observe``)."""
    pid, docs, conns, updates = p["pid"], p["docs"], p["conns"], p["updates"]
    await wait_quiet(pid)
    rss_idle = rss_kib(pid)
    per_doc = max(2, conns // docs)
    names = [f"mem-{random.getrandbits(32):08x}-{d}" for d in range(docs)]
    counters = [ClockCounter(len(CHUNK)) for _ in names]

    def url_for(i: int) -> str:
        return yjs_url(p["port"], names[i % docs])

    def counter_for(i: int) -> OnUpdate | None:
        # Connection d + docs is the observer of document d.
        return counters[i % docs] if docs <= i < 2 * docs else None

    clients = await open_many(url_for, per_doc * docs, counter_for, concurrency=64)
    await wait_quiet(pid)
    rss_connected = rss_kib(pid)
    started = time.perf_counter()
    await asyncio.gather(
        *(write_and_observe(clients[d], counters[d], updates) for d in range(docs))
    )
    fill_s = time.perf_counter() - started
    await wait_quiet(pid)
    rss_loaded = rss_kib(pid)
    await close_all(clients)
    return {
        "docs": docs,
        "conns": per_doc * docs,
        "updates_per_doc": updates,
        "rss_idle_mib": rss_idle / 1024,
        "rss_connected_mib": rss_connected / 1024,
        "kib_per_conn": (rss_connected - rss_idle) / (per_doc * docs),
        "rss_loaded_mib": rss_loaded / 1024,
        "fill_delta_mib": (rss_loaded - rss_connected) / 1024,
        "fill_s": fill_s,
    }
