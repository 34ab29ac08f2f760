"""Documents with several peers, some of them writing (the shapes most deployments
have): how many updates the server delivers to peers a second, and at what latency.

One shard (``scenario_rooms``) holds whole documents: every peer of a document lives
in the same process, so that a writer can wait until its update reached every other
peer of its document. The driver splits the documents over the shards and measures
the CPU (``benchkit.shards``); the shards count deliveries and their latencies.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from ..loadgen.updates import AppendRun, Unparsed, new_client_id, update_ranges
from ..loadgen.yjs import OnUpdate, YClient, close_all, open_many, update_message, yjs_url
from .shard import barrier, latency_histogram
from .throughput import converges

# How long the writers may take, after the window, to see their last updates arrive.
DRAIN_S = 30.0


class Room:
    """One document as the load generator holds it: ``peers`` connections, the first
    ``writers`` of which write (each its own run of appends). Every peer counts what
    it receives of every other writer's run; a writer's update is *delivered* to a
    peer when that peer receives it, and *done* once every other peer of the document
    has it. A writer keeps at most ``window`` updates sent and not done.

    Counting is by client clock (``update_ranges``), so a server that merges or
    re-encodes updates is counted right; a range that starts past what a peer has of
    that writer is a *gap* (the server skipped something), which fails the run."""

    def __init__(
        self, name: str, peers: int, writers: int, make_run: Callable[[], AppendRun]
    ) -> None:
        if not 0 < writers <= peers or peers < 2:
            raise ValueError("a room needs 2+ peers and 1 to `peers` writers")
        self.name = name
        self.peers = peers
        self.runs = [make_run() for _ in range(writers)]
        self.writer_of = {run.client: w for w, run in enumerate(self.runs)}
        self.needed = peers - 1  # every peer but the writer
        self.clients: list[YClient] = []
        self.seen = [[0] * writers for _ in range(peers)]  # [peer][writer]: updates had
        self.pending: list[dict[int, int]] = [{} for _ in range(writers)]  # i -> peers
        self.sent_at: list[dict[int, float]] = [{} for _ in range(writers)]
        self.sent = [0] * writers
        self.done = [0] * writers
        self.wake = [asyncio.Event() for _ in range(writers)]
        self.gaps = 0
        self.unparsed = 0
        # Deliveries that arrive within [window_start, window_end) are counted.
        self.window_start = self.window_end = float("inf")
        self.delivered = 0
        self.latencies_ms: list[float] = []

    def on_update_for(self, peer: int) -> OnUpdate:
        own = peer if peer < len(self.runs) else -1
        seen = self.seen[peer]

        def on_update(payload: bytes, arrived: float) -> None:
            try:
                ranges = update_ranges(payload)
            except (Unparsed, IndexError):
                self.unparsed += 1
                return
            for client, start, end in ranges:
                w = self.writer_of.get(client)
                if w is not None and w != own:  # servers may echo a writer's own
                    self._arrived(seen, w, start, end, arrived)

        return on_update

    def _arrived(self, seen: list[int], w: int, start: int, end: int, arrived: float) -> None:
        step = self.runs[w].step
        have = seen[w]
        if start > have * step:
            self.gaps += 1
        count = end // step
        if count <= have:
            return
        seen[w] = count
        pending, sent_at = self.pending[w], self.sent_at[w]
        counted = self.window_start <= arrived < self.window_end
        for i in range(have, count):
            if counted:
                self.delivered += 1
                self.latencies_ms.append(1000 * (arrived - sent_at[i]))
            pending[i] = pending.get(i, 0) + 1
        done = self.done[w]
        while pending.get(done) == self.needed:
            del pending[done], sent_at[done]
            done += 1
        if done != self.done[w]:
            self.done[w] = done
            self.wake[w].set()

    async def write(self, w: int, stop_at: float, window: int, count: int | None = None) -> None:
        """Writer ``w`` sends its next update whenever fewer than ``window`` of its
        updates are not done, until ``stop_at`` (or ``count`` updates)."""
        run, client, wake = self.runs[w], self.clients[w], self.wake[w]
        i = 0
        while time.perf_counter() < stop_at and (count is None or i < count):
            if i - self.done[w] >= window:
                wake.clear()
                await wake.wait()
                continue
            self.sent_at[w][i] = time.perf_counter()
            await client.send(update_message(run.update(i)))
            i += 1
            self.sent[w] = i

    @property
    def all_done(self) -> bool:
        return self.done == self.sent

    def problems(self) -> list[str]:
        """What went wrong in this document so far (nothing: converged, as far as
        the peers can tell)."""
        out = []
        if not self.all_done:
            missing = sum(s - d for s, d in zip(self.sent, self.done, strict=True))
            out.append(f"{self.name}: {missing} updates never reached every peer")
        if self.gaps:
            out.append(f"{self.name}: {self.gaps} gaps (a peer missed an update)")
        if self.unparsed:
            out.append(f"{self.name}: {self.unparsed} frames the load generator could not read")
        return out


async def open_rooms(port: int, rooms: list[Room], *, deflate: bool = False) -> None:
    """Connect and sync every peer of every room (64 handshakes at a time)."""
    where = [(room, peer) for room in rooms for peer in range(room.peers)]
    clients = await open_many(
        lambda i: yjs_url(port, where[i][0].name),
        len(where),
        lambda i: where[i][0].on_update_for(where[i][1]),
        concurrency=64,
        deflate=deflate,
    )
    for (room, _peer), client in zip(where, clients, strict=True):
        room.clients.append(client)


async def drain(rooms: list[Room], timeout_s: float) -> bool:
    """Wait until every update sent is done (False: not within ``timeout_s``)."""
    deadline = time.perf_counter() + timeout_s
    while not all(room.all_done for room in rooms):
        if time.perf_counter() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def scenario_rooms(p: dict[str, Any]) -> dict[str, Any]:
    """This shard's documents (``docs``: names), each with ``peers`` peers of which
    ``writers`` write 8-character appends, each writer keeping at most ``window``
    updates that have not reached every other peer of its document. Connected before
    the ``ready`` barrier; writing starts at the driver's go; deliveries arriving in
    ``[go + warmup, go + warmup + duration)`` are counted (their latency: from the
    writer handing the frame to its socket to its arrival at the peer); then writing
    stops and every update sent must reach every other peer (``DRAIN_S``).

    Convergence: every peer of a document received every other writer's updates,
    each writer's from the first to its last, with no gap; and a fresh client's copy
    of each document holds exactly every writer's updates."""
    rooms = [
        Room(name, p["peers"], p["writers"], lambda: AppendRun(new_client_id()))
        for name in p["docs"]
    ]
    await open_rooms(p["port"], rooms)
    go = await barrier("ready")
    window_start = go + p["warmup"]
    window_end = window_start + p["duration"]
    for room in rooms:
        room.window_start, room.window_end = window_start, window_end
    writers = [
        asyncio.create_task(room.write(w, window_end, p["window"]))
        for room in rooms
        for w in range(len(room.runs))
    ]
    finished, stuck = await asyncio.wait(
        writers, timeout=window_end - time.perf_counter() + DRAIN_S
    )
    for task in stuck:
        task.cancel()
    problems = [] if not stuck else [f"{len(stuck)} writers stalled (nothing delivered)"]
    failed = [task.exception() for task in finished if task.exception() is not None]
    if failed:  # the server closed a writer, for one
        problems.append(f"{len(failed)} writers failed, e.g. {failed[0]!r}"[:300])
    await drain(rooms, DRAIN_S)
    for room in rooms:
        problems += room.problems()
    if not problems:
        written = [
            (room.name, run.client, room.sent[w])
            for room in rooms
            for w, run in enumerate(room.runs)
        ]
        if not await converges(p["port"], written):
            problems.append("a fresh client's copy differs from what the writers sent")
    await close_all([client for room in rooms for client in room.clients])
    latencies = [ms for room in rooms for ms in room.latencies_ms]
    return {
        "docs": len(rooms),
        "delivered": sum(room.delivered for room in rooms),
        "sent": sum(sum(room.sent) for room in rooms),
        "latency_hist": latency_histogram(latencies),
        "problems": problems,
    }
