"""What the load generator reads about the server: its process's CPU and memory
from ``/proc``, and how many updates its own database durably holds."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")

# How the load generator reads a server's database: {"kind": "collab" | "ystore",
# "path": sqlite file} or {"kind": "collab-mongodb", "url": ...}; None: unreadable.
Probe = dict[str, str] | None


def cpu_ticks(pid: int) -> int:
    """User + system CPU of a process and all its threads, in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """Resident memory (``VmHWM``: its high-water mark since the process started)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def machine_busy_ticks() -> int:
    """CPU time every core of the machine spent busy (not idle, not waiting for I/O)
    since boot, in clock ticks, from ``/proc/stat``."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle, iowait = fields[3], fields[4]
    return sum(fields[:8]) - idle - iowait  # user nice system idle iowait irq softirq steal


def run_delay_s(pid: int) -> float:
    """How long the process's main thread (the event loop of every server here) has
    been ready to run but waiting for a core, in seconds, from ``/proc/PID/schedstat``:
    time the machine's other work took from it."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[1]) / 1e9


def listen_drops() -> int:
    """Connection attempts the kernel dropped because a listening socket's accept
    queue (its backlog) was full: TcpExt ListenDrops from ``/proc/net/netstat``, for
    the whole machine. A dropped SYN is sent again by the client after 1 s."""
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split(), values.split(), strict=True))["ListenDrops"])
    return 0


class CpuWindow:
    """The CPU that the server, each load-generator process and everything else on
    the machine used between construction and ``report()``, in % of one core, and
    how long the server's main thread waited for a core meanwhile (% of the time),
    read from ``/proc`` by a process that itself sleeps meanwhile (the driver)."""

    def __init__(self, server_pid: int, loadgen_pids: Sequence[int]) -> None:
        self.server_pid = server_pid
        self.loadgen_pids = list(loadgen_pids)
        self.t = time.perf_counter()
        self.server = cpu_ticks(server_pid)
        self.loadgen = [cpu_ticks(pid) for pid in self.loadgen_pids]
        self.machine = machine_busy_ticks()
        self.waited = run_delay_s(server_pid)

    def report(self) -> dict[str, float]:
        elapsed = time.perf_counter() - self.t
        waited = run_delay_s(self.server_pid) - self.waited
        server = cpu_ticks(self.server_pid) - self.server
        loadgen = [
            cpu_ticks(pid) - t0 for pid, t0 in zip(self.loadgen_pids, self.loadgen, strict=True)
        ]
        others = machine_busy_ticks() - self.machine - server - sum(loadgen)

        def pct(ticks: float) -> float:
            return 100 * ticks / CLK_TCK / elapsed

        return {
            "window_s": elapsed,
            "server_cpu_s": server / CLK_TCK,
            "server_cpu_pct": pct(server),
            "client_cpu_pct": pct(sum(loadgen)),
            "client_cpu_max_pct": pct(max(loadgen, default=0)),
            "other_cpu_pct": pct(max(0, others)),
            "server_waited_pct": 100 * waited / elapsed,
        }


class Usage:
    """Server and load-generator CPU over an interval, in % of one core: when the
    load generator's is near 100 %, it, not the server, is the limit."""

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


class RssPeak:
    """The server's highest RSS while the block runs: sampled every ``every_s`` and,
    at the end, the kernel's own high-water mark (which sees between samples, and
    is exact for a server started for this scenario)."""

    def __init__(self, pid: int, every_s: float = 0.02) -> None:
        self.pid = pid
        self.every_s = every_s
        self.before_kib = rss_kib(pid)
        self.peak_kib = self.before_kib
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            self.peak_kib = max(self.peak_kib, rss_kib(self.pid))
            await asyncio.sleep(self.every_s)

    async def __aenter__(self) -> RssPeak:
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.peak_kib = max(self.peak_kib, rss_kib(self.pid, "VmHWM"))

    def report(self) -> dict[str, float]:
        return {
            "rss_before_mib": self.before_kib / 1024,
            "rss_peak_mib": self.peak_kib / 1024,
            "rss_growth_mib": (self.peak_kib - self.before_kib) / 1024,
        }


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


def durable_count(probe: Probe) -> int | None:
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


async def sample_durable(probe: Probe) -> tuple[int | None, float]:
    """``durable_count`` off the event loop (a locked database may make it wait),
    with the moment it was read."""
    if probe is None:
        return None, time.perf_counter()
    count = await asyncio.to_thread(durable_count, probe)
    return count, time.perf_counter()


async def wait_durable(probe: Probe, target: int, timeout_s: float) -> float | None:
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


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


def latency_summary(latencies_ms: Sequence[float]) -> dict[str, Any]:
    return {
        "p50_ms": percentile(latencies_ms, 0.50),
        "p99_ms": percentile(latencies_ms, 0.99),
        "max_ms": max(latencies_ms, default=float("nan")),
    }
