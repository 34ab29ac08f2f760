"""Benchmark collab's y-websocket endpoint beside other y-websocket servers.

Every server runs as its own subprocess on loopback and is driven over the same
y-websocket protocol by a separate load-generator process (this file, ``load``
command), so the figures compare servers, not protocols. Run it through
``scripts/bench``, which installs the baselines first; docs/PERFORMANCE.md says
what each scenario measures and how to read the tables.

Commands (the first is the default):

    bench.py run [options]          drive every scenario against every server
    bench.py load SCENARIO PARAMS   one scenario from the load generator (JSON out)
    bench.py serve-pycrdt --port N [--sqlite PATH]
                                    the pycrdt-websocket baseline server
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NODE_DIR = ROOT / ".bench" / "node"
NODE_SERVER = NODE_DIR / "node_modules" / "@y" / "websocket-server" / "src" / "server.js"
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# What one writer types per update: an 8-character append, like a burst of typing.
CHUNK = "abcdefgh"
TEXT_NAME = "t"

# -- the y-websocket wire format, client side -------------------------------------------
#
# Only what a load generator needs: building append updates without a CRDT in the
# loop, and finding which client clocks a received update covers (so a server that
# re-encodes or merges updates is still counted correctly).

MESSAGE_SYNC = 0
SYNC_STEP1, SYNC_STEP2, SYNC_UPDATE = 0, 1, 2
# Sync step 1 with the empty state vector, and step 2 with the empty update: what a
# fresh y-websocket provider sends, and its reply to the server's step 1.
STEP1_EMPTY = bytes([MESSAGE_SYNC, SYNC_STEP1, 1, 0])
STEP2_EMPTY = bytes([MESSAGE_SYNC, SYNC_STEP2, 2, 0, 0])


def write_var_uint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def read_var_uint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


class AppendRun:
    """The updates of one client appending CHUNK to the text TEXT_NAME, one insert per
    update, each inserted after the previous one (how a typing user's edits look).

    Encoded directly in the Yjs update v1 format: producing the i-th update with
    pycrdt costs time that grows with the text (Yrs walks to the insert position;
    50,000 appends take 14 s), which would make the load generator the bottleneck
    of long runs. ``check_append_encoding`` proves the bytes equal pycrdt's own for
    the same edits; frames are wrapped with pycrdt's ``create_update_message``."""

    def __init__(self, client_id: int) -> None:
        from pycrdt import create_update_message

        self._wrap = create_update_message
        self.client = client_id
        self._client = write_var_uint(client_id)
        self._content = write_var_uint(len(CHUNK)) + CHUNK.encode()
        self.step = len(CHUNK)  # clock units per update (one per ASCII character)

    def update(self, i: int) -> bytes:
        c = self._client
        if i == 0:
            # No left origin: the item names its parent, the root type TEXT_NAME.
            parent = b"\x01" + write_var_uint(len(TEXT_NAME)) + TEXT_NAME.encode()
            return b"\x01\x01" + c + b"\x00\x04" + parent + self._content + b"\x00"
        clock = i * self.step
        origin = c + write_var_uint(clock - 1)
        return b"\x01\x01" + c + write_var_uint(clock) + b"\x84" + origin + self._content + b"\x00"

    def frame(self, i: int) -> bytes:
        return self._wrap(self.update(i))

    def frames(self, count: int) -> list[bytes]:
        return [self.frame(i) for i in range(count)]


def check_append_encoding() -> None:
    """Fail loudly if AppendRun's bytes differ from what pycrdt produces."""
    from pycrdt import Doc, Text

    client_id = 3_000_000_123
    doc = Doc(client_id=client_id)
    text = doc.get(TEXT_NAME, type=Text)
    produced: list[bytes] = []
    doc.observe(lambda event: produced.append(event.update))
    for _ in range(20):
        text += CHUNK
    run = AppendRun(client_id)
    expected = [run.update(i) for i in range(20)]
    if produced != expected:
        raise SystemExit("bench: AppendRun does not match pycrdt's update encoding")
    check = Doc()
    for update in expected:
        check.apply_update(update)
    if str(check.get(TEXT_NAME, type=Text)) != CHUNK * 20:
        raise SystemExit("bench: AppendRun updates do not apply to the expected text")


def new_client_id() -> int:
    # Yjs client ids are 32-bit; a fresh one per run keeps runs from colliding
    # with what a persistent server already stored.
    return random.randrange(1 << 20, 1 << 32)


class Unparsed(Exception):
    pass


def update_ranges(update: bytes) -> list[tuple[int, int, int]]:
    """``(client, first clock, end clock)`` of each client's structs in a v1 update.
    Knows the struct kinds that text appends produce; raises Unparsed otherwise."""
    pos = 0
    groups, pos = read_var_uint(update, pos)
    out = []
    for _ in range(groups):
        structs, pos = read_var_uint(update, pos)
        client, pos = read_var_uint(update, pos)
        clock, pos = read_var_uint(update, pos)
        start = clock
        for _ in range(structs):
            info = update[pos]
            pos += 1
            ref = info & 0x1F
            if ref in (0, 10):  # GC and Skip: a length
                length, pos = read_var_uint(update, pos)
                clock += length
                continue
            if info & 0x80:  # left origin
                _, pos = read_var_uint(update, pos)
                _, pos = read_var_uint(update, pos)
            if info & 0x40:  # right origin
                _, pos = read_var_uint(update, pos)
                _, pos = read_var_uint(update, pos)
            if not info & 0xC0:  # parent: a root type's name or an item id
                kind, pos = read_var_uint(update, pos)
                if kind == 1:
                    length, pos = read_var_uint(update, pos)
                    pos += length
                else:
                    _, pos = read_var_uint(update, pos)
                    _, pos = read_var_uint(update, pos)
                if info & 0x20:  # parent sub (a map key)
                    length, pos = read_var_uint(update, pos)
                    pos += length
            if ref == 4:  # string: its length in UTF-16 code units
                length, pos = read_var_uint(update, pos)
                raw = update[pos : pos + length]
                pos += length
                clock += length if raw.isascii() else len(raw.decode().encode("utf-16-le")) // 2
            elif ref == 1:  # deleted content: a length
                length, pos = read_var_uint(update, pos)
                clock += length
            else:
                raise Unparsed(f"struct kind {ref}")
        out.append((client, start, clock))
    return out


def sync_payload(frame: bytes) -> bytes:
    length, pos = read_var_uint(frame, 2)
    return frame[pos : pos + length]


# -- the load generator's client ------------------------------------------------------------


class YClient:
    """A minimal y-websocket peer: sends sync step 1 at connect, answers the server's
    step 1 with an empty step 2, and hands every received update (step 2 or update
    message) to ``on_update(payload, arrival_time)``."""

    def __init__(self, ws: Any, on_update: Callable[[bytes, float], None] | None) -> None:
        self.ws = ws
        self.on_update = on_update
        self.synced = asyncio.Event()  # the server answered our step 1
        self.closed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls, url: str, on_update: Callable[[bytes, float], None] | None = None
    ) -> YClient:
        from websockets.asyncio.client import connect

        ws = await connect(
            url,
            compression=None,  # no server here compresses by default; keep it equal
            max_size=None,
            ping_interval=None,  # the servers ping; the library answers
            open_timeout=60,
            close_timeout=2,
        )
        client = cls(ws, on_update)
        client._reader = asyncio.create_task(client._read())
        await ws.send(STEP1_EMPTY)
        return client

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for frame in self.ws:
                arrived = time.perf_counter()
                if frame[0] != MESSAGE_SYNC:
                    continue  # awareness
                kind = frame[1]
                if kind == SYNC_STEP1:
                    await self.ws.send(STEP2_EMPTY)
                    continue
                if self.on_update is not None:
                    self.on_update(sync_payload(frame), arrived)
                if kind == SYNC_STEP2:
                    self.synced.set()
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()

    async def send(self, frame: bytes) -> None:
        await self.ws.send(frame)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                self._reader.cancel()
                await self._reader


