"""A soak run: clients editing through a bad network and server restarts for
minutes, then a count of what was lost or stored twice (both must be 0).

    scripts/soak --clients 8 --docs 4 --minutes 10

A ``collab serve`` process on a SQLite file in a temporary folder; ``--clients``
Python clients (collab.client), each appending to one of ``--docs`` documents
every ``--interval-s`` through a TCP proxy that cuts every connection at random
moments; a reader on every document behind a second proxy that stalls for
seconds at a time (a slow consumer); the server stopped with SIGTERM and started
again every ``--restart-every-s``. At the end every client flushes, and the run
checks that all copies of each document are equal, that every item any client
wrote is in the stored log exactly once (none lost), and that no struct is
stored in two log entries (no duplicated history). It prints the server's RSS
over time. Exit status 1 if anything was lost, doubled or did not converge.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pycrdt

from collab.client import CollabClient, RemoteDocument
from collab.store.sqlite import SQLiteStore
from collab.wire.yformat import check_update
from tests.mongodb import free_port
from tests.processes import ServerProcess, server_process
from tests.proxy import Proxy

CLIENT_OPTIONS: dict[str, Any] = {
    "backoff_min_s": 0.05,
    "backoff_max_s": 2.0,
    "heartbeat_s": 2.0,
    "heartbeat_timeout_s": 3.0,
}


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Writer:
    def __init__(self, number: int, client: CollabClient, remote: RemoteDocument) -> None:
        self.number = number
        self.client = client
        self.remote = remote
        self.written = 0

    async def run(self, stop: asyncio.Event, interval_s: float, rng: random.Random) -> None:
        while not stop.is_set():
            items = self.remote.doc.get("items", type=pycrdt.Array)
            items.append(f"{self.number}:{self.written}")  # never raises, online or not
            self.written += 1
            await asyncio.sleep(rng.uniform(0.5, 1.5) * interval_s)


async def soak(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    folder = Path(tempfile.mkdtemp(prefix="collab-soak-"))
    store_url = f"sqlite:///{folder}/collab.db"
    port = free_port()
    docs = [f"soak-{k}" for k in range(args.docs)]
    server_args = ("--port", str(port))
    rss: list[tuple[float, float]] = []
    restarts = 0
    started = time.monotonic()
    deadline = started + 60 * args.minutes

    server_cm = server_process(store_url, *server_args)
    server: ServerProcess = await server_cm.__aenter__()
    network = await Proxy(port).start()
    slow_network = await Proxy(port).start()
    clients: list[CollabClient] = []
    try:
        writers = []
        for number in range(args.clients):
            client = await CollabClient.connect(f"{network.url}/ws", **CLIENT_OPTIONS)
            clients.append(client)
            remote = await client.subscribe(docs[number % len(docs)])
            writers.append(Writer(number, client, remote))
        slow = await CollabClient.connect(f"{slow_network.url}/ws", **CLIENT_OPTIONS)
        clients.append(slow)
        readers = [await slow.subscribe(doc) for doc in docs]

        stop = asyncio.Event()
        tasks = [asyncio.create_task(w.run(stop, args.interval_s, rng)) for w in writers]
        next_cut = time.monotonic() + rng.uniform(1, args.cut_every_s * 2)
        next_stall = time.monotonic() + args.stall_every_s
        next_restart = time.monotonic() + args.restart_every_s
        next_sample = time.monotonic()
        cuts = stalls = 0
        while time.monotonic() < deadline:
            now = time.monotonic()
            if now >= next_sample:
                rss.append((now - started, rss_mib(server.process.pid)))
                next_sample = now + 5
            if now >= next_cut:
                network.cut()
                cuts += 1
                next_cut = now + rng.uniform(0.2, 2) * args.cut_every_s
            if now >= next_stall:
                slow_network.stall()
                await asyncio.sleep(args.stall_s)
                slow_network.resume()
                stalls += 1
                next_stall = time.monotonic() + args.stall_every_s
            if now >= next_restart:
                server.process.send_signal(signal.SIGTERM)
                await server.process.wait()
                await server_cm.__aexit__(None, None, None)
                server_cm = server_process(store_url, *server_args)
                server = await server_cm.__aenter__()
                restarts += 1
                next_restart = time.monotonic() + args.restart_every_s
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.gather(*tasks)
        network.resume()
        slow_network.resume()

        settle_s = 60.0
        for writer in writers:
            await writer.remote.flushed(timeout_s=settle_s)
        for reader in readers:
            targets = [w for w in writers if w.remote.name == reader.name]
            await reader.wait_for(
                lambda r=reader, ts=targets: all(_items(r) == _items(t.remote) for t in ts),
                timeout_s=settle_s,
            )
        rss.append((time.monotonic() - started, rss_mib(server.process.pid)))
    finally:
        for client in clients:
            await client.close()
        await network.close()
        await slow_network.close()
        await server_cm.__aexit__(None, None, None)

    store = SQLiteStore(folder / "collab.db")
    await store.open()
    try:
        logs = {doc: [r.data for r in await store.read_updates(doc)] for doc in docs}
    finally:
        await store.close()
    lost = doubled = structs_twice = 0
    diverged = 0
    total_written = sum(w.written for w in writers)
    for doc in docs:
        stored_doc = pycrdt.Doc()
        for update in logs[doc]:
            stored_doc.apply_update(update)
        stored = Counter(stored_doc.get("items", type=pycrdt.Array).to_py())
        for writer in writers:
            if writer.remote.name != doc:
                continue
            for n in range(writer.written):
                count = stored.get(f"{writer.number}:{n}", 0)
                lost += count == 0
                doubled += count > 1
            diverged += _items(writer.remote) != list(
                stored_doc.get("items", type=pycrdt.Array).to_py()
            )
        structs_twice += _structs_stored_twice(logs[doc])

    elapsed = time.monotonic() - started
    print(
        f"soak: {elapsed / 60:.1f} min, {args.clients} writers on {args.docs} documents, "
        f"seed {args.seed}"
    )
    print(
        f"  edits written: {total_written} ({total_written / elapsed:.0f}/s); "
        f"log entries: {sum(len(log) for log in logs.values())}"
    )
    print(
        f"  network cuts: {cuts}; reader stalls: {stalls} x {args.stall_s:g}s; "
        f"server restarts (SIGTERM): {restarts}"
    )
    print(f"  reconnections: {sum(c.connections for c in clients) - len(clients)}")
    print(
        f"  lost edits: {lost}; edits stored twice: {doubled}; "
        f"structs in two log entries: {structs_twice}; copies that differ: {diverged}"
    )
    values = [m for _, m in rss]
    print(f"  server RSS MiB: first {values[0]:.1f}, max {max(values):.1f}, last {values[-1]:.1f}")
    print(
        "  RSS over time (s: MiB): "
        + ", ".join(f"{t:.0f}: {m:.1f}" for t, m in rss[:: max(1, len(rss) // 12)])
    )
    ok = lost == doubled == structs_twice == diverged == 0
    print("soak: OK" if ok else "soak: FAILED")
    return 0 if ok else 1


def _items(remote: RemoteDocument) -> list[Any]:
    return list(remote.doc.get("items", type=pycrdt.Array).to_py())


def _structs_stored_twice(log: list[bytes]) -> int:
    seen: dict[int, list[tuple[int, int]]] = {}
    twice = 0
    for update in log:
        for client, start, end in check_update(update).structs:
            ranges = seen.setdefault(client, [])
            twice += any(
                start < other_end and end > other_start for other_start, other_end in ranges
            )
            ranges.append((start, end))
    return twice


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--docs", type=int, default=3)
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--interval-s", type=float, default=0.05, help="between one writer's edits")
    parser.add_argument("--cut-every-s", type=float, default=3.0, help="mean time between cuts")
    parser.add_argument("--stall-every-s", type=float, default=20.0)
    parser.add_argument("--stall-s", type=float, default=3.0)
    parser.add_argument("--restart-every-s", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    return asyncio.run(soak(args))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
