"""Throughput: K writers appending as fast as a window lets them, over y-websocket."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any

from ..loadgen.updates import CHUNK, AppendRun, new_client_id
from ..loadgen.yjs import (
    ClockCounter,
    check_document,
    close_all,
    open_many,
    update_message,
    yjs_url,
)
from ..sampler import Usage, sample_durable, wait_durable


async def scenario_throughput(p: dict[str, Any]) -> dict[str, Any]:
    """K writers append as fast as they may for ``duration`` seconds, on K documents
    or on one shared document. Flow control: a writer keeps at most ``window``
    appends that an observer connection on its document has not yet received, so
    what is counted is what the server applied and relayed, not what sits in
    socket buffers. Accepted/s = appends the observers received in the window;
    durable/s = rows the server's database gained in the window. At the end, a
    fresh client's copy of each document must hold every append the observers
    counted (``converged``)."""
    writers, shared, window = p["writers"], p["shared"], p["window"]
    tag = f"{random.getrandbits(32):08x}"
    docs = [f"tp-shared-{tag}"] if shared else [f"tp-{tag}-{k}" for k in range(writers)]
    counters = [ClockCounter(len(CHUNK)) for _ in docs]
    observers = await open_many(
        lambda i: yjs_url(p["port"], docs[i]), len(docs), lambda i: counters[i]
    )
    runs = [AppendRun(new_client_id()) for _ in range(writers)]

    def doc_of(k: int) -> int:
        return 0 if shared else k

    wake = [counters[doc_of(k)].watch(run.client) for k, run in enumerate(runs)]
    clients = await open_many(lambda k: yjs_url(p["port"], docs[doc_of(k)]), writers)
    stop = asyncio.Event()
    sent = [0] * writers

    async def write(k: int) -> None:
        run, client, counter, event = runs[k], clients[k], counters[doc_of(k)], wake[k]
        i = 0
        while not stop.is_set():
            if i - counter.seen[run.client] >= window:
                event.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), 1.0)
                continue
            await client.send(update_message(run.update(i)))
            i += 1
            sent[k] = i

    durable_start, _ = await sample_durable(p["probe"])
    tasks = [asyncio.create_task(write(k)) for k in range(writers)]
    await asyncio.sleep(p["warmup"])
    seen_0 = sum(c.total for c in counters)
    durable_0 = asyncio.create_task(sample_durable(p["probe"]))
    usage = Usage(p["pid"])
    started = time.perf_counter()
    await asyncio.sleep(p["duration"])
    seen_1 = sum(c.total for c in counters)
    durable_1 = asyncio.create_task(sample_durable(p["probe"]))
    elapsed = time.perf_counter() - started
    cpu = usage.report()
    stop.set()
    await asyncio.gather(*tasks)
    accepted = (seen_1 - seen_0) / elapsed
    (count_0, t_0), (count_1, t_1) = await durable_0, await durable_1
    durable = None
    if count_0 is not None and count_1 is not None:
        durable = (count_1 - count_0) / (t_1 - t_0)
    # Every append sent reaches the observers (the last window's too).
    delivered = all(
        await asyncio.gather(
            *(counters[doc_of(k)].wait_for(run.client, sent[k], 30) for k, run in enumerate(runs))
        )
    )
    # What the server relayed but had not yet stored at the end of the window, and
    # how long it then needs to store it (clients still connected, no new load).
    relayed = sum(c.total for c in counters)
    backlog = catch_up = None
    if durable_start is not None and count_1 is not None:
        backlog = max(0, durable_start + seen_1 - count_1)
        catch_up = await wait_durable(p["probe"], durable_start + relayed, p["catch_up_s"])
        if catch_up is None:
            catch_up = float("inf")
    # Checked while the observers keep the documents loaded.
    converged = delivered and await converges(
        p["port"], [(docs[doc_of(k)], run.client, sent[k]) for k, run in enumerate(runs)]
    )
    await close_all([*observers, *clients])
    return {
        "writers": writers,
        "shared": shared,
        "accepted_per_s": accepted,
        "durable_per_s": durable,
        "durable_backlog": backlog,
        "durable_catch_up_s": catch_up,
        "unparsed": sum(c.unparsed for c in counters),
        "server_cpu_ms_per_1k": (
            1000 * 10 * cpu["server_cpu_pct"] / accepted if accepted else float("nan")
        ),
        "converged": "yes" if converged else "NO",
        **cpu,
    }


async def converges(port: int, written: list[tuple[str, int, int]]) -> bool:
    """Whether each document, as a fresh client syncs it, holds exactly the appends
    of each ``(document, writer client, appends sent)``: every writer's clock at its
    count, and the text as long as all of them together."""
    expected: dict[str, list[tuple[int, int]]] = {}
    for doc, client, count in written:
        expected.setdefault(doc, []).append((client, count))
    for doc, writers in expected.items():
        found = await check_document(yjs_url(port, doc))
        if found is None:
            return False
        if any(found.updates_of(client, len(CHUNK)) != count for client, count in writers):
            return False
        if len(found.text) != len(CHUNK) * sum(count for _, count in writers):
            return False
    return True