async def open_many(
    url_for: Callable[[int], str],
    count: int,
    on_update_for: Callable[[int], Callable[[bytes, float], None] | None] | None = None,
    *,
    concurrency: int = 32,
) -> list[YClient]:
    """Open ``count`` synced clients, ``concurrency`` handshakes at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> YClient:
        async with gate:
            client = await YClient.open(url_for(i), on_update_for(i) if on_update_for else None)
            await asyncio.wait_for(client.synced.wait(), 60)
            return client

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def close_all(clients: Iterable[YClient]) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(c.close() for c in clients)), 10)


class ClockCounter:
    """Counts, per writer client, how many of its appends an observer has received
    (from the highest clock seen), and wakes writers waiting on their window."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.seen: dict[int, int] = {}
        self.events: dict[int, asyncio.Event] = {}
        self.unparsed = 0

    def watch(self, client: int) -> asyncio.Event:
        self.seen[client] = 0
        event = self.events[client] = asyncio.Event()
        return event

    def __call__(self, payload: bytes, _arrived: float) -> None:
        try:
            ranges = update_ranges(payload)
        except (Unparsed, IndexError):
            self.unparsed += 1
            return
        for client, _start, end in ranges:
            seen = self.seen.get(client)
            if seen is not None and end // self.step > seen:
                self.seen[client] = end // self.step
                self.events[client].set()

    @property
    def total(self) -> int:
        return sum(self.seen.values())


# -- measurements of the server process --------------------------------------------------


def cpu_ticks(pid: int) -> int:
    """User + system CPU of a process and all its threads, in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def durable_count(probe: dict[str, str] | None) -> int | None:
    """Updates the server's own database holds, read by an independent connection:
    what survives a crash, as opposed to what was relayed."""
    if probe is None:
        return None
    if probe["kind"] == "collab-mongodb":
        return mongodb_durable_count(probe["url"])
    query = {
        "collab": "SELECT coalesce(sum(head_seq), 0) FROM documents",
        "ystore": "SELECT count(*) FROM yupdates",
    }[probe["kind"]]
    path = probe["path"]
    if not os.path.exists(path):
        return 0
    for _ in range(50):
        try:
            with contextlib.closing(
                sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
            ) as c:
                return int(c.execute(query).fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return 0
            time.sleep(0.05)  # a rollback-journal writer holds the lock; try again
    return None


def mongodb_durable_count(url: str) -> int | None:
    """Updates in the MongoDB store's log (one entry per appended batch)."""
    from pymongo import MongoClient

    with MongoClient(url, serverSelectionTimeoutMS=5000) as client:
        entries = client.get_default_database().updates.find({}, {"seq": 1, "last": 1})
        return sum(entry["last"] - entry["seq"] + 1 for entry in entries)


async def wait_quiet(pid: int, *, timeout_s: float = 60.0, window_s: float = 0.5) -> float:
    """Wait until the server uses (almost) no CPU for ``window_s``; returns the wait.
    Background work (persistence, compaction) is then finished."""
    started = time.perf_counter()
    allowed = max(1, int(0.04 * window_s * CLK_TCK))  # under 4% of one core
    before = cpu_ticks(pid)
    while time.perf_counter() - started < timeout_s:
        await asyncio.sleep(window_s)
        now = cpu_ticks(pid)
        if now - before <= allowed:
            break
        before = now
    return time.perf_counter() - started


async def sample_durable(probe: dict[str, str] | None) -> tuple[int | None, float]:
    """``durable_count`` off the event loop (a locked database may make it wait),
    with the moment it was read."""
    if probe is None:
        return None, time.perf_counter()
    count = await asyncio.to_thread(durable_count, probe)
    return count, time.perf_counter()


