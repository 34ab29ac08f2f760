"""Durable acknowledged updates: many writers on one document over collab's native
protocol, each update counted when its ack (sent once it is stored) arrives."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any

from ..loadgen.native import NativeClient, OnAck
from ..loadgen.updates import CHUNK, AppendRun, new_client_id
from ..loadgen.yjs import check_document, close_all, yjs_url
from ..sampler import Usage, latency_summary, sample_durable


class Writers:
    """W native connections on one document, each appending its own text run, with
    per-writer counts of what was sent and acknowledged, every seq acknowledged,
    and the send time of the updates whose time to ack is measured."""

    def __init__(self, p: dict[str, Any], doc: str) -> None:
        self.port, self.doc, self.count = p["port"], doc, p["writers"]
        self.runs = [AppendRun(new_client_id()) for _ in range(self.count)]
        self.clients: list[NativeClient] = []
        self.sent = [0] * self.count
        self.acked = [0] * self.count
        self.seqs: set[int] = set()
        self.doubled = 0  # acks naming a seq another ack already named
        self.wake = [asyncio.Event() for _ in range(self.count)]
        self.sent_at: list[dict[int, float]] = [{} for _ in range(self.count)]
        self.latencies_ms: list[float] = []

    async def open(self) -> None:
        gate = asyncio.Semaphore(16)

        async def one(k: int) -> NativeClient:
            async with gate:
                client = await NativeClient.open(self.port, f"bench-writer-{k}", self._on_ack(k))
                await client.subscribe(self.doc)
                return client

        self.clients = list(await asyncio.gather(*(one(k) for k in range(self.count))))

    def _on_ack(self, k: int) -> OnAck:
        def on_ack(ref: int, seq: int, arrived: float) -> None:
            self.acked[k] += 1
            if seq in self.seqs:
                self.doubled += 1
            self.seqs.add(seq)
            sent = self.sent_at[k].pop(ref, None)
            if sent is not None:
                self.latencies_ms.append(1000 * (arrived - sent))
            self.wake[k].set()

        return on_ack

    async def send(self, k: int, *, timed: bool = False) -> None:
        ref = self.sent[k]
        frame = NativeClient.update_message(self.doc, ref, self.runs[k].update(ref))
        self.sent[k] += 1
        if timed:
            self.sent_at[k][ref] = time.perf_counter()
        await self.clients[k].send(frame)

    @property
    def total_acked(self) -> int:
        return sum(self.acked)

    @property
    def errors(self) -> int:
        return sum(c.errors for c in self.clients)

    async def drain(self, timeout_s: float) -> bool:
        """Wait until every update sent is acknowledged (or refused)."""
        deadline = time.perf_counter() + timeout_s
        while self.total_acked + self.errors < sum(self.sent):
            if time.perf_counter() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True


async def scenario_durable(p: dict[str, Any]) -> dict[str, Any]:
    """W writers on one document over the native protocol. Every writer receives
    every other writer's updates too (the server relays each to the W - 1 others),
    so the load generator reads W - 1 frames per update: its CPU column says when
    it, not the server, is the limit.

    (a) Each writer keeps at most ``window`` unacknowledged updates; after a warm-up,
    acked/s is the acks received in ``duration`` seconds. (b) At half that rate,
    open loop (update i from writer i mod W at its fixed time, whatever the acks),
    the time from handing each update to the socket to its ack.

    Convergence: every update acknowledged, no error, the acks' seqs gap-free and
    each named once, the database holding exactly that many more updates, and a
    fresh client's copy holding each writer's appends exactly once."""
    doc = f"durable-{random.getrandbits(32):08x}"
    writers = Writers(p, doc)
    durable_before, _ = await sample_durable(p["probe"])
    await writers.open()
    stop = asyncio.Event()

    async def write_windowed(k: int) -> None:
        while not stop.is_set():
            if writers.sent[k] - writers.acked[k] >= p["window"]:
                writers.wake[k].clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(writers.wake[k].wait(), 1.0)
                continue
            await writers.send(k)

    tasks = [asyncio.create_task(write_windowed(k)) for k in range(writers.count)]
    await asyncio.sleep(p["warmup"])
    acked_0, usage = writers.total_acked, Usage(p["pid"])
    started = time.perf_counter()
    await asyncio.sleep(p["duration"])
    acked_per_s = (writers.total_acked - acked_0) / (time.perf_counter() - started)
    cpu = usage.report()
    stop.set()
    await asyncio.gather(*tasks)
    drained = await writers.drain(60)

    half_rate = acked_per_s / 2
    timed = int(half_rate * p["duration"])
    usage = Usage(p["pid"])
    start = time.perf_counter() + 0.05
    for i in range(timed):
        delay = start + i / half_rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await writers.send(i % writers.count, timed=True)
    drained = await writers.drain(60) and drained
    cpu_half = usage.report()

    durable_after, _ = await sample_durable(p["probe"])
    total = sum(writers.sent)
    problems = []
    if not drained or writers.total_acked != total:
        problems.append(f"{total - writers.total_acked} of {total} not acked")
    if writers.errors:
        examples = [e for c in writers.clients for e in c.first_errors][:2]
        problems.append(f"{writers.errors} errors, e.g. {examples}"[:300])
    if writers.doubled or len(writers.seqs) != max(writers.seqs, default=0):
        problems.append(f"seqs not 1..{len(writers.seqs)} once each")
    if (
        durable_before is not None
        and durable_after is not None
        and durable_after - durable_before != writers.total_acked
    ):
        problems.append(f"database +{durable_after - durable_before}")
    found = await check_document(yjs_url(p["port"], doc))
    if found is None:
        problems.append("no sync")
    elif len(found.text) != len(CHUNK) * total or any(
        found.updates_of(run.client, len(CHUNK)) != writers.sent[k]
        for k, run in enumerate(writers.runs)
    ):
        problems.append("document differs from what was sent")
    await close_all(writers.clients)
    return {
        "writers": writers.count,
        "window": p["window"],
        "acked_per_s": acked_per_s,
        "server_cpu_ms_per_1k": (
            1000 * 10 * cpu["server_cpu_pct"] / acked_per_s if acked_per_s else float("nan")
        ),
        **cpu,
        "half_rate": half_rate,
        "timed": len(writers.latencies_ms),
        **latency_summary(writers.latencies_ms),
        "half_server_cpu_pct": cpu_half["server_cpu_pct"],
        "half_client_cpu_pct": cpu_half["client_cpu_pct"],
        "converged": "; ".join(problems) or "yes",
    }
