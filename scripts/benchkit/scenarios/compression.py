"""Bytes on the wire and server CPU, with and without permessage-deflate: the first
sync of a large document to a new peer, and typing to 10 peers.

Bytes are the kernel's count for each client's TCP socket (``Connection.tcp_bytes``:
TCP payload, so WebSocket framing and the HTTP upgrade included, IP and TCP headers
not). The driver runs this scenario twice per server: with ``deflate`` false (no
client offers permessage-deflate) and true (every measured client offers it, and the
server was started with its setting for it, where it has one); each row says whether
it was negotiated."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from ..loadgen.updates import TEXT_NAME, ProseRun, new_client_id
from ..loadgen.yjs import (
    ClockCounter,
    YClient,
    check_document,
    close_all,
    open_many,
    update_message,
    yjs_url,
)
from ..sampler import CLK_TCK, cpu_ticks, latency_summary, wait_quiet
from .rooms import Room, drain, open_rooms

SEED_WINDOW = 4  # big appends the seeding writer may have unseen by its observer
SYNC_TIMEOUT_S = 120.0
TYPING_STEP = 8  # characters per typed update, as in every other scenario


async def scenario_compression(p: dict[str, Any]) -> dict[str, Any]:
    """(a) A writer stores a ``doc_bytes`` text in ``chunk_bytes`` appends of prose;
    then ``sync_peers`` new peers, one after another, sync the whole document: bytes
    each received, server CPU and time from the connect until its copy holds the
    whole text. (b) One writer types ``typing_updates`` 8-character updates of prose
    to ``typing_readers`` readers, each update sent once the previous one reached
    every reader: bytes the readers received and the writer sent and received, and
    server CPU, per delivery.

    Convergence: each new peer's copy is exactly the text written; every reader
    received every typed update, in order; a fresh client's copy of the typed
    document is exactly the text typed."""
    problems: list[str] = []
    sync = await initial_sync(p, problems)
    typing = await typing_to_peers(p, problems)
    return {**sync, **typing, "problems": problems}


async def initial_sync(p: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    from pycrdt import Doc, Text

    port, pid = p["port"], p["pid"]
    doc = f"compress-sync-{random.getrandbits(32):08x}"
    count = max(1, p["doc_bytes"] // p["chunk_bytes"])
    run = ProseRun(new_client_id(), p["chunk_bytes"], count)
    observed = ClockCounter(run.step)
    observed.watch(run.client)
    observer, writer = await open_many(
        lambda _: yjs_url(port, doc), 2, lambda i: observed if i == 0 else None
    )
    for i in range(count):
        await observed.within_window(run.client, i, SEED_WINDOW)
        await writer.send(update_message(run.update(i)))
    await observed.within_window(run.client, count, 1)
    await close_all([writer])  # the observer keeps the document loaded
    received, sent, cpu_s, times_s = [], [], [], []
    negotiated = set()
    for _ in range(p["sync_peers"]):
        await wait_quiet(pid)
        copy = Doc()
        text = copy.get(TEXT_NAME, type=Text)
        complete = asyncio.Event()

        def on_update(
            payload: bytes,
            _arrived: float,
            copy: Doc = copy,
            text: Text = text,
            complete: asyncio.Event = complete,
        ) -> None:
            copy.apply_update(payload)
            if len(text) >= len(run.text):
                complete.set()

        ticks = cpu_ticks(pid)
        started = time.perf_counter()
        peer = await YClient.open(yjs_url(port, doc), on_update, deflate=p["deflate"])
        try:
            await asyncio.wait_for(complete.wait(), SYNC_TIMEOUT_S)
        except TimeoutError:
            problems.append(f"a new peer had {len(text)} of {len(run.text)} characters")
        times_s.append(time.perf_counter() - started)
        cpu_s.append((cpu_ticks(pid) - ticks) / CLK_TCK)
        got, gave = peer.tcp_bytes()
        received.append(got)
        sent.append(gave)
        negotiated.add(peer.deflated)
        if str(text) != run.text:
            problems.append("a new peer's copy differs from the text written")
        await close_all([peer])
    await close_all([observer])
    n = len(received)
    return {
        "doc_mib": len(run.text) / 2**20,
        "sync_negotiated": "/".join("yes" if d else "no" for d in sorted(negotiated)),
        "sync_wire_mib": sum(received) / n / 2**20,
        "sync_sent_kib": sum(sent) / n / 1024,
        "sync_ratio": sum(received) / n / len(run.text),
        "sync_ms": 1000 * sum(times_s) / n,
        "sync_cpu_ms": 1000 * sum(cpu_s) / n,
    }


async def typing_to_peers(p: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    port, pid, updates = p["port"], p["pid"], p["typing_updates"]
    doc = f"compress-typing-{random.getrandbits(32):08x}"
    room = Room(
        doc, p["typing_readers"] + 1, 1, lambda: ProseRun(new_client_id(), TYPING_STEP, updates)
    )
    await open_rooms(port, [room], deflate=p["deflate"])
    room.window_start, room.window_end = 0.0, float("inf")  # count every delivery
    await wait_quiet(pid)
    before = [client.tcp_bytes() for client in room.clients]
    ticks = cpu_ticks(pid)
    started = time.perf_counter()
    await room.write(0, float("inf"), window=1, count=updates)
    if not await drain([room], 30):
        problems.append("typing: not every update reached every reader")
    elapsed = time.perf_counter() - started
    cpu_s = (cpu_ticks(pid) - ticks) / CLK_TCK
    after = [client.tcp_bytes() for client in room.clients]
    readers_in = sum(a[0] - b[0] for a, b in zip(after[1:], before[1:], strict=True))
    writer_in, writer_out = after[0][0] - before[0][0], after[0][1] - before[0][1]
    problems += room.problems()
    run = room.runs[0]
    found = await check_document(yjs_url(port, doc))
    if found is None or found.text != run.text[: updates * TYPING_STEP]:
        problems.append("typing: a fresh client's copy differs from the text typed")
    negotiated = {client.deflated for client in room.clients}
    await close_all(room.clients)
    payload = sum(len(update_message(run.update(i))) for i in range(updates))
    deliveries = room.delivered or 1
    return {
        "typing_negotiated": "/".join("yes" if d else "no" for d in sorted(negotiated)),
        "typing_deliveries": room.delivered,
        "typing_message_b": payload / updates,
        "typing_wire_b": readers_in / deliveries,
        "typing_writer_out_b": writer_out / updates,
        "typing_writer_in_b": writer_in / updates,
        "typing_cpu_us": 1e6 * cpu_s / deliveries,
        "typing_updates_per_s": updates / elapsed,
        **{f"typing_{k}": v for k, v in latency_summary(room.latencies_ms).items()},
    }