async def wait_durable(probe: dict[str, str] | None, target: int, timeout_s: float) -> float | None:
    """Seconds until the server's database holds ``target`` updates (None: unknown,
    or not within ``timeout_s``)."""
    if probe is None:
        return None
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        count, _ = await sample_durable(probe)
        if count is not None and count >= target:
            return time.perf_counter() - started
        await asyncio.sleep(0.05)
    return None


class Usage:
    """Server and load-generator CPU over an interval, in % of one core."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.t = time.perf_counter()
        self.server = cpu_ticks(pid)
        self.client = time.process_time()

    def report(self) -> dict[str, float]:
        elapsed = time.perf_counter() - self.t
        return {
            "server_cpu_pct": 100 * (cpu_ticks(self.pid) - self.server) / CLK_TCK / elapsed,
            "client_cpu_pct": 100 * (time.process_time() - self.client) / elapsed,
        }


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


# -- scenarios (load generator side) ----------------------------------------------------------


def doc_url(params: dict[str, Any], name: str) -> str:
    return f"ws://{HOST}:{params['port']}/yjs/{name}"


async def scenario_latency(p: dict[str, Any]) -> dict[str, Any]:
    """1 writer + N readers on one document; the writer appends at a fixed rate and
    each reader timestamps each append's arrival. Latency = arrival at the reader -
    the moment the writer handed the frame to its socket, so it includes the
    server's decode, apply, persistence hand-off and fan-out to every reader."""
    readers, count, rate = p["readers"], p["updates"], p["rate"]
    doc = f"latency-{readers}-{random.getrandbits(32):08x}"
    run = AppendRun(new_client_id())
    frames = run.frames(count)
    arrivals = [[0.0] * count for _ in range(readers)]
    finished: list[int] = []  # readers that received the last append
    everyone = asyncio.Event()

    def on_update_for(r: int) -> Callable[[bytes, float], None]:
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

    clients = await open_many(lambda _: doc_url(p, doc), readers, on_update_for)
    # Cross-instance lag: the writer on another server process, on the same store.
    writer_url = doc_url({"port": p.get("writer_port", p["port"])}, doc)
    writer = await YClient.open(writer_url)
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
    expected = readers * count
    return {
        "readers": readers,
        "updates": count,
        "rate": rate,
        "delivered": len(latencies),
        "missing": expected - len(latencies),
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": max(latencies, default=float("nan")),
        **cpu,
    }


async def scenario_throughput(p: dict[str, Any]) -> dict[str, Any]:
    """K writers append as fast as they may for ``duration`` seconds, on K documents
    or on one shared document. Flow control: a writer keeps at most ``window``
    appends that an observer connection on its document has not yet received, so
    what is counted is what the server applied and relayed, not what sits in
    socket buffers. Accepted/s = appends the observers received in the window;
    durable/s = rows the server's database gained in the window."""
    writers, shared, window = p["writers"], p["shared"], p["window"]
    tag = f"{random.getrandbits(32):08x}"
    docs = [f"tp-shared-{tag}"] if shared else [f"tp-{tag}-{k}" for k in range(writers)]
    counters = [ClockCounter(len(CHUNK)) for _ in docs]
    observers = await open_many(lambda i: doc_url(p, docs[i]), len(docs), lambda i: counters[i])
    runs = [AppendRun(new_client_id()) for _ in range(writers)]
    wake = [counters[0 if shared else k].watch(run.client) for k, run in enumerate(runs)]
    clients = await open_many(lambda k: doc_url(p, docs[0 if shared else k]), writers)
    stop = asyncio.Event()
    sent = [0] * writers

    async def write(k: int) -> None:
        run, client, counter, event = runs[k], clients[k], counters[0 if shared else k], wake[k]
        i = 0
        while not stop.is_set():
            if i - counter.seen[run.client] >= window:
                event.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), 1.0)
                continue
            await client.send(run.frame(i))
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
    # What the server relayed but had not yet stored at the end of the window, and
    # how long it then needs to store it (clients still connected, no new load).
    relayed = sum(c.total for c in counters)
    backlog = catch_up = None
    if durable_start is not None and count_1 is not None:
        backlog = max(0, durable_start + seen_1 - count_1)
        catch_up = await wait_durable(p["probe"], durable_start + relayed, p["catch_up_s"])
        if catch_up is None:
            catch_up = float("inf")
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
        **cpu,
    }


async def write_and_observe(
    p: dict[str, Any], writer: YClient, observer_counter: ClockCounter, count: int
) -> AppendRun:
    """Append ``count`` updates through ``writer`` with a window of 64, until the
    observer has them all."""
    run = AppendRun(new_client_id())
    event = observer_counter.watch(run.client)
    for i in range(count):
        while i - observer_counter.seen[run.client] >= 64:
            event.clear()
            await asyncio.wait_for(event.wait(), 60)
        await writer.send(run.frame(i))
    while observer_counter.seen[run.client] < count:
        event.clear()
        await asyncio.wait_for(event.wait(), 60)
    return run


