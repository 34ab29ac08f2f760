"""A minimal y-websocket client for the load generator, and what it counts."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from typing import Any

from collab.wire.yformat import decode_state_vector

from .. import HOST
from .connection import Connection, connect
from .updates import TEXT_NAME, Unparsed, read_var_uint, update_ranges

MESSAGE_SYNC = 0
SYNC_STEP1, SYNC_STEP2, SYNC_UPDATE = 0, 1, 2
# Sync step 1 with the empty state vector, and step 2 with the empty update: what a
# fresh y-websocket provider sends, and its reply to the server's step 1.
STEP1_EMPTY = bytes([MESSAGE_SYNC, SYNC_STEP1, 1, 0])
STEP2_EMPTY = bytes([MESSAGE_SYNC, SYNC_STEP2, 2, 0, 0])

OnUpdate = Callable[[bytes, float], None]


def yjs_url(port: int, doc: str) -> str:
    return f"ws://{HOST}:{port}/yjs/{doc}"


def update_message(update: bytes) -> bytes:
    """The y-websocket frame carrying one update."""
    from pycrdt import create_update_message

    return create_update_message(update)


def sync_payload(frame: bytes) -> bytes:
    length, pos = read_var_uint(frame, 2)
    return frame[pos : pos + length]


class YClient(Connection):
    """A minimal y-websocket peer: sends sync step 1 at connect, answers the server's
    step 1 with an empty step 2, and hands every received update (step 2 or update
    message) to ``on_update(payload, arrival_time)``."""

    def __init__(self, ws: Any, on_update: OnUpdate | None) -> None:
        super().__init__(ws)
        self.on_update = on_update
        self.synced = asyncio.Event()  # the server answered our step 1

    @classmethod
    async def open(
        cls, url: str, on_update: OnUpdate | None = None, *, deflate: bool = False
    ) -> YClient:
        client = cls(await connect(url, deflate=deflate), on_update)
        client.start_reading()
        await client.send(STEP1_EMPTY)
        return client

    async def on_frame(self, frame: bytes, arrived: float) -> None:
        if frame[0] != MESSAGE_SYNC:
            return  # awareness
        kind = frame[1]
        if kind == SYNC_STEP1:
            await self.send(STEP2_EMPTY)
            return
        if self.on_update is not None:
            self.on_update(sync_payload(frame), arrived)
        if kind == SYNC_STEP2:
            self.synced.set()


async def open_many(
    url_for: Callable[[int], str],
    count: int,
    on_update_for: Callable[[int], OnUpdate | None] | None = None,
    *,
    concurrency: int = 32,
    deflate: bool = False,
) -> list[YClient]:
    """Open ``count`` synced clients, ``concurrency`` handshakes at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> YClient:
        async with gate:
            on_update = on_update_for(i) if on_update_for else None
            client = await YClient.open(url_for(i), on_update, deflate=deflate)
            await asyncio.wait_for(client.synced.wait(), 60)
            return client

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def close_all(clients: Iterable[Any]) -> None:
    """Close clients of either protocol (each has an idempotent ``close()``)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(c.close() for c in clients)), 10)


class ClockCounter:
    """Counts, per writer client, how many of its updates a connection has received
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

    async def within_window(self, client: int, i: int, window: int) -> None:
        """Wait until fewer than ``window`` of ``client``'s updates before update
        ``i`` are unseen (TimeoutError after 60 s: the server stopped relaying)."""
        if i - self.seen[client] >= window and not await self.wait_for(client, i - window + 1, 60):
            raise TimeoutError(f"{self.seen[client]} of {client}'s {i} updates arrived")

    @property
    def total(self) -> int:
        return sum(self.seen.values())

    async def wait_for(self, client: int, count: int, timeout_s: float) -> bool:
        """Wait until ``count`` of ``client``'s updates arrived; False on timeout."""
        deadline = time.perf_counter() + timeout_s
        event = self.events[client]
        while self.seen[client] < count:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return False
            event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)
        return True


class DocumentCheck:
    """What a fresh client syncing the document finds: its text, and each client's
    clock, from which the convergence checks read how many of a writer's updates the
    document holds (clock / step: none missing, none applied twice)."""

    def __init__(self, text: str, clocks: dict[int, int]) -> None:
        self.text = text
        self.clocks = clocks

    def updates_of(self, client: int, step: int) -> float:
        return self.clocks.get(client, 0) / step


async def check_document(url: str, timeout_s: float = 120.0) -> DocumentCheck | None:
    """Sync a fresh y-websocket client with the document and read what it holds
    (None: the sync did not complete within ``timeout_s``)."""
    from pycrdt import Doc, Text

    doc = Doc()
    client = await YClient.open(url, lambda payload, _arrived: doc.apply_update(payload))
    try:
        await asyncio.wait_for(client.synced.wait(), timeout_s)
    except TimeoutError:
        return None
    finally:
        await close_all([client])
    return DocumentCheck(str(doc.get(TEXT_NAME, type=Text)), decode_state_vector(doc.get_state()))
