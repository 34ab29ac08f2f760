"""Fan-out latency: one writer, N readers on one document (also across two server
processes on one store: the cross-instance lag)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any

from ..loadgen.updates import AppendRun, Unparsed, new_client_id, update_ranges
from ..loadgen.yjs import OnUpdate, YClient, close_all, open_many, update_message, yjs_url
from ..sampler import Usage, latency_summary


async def scenario_latency(p: dict[str, Any]) -> dict[str, Any]:
    """1 writer + N readers on one document; the writer appends at a fixed rate and
    each reader timestamps each append's arrival. Latency = arrival at the reader -
    the moment the writer handed the frame to its socket, so it includes the
    server's decode, apply, persistence hand-off and fan-out to every reader.
    With ``writer_port``, the writer is on another server process on the same store
    (the cross-instance lag)."""
    readers, count, rate = p["readers"], p["updates"], p["rate"]
    doc = f"latency-{readers}-{random.getrandbits(32):08x}"
    run = AppendRun(new_client_id())
    frames = [update_message(run.update(i)) for i in range(count)]
    arrivals = [[0.0] * count for _ in range(readers)]
    finished: list[int] = []  # readers that received the last append
    everyone = asyncio.Event()

    def on_update_for(r: int) -> OnUpdate:
        mine = arrivals[r]

        def on_update(payload: bytes, arrived: float) -> None:
            try:
                ranges = update_ranges(payload)
            except (Unparsed, IndexError):
                return
            for client, start, end in ranges:
                if client == run.client:
                    for i in range(start // run.step, min(count, end // run.step)):
                        if not mine[i]:
                            mine[i] = arrived
                            if i == count - 1:
                                finished.append(r)
                                if len(finished) == readers:
                                    everyone.set()

        return on_update

    clients = await open_many(lambda _: yjs_url(p["port"], doc), readers, on_update_for)
    writer = await YClient.open(yjs_url(p.get("writer_port", p["port"]), doc))
    await asyncio.wait_for(writer.synced.wait(), 30)
    await asyncio.sleep(0.2)
    sent = [0.0] * count
    usage = Usage(p["pid"])
    start = time.perf_counter() + 0.05
    for i, frame in enumerate(frames):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent[i] = time.perf_counter()
        await writer.send(frame)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(everyone.wait(), 10)
    await asyncio.sleep(0.1)  # stragglers before the last one
    cpu = usage.report()
    latencies = [1000 * (row[i] - sent[i]) for row in arrivals for i in range(count) if row[i] > 0]
    await close_all([*clients, writer])
    return {
        "readers": readers,
        "updates": count,
        "rate": rate,
        "delivered": len(latencies),
        "missing": readers * count - len(latencies),
        **latency_summary(latencies),
        **cpu,
    }
