"""The server's memory against a document's size: one client writes a large
rich-text document into a server process, a few peers join it and sync, and the
server's RSS is read from ``/proc`` at each step (settled: once its CPU and its
RSS have stopped moving) and at its peak (``VmHWM``).

tests/test_large_documents.py checks a bound at 10 MiB; ``scripts/large-documents``
prints the figures of docs/PERFORMANCE.md (*Large documents*)::

    scripts/large-documents --sizes 1 10 50
    scripts/large-documents --sizes 10 -- --malloc-arena-max 0 --memory-trim-s 0
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pycrdt

from collab.client import CollabClient
from tests.processes import server_process

MIB = 1024 * 1024
AUTHOR_BYTES = MIB  # of the document, written by each author
PARAGRAPHS_PER_UPDATE = 100
FLUSH_EVERY = 8  # updates sent before waiting for their acks
DOC = "large"


def document_updates(size_bytes: int, seed: int = 1) -> tuple[list[bytes], int]:
    """Updates that make a rich-text document of about ``size_bytes`` (encoded),
    and its encoded size: paragraphs of 200 to 2,000 characters (one in ten
    bold), written by authors of ``AUTHOR_BYTES`` each from an empty document (a
    team writing at once), each in transactions of ``PARAGRAPHS_PER_UPDATE``.
    (One author writing it all would take pycrdt minutes: inserting into its
    text costs more as the text grows.)"""
    rng = random.Random(seed)
    phrases = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(rng.randint(200, 2000)))
        for _ in range(500)
    ]
    updates: list[bytes] = []
    whole = pycrdt.Doc()
    written = 0
    author = 0
    while written < size_bytes:
        author += 1
        doc = pycrdt.Doc(client_id=author)
        text = doc.get("text", type=pycrdt.Text)
        made: list[bytes] = []
        subscription = doc.observe(lambda event, made=made: made.append(event.update))
        length = 0
        while sum(map(len, made)) < min(AUTHOR_BYTES, size_bytes - written):
            with doc.transaction():
                for _ in range(PARAGRAPHS_PER_UPDATE):
                    phrase = rng.choice(phrases) + "\n"
                    at = rng.randint(0, length)
                    text.insert(at, phrase, {"bold": True} if rng.random() < 0.1 else None)
                    length += len(phrase)
        doc.unobserve(subscription)
        written += sum(map(len, made))
        updates += made
        whole.apply_update(doc.get_update())
    return updates, len(whole.get_update())


@dataclass(frozen=True, slots=True)
class Figures:
    """RSS of the server process, MiB: ``idle`` before, ``written`` once the
    document is stored, ``synced`` once the peers have it (each settled), and the
    highest seen while it was written and while the peers synced (sampled every
    20 ms: ``VmHWM``, the kernel's own high-water mark, is ``peak``)."""

    encoded_mib: float
    idle_mib: float
    written_mib: float
    synced_mib: float
    write_peak_mib: float
    sync_peak_mib: float
    peak_mib: float
    write_s: float
    sync_s: float

    def growth(self, rss_mib: float) -> float:
        """How many times the encoded size the server grew to ``rss_mib``."""
        return (rss_mib - self.idle_mib) / self.encoded_mib

    def line(self) -> str:
        return (
            f"{self.encoded_mib:6.1f} MiB document: idle {self.idle_mib:.0f} MiB; "
            f"written +{self.written_mib - self.idle_mib:.0f} MiB "
            f"({self.growth(self.written_mib):.1f}x); "
            f"synced +{self.synced_mib - self.idle_mib:.0f} MiB "
            f"({self.growth(self.synced_mib):.1f}x); peaks: writing "
            f"+{self.write_peak_mib - self.idle_mib:.0f} MiB "
            f"({self.growth(self.write_peak_mib):.1f}x), syncing "
            f"+{self.sync_peak_mib - self.idle_mib:.0f} MiB "
            f"({self.growth(self.sync_peak_mib):.1f}x), "
            f"VmHWM +{self.peak_mib - self.idle_mib:.0f} MiB; "
            f"write {self.write_s:.1f} s, sync {self.sync_s:.1f} s"
        )


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


async def settled_rss(pid: int, settle_s: float, timeout_s: float = 120.0) -> float:
    """The process's RSS once it has been idle (no CPU tick) and its RSS has not
    changed for ``settle_s`` (at least a period of its memory trimming)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    ticks, rss = cpu_ticks(pid), rss_mib(pid)
    still_since = loop.time()
    while loop.time() < deadline:
        await asyncio.sleep(0.25)
        now_ticks, now_rss = cpu_ticks(pid), rss_mib(pid)
        if now_ticks - ticks > 1 or abs(now_rss - rss) > 0.5:
            still_since = loop.time()
        ticks, rss = now_ticks, now_rss
        if loop.time() - still_since >= settle_s:
            return rss
    return rss


class Sampler:
    """The highest RSS of a process, sampled every 20 ms while running."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.highest = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            self.highest = max(self.highest, rss_mib(self.pid))
            await asyncio.sleep(0.02)

    def start(self) -> None:
        self.highest = rss_mib(self.pid)
        self._task = asyncio.ensure_future(self._sample())

    async def stop(self) -> float:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        return max(self.highest, rss_mib(self.pid))


async def measure(
    store_url: str,
    updates: list[bytes],
    encoded_bytes: int,
    *,
    peers: int = 3,
    server_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    settle_s: float = 2.0,
) -> Figures:
    """Start a server, write the document through one client, join ``peers``
    more at once; the server's RSS at each step."""
    async with server_process(store_url, *server_args, env=env) as server:
        pid = server.process.pid
        idle = await settled_rss(pid, settle_s)
        writer = await CollabClient.connect(server.ws_url + "/ws")
        clients = [writer]
        sampler = Sampler(pid)
        try:
            remote = await writer.subscribe(DOC)
            sampler.start()
            started = time.monotonic()
            for index, update in enumerate(updates, 1):
                remote.doc.apply_update(update)  # observed: sent as the client's own edit
                if index % FLUSH_EVERY == 0:
                    await remote.flushed()
            await remote.flushed()
            write_s = time.monotonic() - started
            written = await settled_rss(pid, settle_s)
            write_peak = await sampler.stop()
            expected = str(remote.doc.get("text", type=pycrdt.Text))
            sampler.start()
            started = time.monotonic()
            for _ in range(peers):
                clients.append(await CollabClient.connect(server.ws_url + "/ws"))
            joined = await asyncio.gather(
                *(client.subscribe(DOC, timeout_s=300) for client in clients[1:])
            )
            sync_s = time.monotonic() - started
            for peer in joined:
                if str(peer.doc.get("text", type=pycrdt.Text)) != expected:
                    raise AssertionError("a peer's copy differs from the writer's")
            synced = await settled_rss(pid, settle_s)
            sync_peak = await sampler.stop()
            peak = rss_mib(pid, "VmHWM")
        finally:
            for client in clients:
                await client.close()
    return Figures(
        encoded_bytes / MIB, idle, written, synced, write_peak, sync_peak, peak, write_s, sync_s
    )


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/large-documents", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--sizes", type=float, nargs="+", default=[1, 10, 50], metavar="MIB")
    parser.add_argument("--peers", type=int, default=3)
    parser.add_argument(
        "--settle-s", type=float, default=12.0, help="at least the server's --memory-trim-s"
    )
    parser.add_argument("server_args", nargs="*", help="after --: flags for collab serve")
    args = parser.parse_args(argv)
    for size in args.sizes:
        updates, encoded = document_updates(int(size * MIB))
        with tempfile.TemporaryDirectory() as folder:
            figures = await measure(
                f"sqlite:///{Path(folder) / 'large.db'}",
                updates,
                encoded,
                peers=args.peers,
                server_args=args.server_args,
                settle_s=args.settle_s,
            )
        print(figures.line(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