async def scenario_memory(p: dict[str, Any]) -> dict[str, Any]:
    """RSS of the server: idle; with C synced, idle connections spread evenly over D
    documents; and after one writer per document appended U updates, which every
    other connection on the document received (RSS is a high-water mark: what a
    burst of fan-out allocated and the process kept counts too)."""
    pid, docs, conns, updates = p["pid"], p["docs"], p["conns"], p["updates"]
    await wait_quiet(pid)
    rss_idle = rss_kib(pid)
    per_doc = max(2, conns // docs)
    names = [f"mem-{random.getrandbits(32):08x}-{d}" for d in range(docs)]
    counters = [ClockCounter(len(CHUNK)) for _ in names]

    def url_for(i: int) -> str:
        return doc_url(p, names[i % docs])

    def counter_for(i: int) -> Callable[[bytes, float], None] | None:
        # Connection d + docs is the observer of document d.
        return counters[i % docs] if docs <= i < 2 * docs else None

    clients = await open_many(url_for, per_doc * docs, counter_for, concurrency=64)
    await wait_quiet(pid)
    rss_connected = rss_kib(pid)
    started = time.perf_counter()
    await asyncio.gather(
        *(write_and_observe(p, clients[d], counters[d], updates) for d in range(docs))
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


async def scenario_seed(p: dict[str, Any]) -> dict[str, Any]:
    """Store ``updates`` appends in document ``doc``, then wait until the server's
    database holds them (or, where it cannot be read, until the server is idle)."""
    counter = ClockCounter(len(CHUNK))
    observer = await YClient.open(doc_url(p, p["doc"]), counter)
    writer = await YClient.open(doc_url(p, p["doc"]))
    await asyncio.wait_for(asyncio.gather(observer.synced.wait(), writer.synced.wait()), 30)
    before, _ = await sample_durable(p["probe"])
    started = time.perf_counter()
    await write_and_observe(p, writer, counter, p["updates"])
    relayed_s = time.perf_counter() - started
    durable_s = None
    if before is not None:
        durable_s = await wait_durable(p["probe"], before + p["updates"], 600)
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
    the content later as an update) is timed until the content is there."""
    from pycrdt import Doc, Text

    doc = Doc()
    text = doc.get(TEXT_NAME, type=Text)
    complete = asyncio.Event()

    def on_update(payload: bytes, _arrived: float) -> None:
        doc.apply_update(payload)
        if len(text) >= expected_chars:
            complete.set()

    started = time.perf_counter()
    client = await YClient.open(doc_url(p, p["doc"]), on_update)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(complete.wait(), 120)
    elapsed = time.perf_counter() - started
    received = len(text)
    await close_all([client])
    return elapsed, received


async def scenario_coldload(p: dict[str, Any]) -> dict[str, Any]:
    """Time to a full sync of the seeded document on a freshly started server (the
    first client triggers the load), then again for a second client (in memory)."""
    expected = p["updates"] * len(CHUNK)
    cold_s, cold_chars = await time_to_sync(p, expected)
    warm_s, warm_chars = await time_to_sync(p, expected)
    return {
        "cold_ms": 1000 * cold_s if cold_chars >= expected else None,
        "warm_ms": 1000 * warm_s if warm_chars >= expected else None,
        "chars": cold_chars,
        "expected_chars": expected,
        "rss_mib": rss_kib(p["pid"]) / 1024,
    }


async def scenario_history(p: dict[str, Any]) -> dict[str, Any]:
    """``requests`` reads of the document's state at a random seq (collab's HTTP API,
    one at a time): time per request, and the update-log rows the server read for
    it (from its ``collab_store_log_rows_read`` metric)."""
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
        assert response.headers["X-Collab-Seq"] == str(seq), (seq, response.headers)
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


SCENARIOS = {
    "history": scenario_history,
    "latency": scenario_latency,
    "throughput": scenario_throughput,
    "memory": scenario_memory,
    "seed": scenario_seed,
    "coldload": scenario_coldload,
}


def load_main(scenario: str, params_json: str) -> int:
    check_append_encoding()
    params = json.loads(params_json)
    result = asyncio.run(SCENARIOS[scenario](params))
    print(json.dumps(result))
    return 0


# -- the pycrdt-websocket baseline server --------------------------------------------------


def serve_pycrdt_main(port: int, sqlite_path: str | None) -> int:
    """pycrdt-websocket's WebsocketServer behind its ASGIServer on uvicorn (plain
    asyncio loop, no uvloop, as collab runs). With ``sqlite_path``, rooms persist
    to pycrdt-store's SQLiteYStore and load from it, as Jupyter wires them."""
    import uvicorn
    from pycrdt.websocket import ASGIServer, WebsocketServer, YRoom, exception_logger

    if sqlite_path:
        from pycrdt.store import SQLiteYStore, YDocNotFound

        class Store(SQLiteYStore):
            db_path = sqlite_path

    class Server(WebsocketServer):
        """Starts (and, with a store, first loads) each room once; the others who
        join meanwhile wait for that. Without this, pycrdt-websocket 0.16.5 leaves a
        client that joins a room while another client starts it waiting forever
        (YRoom.start holds its start lock for the room's whole life)."""

        def __init__(self) -> None:
            # With a store, rooms stay after their last client leaves: the default
            # clean-up stops the room, which cancels the updates still waiting for
            # SQLiteYStore.write (one commit each), and they are never stored.
            super().__init__(exception_handler=exception_logger, auto_clean_rooms=not sqlite_path)
            self._starting: dict[str, asyncio.Event] = {}

        async def get_room(self, name: str) -> YRoom:
            while name in self._starting:
                await self._starting[name].wait()
            room = self.rooms.get(name)
            if room is not None and room.started.is_set():
                return room
            self._starting[name] = started = asyncio.Event()
            try:
                if room is None and sqlite_path:
                    store = Store(path=name, log=self.log)
                    room = YRoom(
                        ready=False, ystore=store, exception_handler=exception_logger, log=self.log
                    )
                    self.rooms[name] = room
                    assert self._task_group is not None
                    await self._task_group.start(store.start)
                    with contextlib.suppress(YDocNotFound):
                        await store.apply_updates(room.ydoc)
                    room.ready = True  # from now on, updates are relayed and stored
                return await super().get_room(name)
            finally:
                del self._starting[name]
                started.set()

    async def main() -> None:
        websocket_server = Server()
        asgi = ASGIServer(websocket_server)

        async def app(scope: Any, receive: Any, send: Any) -> None:
            async def tolerant_send(message: Any) -> None:
                # A room broadcasts in tasks of its own; a peer that left meanwhile
                # makes uvicorn raise ClientDisconnected (an OSError), which would
                # fail the whole room in pycrdt-websocket 0.16.5, so drop the frame
                # as y-websocket's server does.
                with contextlib.suppress(OSError):
                    await send(message)

            await asgi(scope, receive, tolerant_send)

        config = uvicorn.Config(
            app,
            host=HOST,
            port=port,
            log_level="warning",
            loop="asyncio",
            http="h11",
            ws="websockets-sansio",
            ws_per_message_deflate=False,
            lifespan="off",
        )
        async with websocket_server:
            await uvicorn.Server(config).serve()

    asyncio.run(main())
    return 0


