"""100 MB through one document: past a reader that stopped reading (``stalled``), and
from one writer that does not wait for anything (``fastwriter``). Each update
replaces the document's text with a new big value (``ReplaceRun``), so the document
stays one value long and what the server's memory grows by is what it buffers."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from websockets.exceptions import ConnectionClosed

from ..loadgen.native import NativeClient
from ..loadgen.updates import ReplaceRun, new_client_id
from ..loadgen.yjs import (
    ClockCounter,
    YClient,
    check_document,
    close_all,
    open_many,
    update_message,
    yjs_url,
)
from ..sampler import RssPeak, Usage, sample_durable, wait_durable, wait_quiet


def flood(p: dict[str, Any], name: str) -> tuple[str, ReplaceRun, int]:
    """A new document, the run that floods it, and how many updates make the flood."""
    doc = f"{name}-{random.getrandbits(32):08x}"
    return doc, ReplaceRun(new_client_id(), p["value_bytes"]), p["total_bytes"] // p["value_bytes"]


async def holds_exactly(port: int, doc: str, run: ReplaceRun, count: int) -> bool:
    """Whether a fresh client's copy holds all ``count`` replacements, each once, and
    so the last value."""
    found = await check_document(yjs_url(port, doc))
    return (
        found is not None
        and found.updates_of(run.client, run.step) == count
        and found.text == run.value(count - 1)
    )


def bounded(rss: RssPeak, bound_mib: float | None) -> str:
    if bound_mib is None:
        return "-"
    return "yes" if rss.report()["rss_growth_mib"] <= bound_mib else "NO"


async def scenario_stalled(p: dict[str, Any]) -> dict[str, Any]:
    """A reader syncs the document over y-websocket and then stops reading its
    socket, while a writer sends ``total_bytes`` of updates, paced by an observer
    that reads along (at most ``window`` updates unseen). Then the stalled reader
    reads again: did the server keep everything for it, or close it (collab: 1013,
    past its ``outbound_queue_bytes``) so that it resyncs? Server RSS growth is the
    peak during the flood less the RSS before it.

    Convergence: the observer received every update, and a fresh client (the
    resync) finds exactly all of them."""
    doc, run, count = flood(p, "stalled")
    observed, stalled_seen = ClockCounter(run.step), ClockCounter(run.step)
    observed.watch(run.client)
    stalled_seen.watch(run.client)
    counters = [observed, stalled_seen, None]
    observer, stalled, writer = await open_many(
        lambda _: yjs_url(p["port"], doc), 3, lambda i: counters[i]
    )
    stalled.stop_reading()
    await wait_quiet(p["pid"])
    usage = Usage(p["pid"])
    started = time.perf_counter()
    async with RssPeak(p["pid"]) as rss:
        for i in range(count):
            await observed.within_window(run.client, i, p["window"])
            await writer.send(update_message(run.next_update()))
        delivered = await observed.wait_for(run.client, count, 60)
        write_s = time.perf_counter() - started
        cpu = usage.report()
    stalled.resume_reading()
    got_all = asyncio.create_task(stalled_seen.wait_for(run.client, count, 60))
    closed = asyncio.create_task(stalled.closed.wait())
    await asyncio.wait([got_all, closed], timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if stalled_seen.seen[run.client] == count:
        outcome = "kept everything for it"
    elif stalled.closed.is_set():
        code = stalled.close_code
        outcome = f"closed {code}" if code is not None else "dropped, no close frame"
    else:
        outcome = f"open, {stalled_seen.seen[run.client]}/{count} after 60 s"
    got_all.cancel()
    closed.cancel()
    converged = delivered and await holds_exactly(p["port"], doc, run, count)
    await close_all([observer, stalled, writer])
    return {
        "updates": count,
        "mb": count * run.step / 1e6,
        "write_s": write_s,
        **rss.report(),
        "bound_mib": p.get("bound_mib"),
        "within_bound": bounded(rss, p.get("bound_mib")),
        "stalled_reader": outcome,
        **cpu,
        "converged": "yes" if converged else "NO",
    }


async def scenario_fastwriter(p: dict[str, Any]) -> dict[str, Any]:
    """One writer sends ``total_bytes`` of updates as fast as its socket takes them,
    waiting for nothing, over ``protocol`` "native" (each update acknowledged once
    stored, or refused with an error) or "yjs" (counted as an observer receives
    them; a server may also close the writer). Reports the server's RSS growth, the
    updates per second until the last was acknowledged (native) or relayed (yjs),
    how long the database then needed to hold them all, and what was refused or lost.

    Convergence: nothing refused or lost, and a fresh client finds exactly every
    update."""
    doc, run, count = flood(p, "fast")
    observed = ClockCounter(run.step)
    observed.watch(run.client)
    observer = (await open_many(lambda _: yjs_url(p["port"], doc), 1, lambda _: observed))[0]
    acked: list[int] = []
    native = p["protocol"] == "native"
    if native:
        client: NativeClient | YClient = await NativeClient.open(
            p["port"], "bench-fast-writer", lambda _ref, seq, _arrived: acked.append(seq)
        )
        await client.subscribe(doc)
    else:
        client = (await open_many(lambda _: yjs_url(p["port"], doc), 1))[0]

    def frame(i: int) -> bytes:
        if native:
            return NativeClient.update_message(doc, i, run.next_update())
        return update_message(run.next_update())

    def accounted() -> int:
        """Updates acknowledged or refused (native), or relayed to the observer (yjs)."""
        if isinstance(client, NativeClient):
            return len(acked) + client.errors
        return observed.seen[run.client]

    await wait_quiet(p["pid"])
    durable_before, _ = await sample_durable(p["probe"])
    usage = Usage(p["pid"])
    started = time.perf_counter()
    sent = 0
    async with RssPeak(p["pid"]) as rss:
        try:
            for i in range(count):
                await client.send(frame(i))
                sent += 1
        except ConnectionClosed:
            pass  # the server closed the writer: reported below
        deadline = time.perf_counter() + p["catch_up_s"]
        while accounted() < sent and not client.closed.is_set():
            if time.perf_counter() > deadline:
                break
            await asyncio.sleep(0.02)
        finished_s = time.perf_counter() - started
        cpu = usage.report()
    done_count = len(acked) if native else observed.seen[run.client]
    durable_s = None
    if durable_before is not None:
        waited = await wait_durable(p["probe"], durable_before + done_count, p["catch_up_s"])
        durable_s = None if waited is None else time.perf_counter() - started
    refused = client.errors if isinstance(client, NativeClient) else 0
    closed = f"closed {client.close_code}" if client.closed.is_set() else "no"
    converged = (
        sent == count
        and done_count == count
        and refused == 0
        and (not native or sorted(acked) == list(range(acked[0], acked[0] + count)))
        and await holds_exactly(p["port"], doc, run, count)
    )
    await close_all([observer, client])
    return {
        "protocol": p["protocol"],
        "updates": count,
        "sent": sent,
        "mb": sent * run.step / 1e6,
        "done_per_s": done_count / finished_s,
        "mb_per_s": done_count * run.step / 1e6 / finished_s,
        "durable_s": durable_s,
        **rss.report(),
        "refused": refused,
        "lost": sent - done_count - refused,
        "writer_closed": closed,
        **cpu,
        "converged": "yes" if converged else "NO",
    }