# -- the driver --------------------------------------------------------------------------------


@dataclass
class ServerSpec:
    name: str
    persists: str  # how it stores updates ("none..." when it does not)
    start: Callable[[Path, int], tuple[list[str], dict[str, str]]]  # (data dir, port)
    probe: Callable[[Path], dict[str, str] | None] = lambda _data: None
    available: Callable[[], str | None] = lambda: None  # why not, or None
    # Several processes on one store (a second one started on the same data dir).
    instances: bool = False


# The MongoDB store runs on SecantusDB, the MongoDB wire-protocol server the tests
# use (no registry here ships mongod): one per data folder, for as long as the
# server's scenarios run. --sync-on-commit: it honours journaled writes only so.
_MONGO_SERVERS: dict[Path, tuple[subprocess.Popen[bytes], int]] = {}


def mongodb_url(data: Path) -> str:
    if data not in _MONGO_SERVERS:
        port = free_port()
        secantus = shutil.which("secantusd-py") or str(Path(sys.executable).parent / "secantusd-py")
        argv = [secantus, "--host", HOST, "--port", str(port), "--sync-on-commit"]
        argv += ["--storage-path", str(data / "mongo"), "--log-level", "WARNING"]
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _MONGO_SERVERS[data] = (process, port)
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection((HOST, port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("secantusd-py did not start") from None
                time.sleep(0.05)
    _, port = _MONGO_SERVERS[data]
    return f"mongodb://{HOST}:{port}/bench?directConnection=true"


def stop_mongodb(data: Path) -> None:
    entry = _MONGO_SERVERS.pop(data, None)
    if entry is not None:
        process, _ = entry
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _needs_secantus() -> str | None:
    if shutil.which("secantusd-py") or (Path(sys.executable).parent / "secantusd-py").exists():
        return None
    return "secantusd-py is not installed (pip install -e '.[test]')"


def _collab(store: str) -> Callable[[Path, int], tuple[list[str], dict[str, str]]]:
    def start(data: Path, port: int) -> tuple[list[str], dict[str, str]]:
        if store == "sqlite":
            url = f"sqlite:///{data / 'collab.db'}"
        elif store == "mongodb":
            url = mongodb_url(data)
        else:
            url = "memory://"
        argv = [sys.executable, "-m", "collab", "serve", "--host", HOST, "--port", str(port)]
        argv += ["--store-url", url, "--log-level", "warning"]
        return argv, {}

    return start


def _yws(persist: bool) -> Callable[[Path, int], tuple[list[str], dict[str, str]]]:
    def start(data: Path, port: int) -> tuple[list[str], dict[str, str]]:
        env = {"HOST": HOST, "PORT": str(port)}
        if persist:
            env["YPERSISTENCE"] = str(data / "leveldb")
        return ["node", str(NODE_SERVER)], env

    return start


def _pycrdt(persist: bool) -> Callable[[Path, int], tuple[list[str], dict[str, str]]]:
    def start(data: Path, port: int) -> tuple[list[str], dict[str, str]]:
        argv = [sys.executable, str(Path(__file__).resolve()), "serve-pycrdt", "--port", str(port)]
        if persist:
            argv += ["--sqlite", str(data / "ystore.db")]
        return argv, {}

    return start


def _needs_node() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not NODE_SERVER.exists():
        return f"{NODE_SERVER} is missing (run scripts/bench, which installs it)"
    return None


def _needs_pycrdt_websocket() -> str | None:
    try:
        import pycrdt.websocket  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        return "pycrdt-websocket or uvicorn is not installed (run scripts/bench)"
    return None


SERVERS = {
    s.name: s
    for s in (
        ServerSpec(
            "collab-sqlite",
            "SQLite WAL, fsync per batch",
            instances=True,
            start=_collab("sqlite"),
            probe=lambda data: {"kind": "collab", "path": str(data / "collab.db")},
        ),
        ServerSpec(
            "collab-mongodb",
            "MongoDB majority+journaled writes, on SecantusDB (the test server, "
            "--sync-on-commit), not a production mongod",
            instances=True,
            start=_collab("mongodb"),
            probe=lambda data: {"kind": "collab-mongodb", "url": mongodb_url(data)},
            available=_needs_secantus,
        ),
        ServerSpec("collab-memory", "none (memory://)", _collab("memory")),
        ServerSpec("y-websocket", "none", _yws(False), available=_needs_node),
        ServerSpec("y-websocket-leveldb", "LevelDB, no fsync", _yws(True), available=_needs_node),
        ServerSpec("pycrdt-websocket", "none", _pycrdt(False), available=_needs_pycrdt_websocket),
        ServerSpec(
            "pycrdt-websocket-sqlite",
            "SQLite, commit per update",
            _pycrdt(True),
            lambda data: {"kind": "ystore", "path": str(data / "ystore.db")},
            available=_needs_pycrdt_websocket,
        ),
    )
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class RunningServer:
    def __init__(self, spec: ServerSpec, data: Path, log_path: Path) -> None:
        self.spec = spec
        self.data = data
        self.port = free_port()
        argv, env = spec.start(data, self.port)
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_listening()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _wait_listening(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        tail = self.log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{self.spec.name} did not start listening:\n{tail}")

    def stop(self) -> None:
        """SIGTERM (collab and uvicorn flush and exit; node exits at once), then
        SIGKILL after 30 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def run_load(scenario: str, params: dict[str, Any], timeout_s: float = 900) -> dict[str, Any]:
    argv = [sys.executable, str(Path(__file__).resolve()), "load", scenario, json.dumps(params)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed ({scenario}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


@dataclass
class Options:
    servers: list[str]
    scenarios: list[str]
    repeat: int
    readers: list[int]
    latency_updates: int
    latency_rate: float
    writers: int
    duration: float
    warmup: float
    window: int
    catch_up_s: float
    memory_docs: int
    memory_conns: int
    memory_updates: int
    cold_updates: int
    cold_restarts: int
    crosslag_readers: int = 10
    crosslag_updates: int = 500
    history_sizes: tuple[int, ...] = (10_000, 100_000)
    history_requests: int = 100
    results: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)

    def record(self, scenario: str, server: str, result: dict[str, Any]) -> None:
        self.results.setdefault(scenario, {}).setdefault(server, []).append(result)


def bench_server(spec: ServerSpec, o: Options, workdir: Path) -> None:
    data = workdir / f"{spec.name}-{time.time_ns()}"
    data.mkdir()
    try:
        _bench_server(spec, o, workdir, data)
    finally:
        stop_mongodb(data)


def _bench_server(spec: ServerSpec, o: Options, workdir: Path, data: Path) -> None:
    log = workdir / f"{spec.name}.log"
    probe = spec.probe(data)

    def progress(what: str) -> None:
        print(f"  {spec.name}: {what}", file=sys.stderr, flush=True)

    if {"latency", "throughput"} & set(o.scenarios):
        server = RunningServer(spec, data, log)
        try:
            base = {"port": server.port, "pid": server.pid, "probe": probe}
            if "latency" in o.scenarios:
                for n in o.readers:
                    progress(f"latency, {n} readers")
                    params = {**base, "readers": n, "updates": o.latency_updates}
                    result = run_load("latency", {**params, "rate": o.latency_rate})
                    o.record(f"latency-{n}", spec.name, result)
            if "throughput" in o.scenarios:
                for shared in (False, True):
                    progress(f"throughput, {o.writers} writers, shared={shared}")
                    params = {**base, "writers": o.writers, "shared": shared}
                    params |= {"window": o.window, "duration": o.duration, "warmup": o.warmup}
                    params["catch_up_s"] = o.catch_up_s
                    key = "throughput-shared" if shared else "throughput-docs"
                    o.record(key, spec.name, run_load("throughput", params))
        finally:
            server.stop()

    if "crosslag" in o.scenarios:
        if not spec.instances:
            o.record("crosslag", spec.name, {"na": "one process only"})
        else:
            progress(f"cross-instance lag, {o.crosslag_readers} readers")
            first = RunningServer(spec, data, log)
            second = RunningServer(spec, data, log)
            try:
                params = {"port": second.port, "pid": second.pid, "writer_port": first.port}
                params |= {"readers": o.crosslag_readers, "updates": o.crosslag_updates}
                o.record("crosslag", spec.name, run_load("latency", {**params, "rate": 100.0}))
            finally:
                second.stop()
                first.stop()

    if "history" in o.scenarios:
        if not spec.name.startswith("collab"):
            for size in o.history_sizes:
                o.record(f"history-{size}", spec.name, {"na": "no history API"})
        else:
            doc = f"history-{random.getrandbits(32):08x}"
            server = RunningServer(spec, data, log)
            try:
                params = {"port": server.port, "pid": server.pid, "probe": probe, "doc": doc}
                stored = 0
                for size in o.history_sizes:
                    progress(f"history: storing {size - stored} more updates")
                    run_load("seed", {**params, "updates": size - stored})
                    stored = size
                    progress(f"history: state at a random seq of {size}")
                    params |= {"updates": size, "requests": o.history_requests}
                    o.record(f"history-{size}", spec.name, run_load("history", params))
            finally:
                server.stop()

    if "memory" in o.scenarios:
        progress("memory")
        server = RunningServer(spec, data, log)
        try:
            params = {"port": server.port, "pid": server.pid, "probe": probe}
            params |= {"docs": o.memory_docs, "conns": o.memory_conns}
            o.record(
                "memory", spec.name, run_load("memory", {**params, "updates": o.memory_updates})
            )
        finally:
            server.stop()

    if "coldload" in o.scenarios:
        if spec.persists.startswith("none"):
            o.record("coldload", spec.name, {"na": "does not persist"})
            return
        progress(f"cold load: storing {o.cold_updates} updates")
        doc = f"cold-{random.getrandbits(32):08x}"
        server = RunningServer(spec, data, log)
        try:
            params = {"port": server.port, "pid": server.pid, "probe": probe, "doc": doc}
            seed = run_load("seed", {**params, "updates": o.cold_updates})
        finally:
            server.stop()
        loads = []
        for _ in range(o.cold_restarts):
            server = RunningServer(spec, data, log)
            try:
                params = {"port": server.port, "pid": server.pid, "probe": probe, "doc": doc}
                loads.append(run_load("coldload", {**params, "updates": o.cold_updates}))
            finally:
                server.stop()
        colds = [r["cold_ms"] for r in loads]
        summary = {
            "first_cold_ms": colds[0],
            "median_cold_ms": _median([c for c in colds if c is not None])
            if None not in colds
            else None,
            "warm_ms": _median([r["warm_ms"] for r in loads if r["warm_ms"] is not None]),
            "complete": "yes"
            if all(r["chars"] >= r["expected_chars"] for r in loads)
            else f"{min(r['chars'] for r in loads)}/{loads[0]['expected_chars']} chars",
            "seed_relayed_s": seed["relayed_s"],
            "seed_durable_s": seed["durable_s"],
            "rss_mib": _median([r["rss_mib"] for r in loads]),
        }
        o.record("coldload", spec.name, summary)


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


# -- tables --------------------------------------------------------------------------------------

Column = tuple[str, str, str]  # (heading, result key, format)

TABLES: dict[str, tuple[str, list[Column]]] = {
    "latency": (
        "Fan-out latency: 1 writer, {readers} readers, {updates} appends at {rate:g}/s "
        "(ms from send to arrival at each reader)",
        [
            ("p50 ms", "p50_ms", "{:.2f}"),
            ("p99 ms", "p99_ms", "{:.2f}"),
            ("max ms", "max_ms", "{:.2f}"),
            ("missing", "missing", "{:.0f}"),
            ("server CPU %", "server_cpu_pct", "{:.0f}"),
        ],
    ),
    "crosslag": (
        "Cross-instance lag: 1 writer on one process, {crosslag_readers} readers on another "
        "on the same store, {crosslag_updates} appends at 100/s (ms from send to arrival)",
        [
            ("p50 ms", "p50_ms", "{:.2f}"),
            ("p99 ms", "p99_ms", "{:.2f}"),
            ("max ms", "max_ms", "{:.2f}"),
            ("missing", "missing", "{:.0f}"),
            ("reader-side CPU %", "server_cpu_pct", "{:.0f}"),
        ],
    ),
    "throughput": (
        "Throughput: {writers} writers on {where}, {duration:g} s, window {window} "
        "(appends/s received by an observer; durable/s from the server's database)",
        [
            ("accepted/s", "accepted_per_s", "{:.0f}"),
            ("durable/s", "durable_per_s", "{:.0f}"),
            ("backlog", "durable_backlog", "{:.0f}"),
            ("catch-up s", "durable_catch_up_s", "{:.2f}"),
            ("server CPU %", "server_cpu_pct", "{:.0f}"),
            ("CPU ms / 1k", "server_cpu_ms_per_1k", "{:.0f}"),
            ("loadgen CPU %", "client_cpu_pct", "{:.0f}"),
        ],
    ),
    "memory": (
        "Memory (VmRSS): {conns} idle connections on {docs} documents, then {updates} "
        "appends per document relayed to every connection",
        [
            ("idle MiB", "rss_idle_mib", "{:.1f}"),
            ("connected MiB", "rss_connected_mib", "{:.1f}"),
            ("KiB / conn", "kib_per_conn", "{:.1f}"),
            ("after appends MiB", "rss_loaded_mib", "{:.1f}"),
            ("appends +MiB", "fill_delta_mib", "{:.1f}"),
            ("fill s", "fill_s", "{:.2f}"),
        ],
    ),
    "history": (
        "History: the state at a random seq of a document of {updates} updates, "
        "{requests} requests one at a time (ms per request; update-log rows read)",
        [
            ("p50 ms", "p50_ms", "{:.1f}"),
            ("p99 ms", "p99_ms", "{:.1f}"),
            ("max ms", "max_ms", "{:.1f}"),
            ("rows p50", "rows_p50", "{:.0f}"),
            ("rows max", "rows_max", "{:.0f}"),
        ],
    ),
    "coldload": (
        "Cold load: a document of {updates} stored appends, first full sync after a "
        "restart ({restarts} restarts)",
        [
            ("first ms", "first_cold_ms", "{:.1f}"),
            ("median ms", "median_cold_ms", "{:.1f}"),
            ("warm ms", "warm_ms", "{:.1f}"),
            ("complete", "complete", "{}"),
            ("RSS MiB", "rss_mib", "{:.1f}"),
            ("seed s", "seed_relayed_s", "{:.2f}"),
            ("seed durable s", "seed_durable_s", "{:.2f}"),
        ],
    ),
}


def median_result(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per key, the median over repeats of the numeric values."""
    out: dict[str, Any] = {}
    for key in runs[0]:
        values = [r.get(key) for r in runs]
        numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        out[key] = statistics.median(numbers) if numbers else values[0]
    out["runs"] = len(runs)
    return out


def print_tables(o: Options) -> None:
    print()
    print("Servers (all over the y-websocket protocol, each its own process on loopback)")
    width = max(len(name) for name in o.servers)
    for name in o.servers:
        print(f"  {name.ljust(width)}  persistence: {SERVERS[name].persists}")
    for key, per_server in o.results.items():
        family = key.split("-")[0]
        title, columns = TABLES[family]
        context = {
            "readers": key.split("-")[-1],
            "updates": o.latency_updates if family == "latency" else o.cold_updates,
            "rate": o.latency_rate,
            "writers": o.writers,
            "where": "1 shared document" if key.endswith("shared") else f"{o.writers} documents",
            "duration": o.duration,
            "window": o.window,
            "docs": o.memory_docs,
            "conns": o.memory_conns,
            "restarts": o.cold_restarts,
            "crosslag_readers": o.crosslag_readers,
            "crosslag_updates": o.crosslag_updates,
        }
        if family == "memory":
            context["updates"] = o.memory_updates
        if family == "history":
            context["updates"] = key.split("-")[-1]
            context["requests"] = o.history_requests
        print()
        print(title.format(**context))
        headings = ["server", *(c[0] for c in columns)]
        rows = []
        for name in o.servers:
            runs = per_server.get(name)
            if not runs:
                continue
            if "na" in runs[0]:
                rows.append([name, *(["n/a"] * len(columns))])
                continue
            merged = median_result(runs)
            rows.append([name, *(_fmt(merged.get(k), f) for _, k, f in columns)])
        widths = [max(len(str(x)) for x in col) for col in zip(headings, *rows, strict=True)]
        print(
            "  ".join(
                h.ljust(w) if i == 0 else h.rjust(w)
                for i, (h, w) in enumerate(zip(headings, widths, strict=True))
            )
        )
        for row in rows:
            print(
                "  ".join(
                    c.ljust(w) if i == 0 else c.rjust(w)
                    for i, (c, w) in enumerate(zip(row, widths, strict=True))
                )
            )


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value != value:  # NaN
        return "-"
    if value == float("inf"):
        return "timeout"
    return spec.format(value)


def machine_info() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    node = "absent"
    if shutil.which("node"):
        node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    versions = {}
    for dist in ("pycrdt", "tornado", "pycrdt-websocket", "pycrdt-store", "uvicorn", "websockets"):
        try:
            from importlib.metadata import version

            versions[dist] = version(dist)
        except Exception:
            versions[dist] = "absent"
    yws = "absent"
    package = NODE_SERVER.parents[1] / "package.json"
    if package.exists():
        yws = json.loads(package.read_text())["version"]
    return {
        "cpu": model,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "node": node,
        "@y/websocket-server": yws,
        **versions,
        "load average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def run_main(o: Options, json_path: str | None, keep: bool) -> int:
    check_append_encoding()
    skipped = {}
    for name in list(o.servers):
        why = SERVERS[name].available()
        if why:
            skipped[name] = why
            o.servers.remove(name)
    info = machine_info()
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()), file=sys.stderr)
    for name, why in skipped.items():
        print(f"skipping {name}: {why}", file=sys.stderr)
    workdir = Path(tempfile.mkdtemp(prefix="collab-bench-"))
    started = time.monotonic()
    try:
        for r in range(o.repeat):
            # Rotate the order each round so that drift in the machine's load does
            # not always favour the same server.
            order = o.servers[r % len(o.servers) :] + o.servers[: r % len(o.servers)]
            print(f"round {r + 1}/{o.repeat}", file=sys.stderr, flush=True)
            for name in order:
                bench_server(SERVERS[name], o, workdir)
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir}", file=sys.stderr)
    info["load average after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    elapsed = time.monotonic() - started
    print(f"\n{o.repeat} round(s) in {elapsed:.0f} s; figures are medians over rounds.")
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    print_tables(o)
    if json_path:
        Path(json_path).write_text(
            json.dumps(
                {"machine": info, "options": vars(o) | {"results": None}, "results": o.results},
                indent=2,
            )
        )
    return 0


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command")

    run = commands.add_parser("run", help="run every scenario against every server (default)")
    run.add_argument(
        "--servers", default=",".join(SERVERS), help=f"comma-separated, of {', '.join(SERVERS)}"
    )
    run.add_argument(
        "--scenarios",
        default="latency,throughput,crosslag,memory,coldload",
        help="comma-separated subset of latency,throughput,crosslag,memory,coldload,history",
    )
    run.add_argument("--repeat", type=int, default=1, help="rounds; tables show medians")
    run.add_argument("--long", action="store_true", help="longer, larger runs (about 4x)")
    run.add_argument("--readers", default="10,50", help="fan-out reader counts")
    run.add_argument(
        "--latency-updates", type=int, default=None, help="appends per latency run (default 200)"
    )
    run.add_argument("--latency-rate", type=float, default=50.0, help="appends per second")
    run.add_argument("--writers", type=int, default=4, help="throughput writers")
    run.add_argument("--duration", type=float, default=None, help="throughput window, s (5)")
    run.add_argument("--warmup", type=float, default=1.0, help="before the window, s")
    run.add_argument("--window", type=int, default=64, help="appends in flight per writer")
    run.add_argument(
        "--catch-up-s", type=float, default=15.0, help="longest wait for the durable backlog"
    )
    run.add_argument("--memory-docs", type=int, default=None, help="documents (default 100)")
    run.add_argument("--memory-conns", type=int, default=None, help="connections (default 1000)")
    run.add_argument("--memory-updates", type=int, default=100, help="appends per document")
    run.add_argument("--cold-updates", type=int, default=10_000, help="stored appends")
    run.add_argument("--cold-restarts", type=int, default=3)
    run.add_argument("--json", default=None, help="also write every result to this file")
    run.add_argument("--keep", action="store_true", help="keep the data and server logs")

    load = commands.add_parser("load", help="(internal) one scenario of the load generator")
    load.add_argument("scenario", choices=sorted(SCENARIOS))
    load.add_argument("params")

    serve = commands.add_parser("serve-pycrdt", help="(internal) the pycrdt-websocket baseline")
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--sqlite", default=None, help="persist to pycrdt-store's SQLiteYStore")

    args = parser.parse_args(argv if argv and argv[0] in commands.choices else ["run", *argv])
    return args


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    if args.command == "load":
        return load_main(args.scenario, args.params)
    if args.command == "serve-pycrdt":
        return serve_pycrdt_main(args.port, args.sqlite)
    scale = 4 if args.long else 1
    servers = [s for s in args.servers.split(",") if s]
    unknown = [s for s in servers if s not in SERVERS]
    if unknown:
        raise SystemExit(f"bench: unknown server(s) {unknown}; known: {', '.join(SERVERS)}")
    options = Options(
        servers=servers,
        scenarios=[s for s in args.scenarios.split(",") if s],
        repeat=args.repeat,
        readers=[int(n) for n in args.readers.split(",") if n],
        latency_updates=args.latency_updates or 200 * scale,
        latency_rate=args.latency_rate,
        writers=args.writers,
        duration=args.duration or 5.0 * scale,
        warmup=args.warmup,
        window=args.window,
        catch_up_s=args.catch_up_s,
        memory_docs=args.memory_docs or 100 * scale,
        memory_conns=args.memory_conns or 1000 * scale,
        memory_updates=args.memory_updates,
        cold_updates=args.cold_updates,
        cold_restarts=args.cold_restarts,
    )
    resource.setrlimit(resource.RLIMIT_NOFILE, _nofile_limit())
    return run_main(options, args.json, args.keep)


def _nofile_limit() -> tuple[int, int]:
    # Thousands of connections need thousands of descriptors, in the load
    # generator and in the servers it starts (they inherit the limit).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return (hard if hard != resource.RLIM_INFINITY else max(soft, 65536), hard)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
