"""The driver: for each round and each server, start the server, run every chosen
scenario's load generator against it as a separate process, record the results."""

from __future__ import annotations

import asyncio
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import ROOT
from .loadgen.updates import check_update_encoding
from .report import machine_info, median_of, print_failures, print_tables, write_json
from .sampler import CpuWindow, listen_drops, rss_kib, wait_quiet
from .scenarios.shard import LATENCY_BUCKET_MS
from .servers import (
    SERVERS,
    RunningServer,
    ServerSpec,
    Start,
    benchkit_command,
    collab_outbound_bound_mib,
    stop_mongodb,
)
from .shapes import SHAPES, Shape
from .shards import Shards, histogram_percentile, merge_histograms, sleep_until

SCENARIO_NAMES = (
    "latency",
    "throughput",
    "durable50",
    "crosslag",
    "memory",
    "stalled",
    "fastwriter",
    "coldload",
    "history",
    *SHAPES,
    "idle10k",
    "storm",
    "compression",
)
# What a bare `scripts/bench` runs: the scenarios it always ran. The document shapes,
# the 10,000 connections and compression are chosen by name (--scenarios).
DEFAULT_SCENARIOS = SCENARIO_NAMES[: SCENARIO_NAMES.index("history")]
# A load-generator process past this much of a core may be what limits a run.
LOADGEN_SATURATED_PCT = 90
# Descriptors a process needs beside its connections (files, pipes, the store).
FD_SLACK = 256
# What the bound on a stalled reader's cost may exceed collab's outbound bound by.
STALLED_SLACK_MIB = 16


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
    durable_writers: int = 50
    durable_window: int = 16
    flood_mb: float = 100.0
    flood_value_kib: int = 32
    flood_window: int = 4
    crosslag_readers: int = 10
    crosslag_updates: int = 500
    history_sizes: tuple[int, ...] = (10_000, 100_000)
    history_requests: int = 100
    # The document shapes (rooms10x10, rooms100x3, crowd50).
    shape_windows: tuple[int, ...] = (1, 16)
    shape_scale: float = 1.0  # documents x this (at least 1), for short trial runs
    loadgen_procs: int = 1
    # idle10k and storm
    conns: int = 10_000
    conn_docs: int = 1_000
    storm_wave: int = 1_000
    # compression
    compress_doc_mib: float = 10.0
    compress_chunk_kib: int = 256
    compress_sync_peers: int = 3
    compress_readers: int = 10
    compress_updates: int = 2_000
    results: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def record(self, scenario: str, server: str, result: dict[str, Any]) -> None:
        problems = result.pop("problems", None)
        if problems is not None:
            result["converged"] = "yes" if not problems else "NO"
            for problem in problems:
                failure = f"{scenario} on {server}: {problem}"
                self.failures.append(failure)
                print(f"  FAILED: {failure}", file=sys.stderr, flush=True)
        self.results.setdefault(scenario, {}).setdefault(server, []).append(result)


def run_load(scenario: str, params: dict[str, Any], timeout_s: float = 1800) -> dict[str, Any]:
    """One scenario in a separate load-generator process; its JSON result."""
    argv, env = benchkit_command("load", scenario, json.dumps(params))
    done = subprocess.run(
        argv, cwd=ROOT, env=env_with(env), capture_output=True, text=True, timeout=timeout_s
    )
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed ({scenario}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def env_with(extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **extra}


class ServerBench:
    """Every chosen scenario against one server, each group on a fresh process
    (restarted between groups so one group's leftovers do not weigh on the next)."""

    def __init__(self, spec: ServerSpec, o: Options, workdir: Path, data: Path) -> None:
        self.spec, self.o, self.data, self.workdir = spec, o, data, workdir
        self.log = workdir / f"{spec.name}.log"
        self.probe = spec.probe(data)

    def server(self, start: Start | None = None) -> RunningServer:
        return RunningServer(self.spec, self.data, self.log, start)

    def params(self, server: RunningServer, **more: Any) -> dict[str, Any]:
        return {"port": server.port, "pid": server.pid, "probe": self.probe, **more}

    def record(self, scenario: str, result: dict[str, Any]) -> None:
        self.o.record(scenario, self.spec.name, result)

    def progress(self, what: str) -> None:
        print(f"  {self.spec.name}: {what}", file=sys.stderr, flush=True)

    def run(self) -> None:
        """Each group whose scenarios were chosen, in this order."""
        groups = [
            ({"latency", "throughput"}, self.latency_and_throughput),
            ({"durable50"}, self.durable50),
            ({"crosslag"}, self.crosslag),
            ({"history"}, self.history),
            ({"memory"}, self.memory),
            ({"stalled"}, self.stalled),
            ({"fastwriter"}, self.fastwriter),
            ({"coldload"}, self.coldload),
            (set(SHAPES), self.shapes),
            ({"idle10k"}, self.idle10k),
            ({"storm"}, self.storm),
            ({"compression"}, self.compression),
        ]
        for names, group in groups:
            if names & set(self.o.scenarios):
                group()

    def latency_and_throughput(self) -> None:
        o = self.o
        with self.server() as server:
            if "latency" in o.scenarios:
                for n in o.readers:
                    self.progress(f"latency, {n} readers")
                    params = self.params(server, readers=n, updates=o.latency_updates)
                    self.record(
                        f"latency-{n}", run_load("latency", {**params, "rate": o.latency_rate})
                    )
            if "throughput" in o.scenarios:
                for shared in (False, True):
                    self.progress(f"throughput, {o.writers} writers, shared={shared}")
                    params = self.throughput_params(server, o.writers, shared=shared)
                    key = "throughput-shared" if shared else "throughput-docs"
                    self.record(key, run_load("throughput", params))

    def throughput_params(
        self, server: RunningServer, writers: int, shared: bool
    ) -> dict[str, Any]:
        o = self.o
        return self.params(
            server,
            writers=writers,
            shared=shared,
            window=o.window,
            duration=o.duration,
            warmup=o.warmup,
            catch_up_s=o.catch_up_s,
        )

    def durable50(self) -> None:
        """Acknowledged updates over the native protocol (collab only), and what the
        same writers get relayed over y-websocket (every server)."""
        o = self.o
        with self.server() as server:
            if self.spec.is_collab:
                self.progress(f"durable, {o.durable_writers} native writers on one document")
                params = self.params(
                    server,
                    writers=o.durable_writers,
                    window=o.durable_window,
                    duration=o.duration,
                    warmup=o.warmup,
                )
                self.record("durable50", run_load("durable", params))
            else:
                self.record("durable50", {"na": "y-websocket has no acks"})
        with self.server() as server:
            self.progress(f"relay, {o.durable_writers} y-websocket writers on one document")
            params = self.throughput_params(server, o.durable_writers, shared=True)
            self.record("relay50", run_load("throughput", params))

    def crosslag(self) -> None:
        o = self.o
        if not self.spec.instances:
            self.record("crosslag", {"na": "one process only"})
            return
        self.progress(f"cross-instance lag, {o.crosslag_readers} readers")
        with self.server() as first, self.server() as second:
            params = self.params(second, writer_port=first.port, rate=100.0)
            params |= {"readers": o.crosslag_readers, "updates": o.crosslag_updates}
            self.record("crosslag", run_load("latency", params))

    def history(self) -> None:
        o = self.o
        if not self.spec.is_collab:
            for size in o.history_sizes:
                self.record(f"history-{size}", {"na": "no history API"})
            return
        doc = f"history-{random.getrandbits(32):08x}"
        with self.server() as server:
            params = self.params(server, doc=doc)
            stored = 0
            for size in o.history_sizes:
                self.progress(f"history: storing {size - stored} more updates")
                run_load("seed", {**params, "updates": size - stored})
                stored = size
                self.progress(f"history: state at a random seq of {size}")
                params |= {"updates": size, "requests": o.history_requests}
                self.record(f"history-{size}", run_load("history", params))

    def memory(self) -> None:
        o = self.o
        self.progress("memory")
        with self.server() as server:
            params = self.params(server, docs=o.memory_docs, conns=o.memory_conns)
            self.record("memory", run_load("memory", {**params, "updates": o.memory_updates}))

    def flood_params(self, server: RunningServer, **more: Any) -> dict[str, Any]:
        o = self.o
        value_bytes = o.flood_value_kib * 1024
        total_bytes = max(value_bytes, int(o.flood_mb * 1e6))
        return self.params(server, value_bytes=value_bytes, total_bytes=total_bytes, **more)

    def stalled(self) -> None:
        o = self.o
        self.progress(f"stalled reader, {o.flood_mb:g} MB through its document")
        bound = collab_outbound_bound_mib() + STALLED_SLACK_MIB if self.spec.is_collab else None
        with self.server() as server:
            params = self.flood_params(server, window=o.flood_window, bound_mib=bound)
            self.record("stalled", run_load("stalled", params))

    def fastwriter(self) -> None:
        o = self.o
        for protocol in ("native", "yjs"):
            key = f"fastwriter-{protocol}"
            if protocol == "native" and not self.spec.is_collab:
                self.record(key, {"na": "no native protocol"})
                continue
            self.progress(f"fast writer over {protocol}, {o.flood_mb:g} MB")
            with self.server() as server:
                params = self.flood_params(server, protocol=protocol, catch_up_s=120.0)
                self.record(key, run_load("fastwriter", params))

    def coldload(self) -> None:
        o = self.o
        if self.spec.persists.startswith("none"):
            self.record("coldload", {"na": "does not persist"})
            return
        self.progress(f"cold load: storing {o.cold_updates} updates")
        doc = f"cold-{random.getrandbits(32):08x}"
        with self.server() as server:
            # pycrdt-store commits each update alone: 100,000 take it about 18 minutes.
            params = self.params(server, doc=doc, updates=o.cold_updates)
            seed = run_load("seed", params, timeout_s=3600)
        loads = []
        for _ in range(o.cold_restarts):
            with self.server() as server:
                params = self.params(server, doc=doc, updates=o.cold_updates)
                loads.append(run_load("coldload", params))
        colds = [r["cold_ms"] for r in loads]
        complete = all(r["chars"] == r["expected_chars"] for r in loads)
        summary = {
            "first_cold_ms": colds[0],
            "median_cold_ms": median_of(colds) if None not in colds else None,
            "warm_ms": median_of([r["warm_ms"] for r in loads]),
            "complete": "yes"
            if complete
            else f"{min(r['chars'] for r in loads)}/{loads[0]['expected_chars']} chars",
            "seed_relayed_s": seed["relayed_s"],
            "seed_durable_s": seed["durable_s"],
            "rss_mib": median_of([r["rss_mib"] for r in loads]),
        }
        self.record("coldload", summary)

    def shapes(self) -> None:
        """Each chosen shape on a fresh server, once per window (new documents each)."""
        for name in SHAPES:
            if name not in self.o.scenarios:
                continue
            with self.server() as server:
                for window in self.o.shape_windows:
                    self.record(f"{name}-{window}", self.shape_run(server, SHAPES[name], window))

    def shape_run(self, server: RunningServer, shape: Shape, window: int) -> dict[str, Any]:
        """One shape, one window: the documents split over the load-generator
        processes; the driver measures every process's CPU over the window."""
        o = self.o
        docs = max(1, round(shape.docs * o.shape_scale))
        procs = max(1, min(o.loadgen_procs, docs))
        self.progress(
            f"{shape.name}: {docs} documents x {shape.peers} peers, {shape.writers} writing, "
            f"window {window}, {procs} load generator(s)"
        )
        tag = f"{random.getrandbits(32):08x}"
        names = [f"{shape.name}-w{window}-{tag}-{d}" for d in range(docs)]
        jobs = [
            (
                "rooms",
                self.params(
                    server,
                    docs=names[k::procs],
                    peers=shape.peers,
                    writers=shape.writers,
                    window=window,
                    warmup=o.warmup,
                    duration=o.duration,
                ),
            )
            for k in range(procs)
        ]
        with Shards(jobs, self.workdir) as shards:
            shards.barrier("ready")
            go = shards.go()
            sleep_until(go + o.warmup)
            cpu = CpuWindow(server.pid, shards.pids)
            sleep_until(go + o.warmup + o.duration)
            usage = cpu.report()
            results = shards.results()
        if usage["client_cpu_max_pct"] > LOADGEN_SATURATED_PCT:
            self.progress(
                f"a load generator used {usage['client_cpu_max_pct']:.0f} % of a core: it, "
                "not the server, may be the limit (--loadgen-procs splits it by document)"
            )
        delivered = sum(r["delivered"] for r in results)
        hist = merge_histograms([r["latency_hist"] for r in results])
        return {
            "docs": docs,
            "window": window,
            "loadgen_procs": procs,
            "delivered": delivered,
            "deliveries_per_s": delivered / o.duration,
            "updates_per_s": delivered / o.duration / shape.deliveries_per_update,
            "cpu_us_per_delivery": (
                1e6 * usage["server_cpu_s"] / delivered if delivered else float("nan")
            ),
            "p50_ms": histogram_percentile(hist, 0.50, LATENCY_BUCKET_MS),
            "p99_ms": histogram_percentile(hist, 0.99, LATENCY_BUCKET_MS),
            **usage,
            "problems": [p for r in results for p in r["problems"]],
        }

    def conn_jobs(self, server: RunningServer, scenario: str, **more: Any) -> list[Any]:
        """The connection scenarios' shards: connection i on document i % docs."""
        o = self.o
        # The server holds every connection, each load generator its share; both
        # inherited the driver's limit (raised to the hard limit in __main__).
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if limit != resource.RLIM_INFINITY and limit < o.conns + FD_SLACK:
            raise SystemExit(
                f"bench: {o.conns} connections need more than {limit} file descriptors "
                "(RLIMIT_NOFILE); raise the hard limit (ulimit -Hn, as root) or pass --conns"
            )
        prefix = f"{scenario}-{random.getrandbits(32):08x}"
        return [
            (
                scenario,
                self.params(
                    server,
                    conns=o.conns,
                    docs=o.conn_docs,
                    prefix=prefix,
                    shard=k,
                    shards=o.loadgen_procs,
                    **more,
                ),
            )
            for k in range(o.loadgen_procs)
        ]

    def idle10k(self) -> None:
        o = self.o
        self.progress(f"idle: {o.conns} connections on {o.conn_docs} documents")
        with (
            self.server() as server,
            Shards(
                self.conn_jobs(server, "idle", concurrency=max(1, 256 // o.loadgen_procs)),
                self.workdir,
            ) as shards,
        ):
            shards.barrier("start")
            asyncio.run(wait_quiet(server.pid))
            before = rss_kib(server.pid)
            shards.go()
            shards.barrier("connected")
            asyncio.run(wait_quiet(server.pid))
            after = rss_kib(server.pid)
            peak = rss_kib(server.pid, "VmHWM")
            shards.go(0)
            results = shards.results()
        conns = sum(r["conns"] for r in results)
        failed = sum(r["failed"] for r in results)
        self.record(
            "idle10k",
            {
                "conns": conns,
                "rss_before_mib": before / 1024,
                "rss_after_mib": after / 1024,
                "rss_peak_mib": peak / 1024,
                "kib_per_conn": (after - before) / conns if conns else float("nan"),
                "connect_s": max(r["connect_s"] for r in results),
                "problems": [f"{failed} connections failed, e.g. {results[0]['failures'][:1]}"]
                if failed
                else [],
            },
        )

    def storm(self) -> None:
        o = self.o
        self.progress(f"storm: {o.conns} connections, {o.storm_wave} at a time")
        with self.server() as server:
            prefix_jobs = self.conn_jobs(server, "storm", wave=o.storm_wave)
            probe = self.params(server, prefix=prefix_jobs[0][1]["prefix"], baseline_s=1.0)
            with Shards([*prefix_jobs, ("probe", probe)], self.workdir) as shards:
                shards.barrier("ready")
                go = shards.go()
                sleep_until(go)
                cpu = CpuWindow(server.pid, shards.pids[:-1])
                drops = listen_drops()
                shards.barrier("synced")
                usage = cpu.report()
                drops = listen_drops() - drops
                rss_after = rss_kib(server.pid)
                shards.go(0)
                *storms, pings = shards.results()
        waves = sorted(w for r in storms for w in r["waves_s"])
        failed = sum(r["failed"] for r in storms)
        self.record(
            "storm",
            {
                "conns": sum(r["conns"] for r in storms),
                "synced_s": max(r["synced_s"] for r in storms),
                "wave_p50_s": median_of(waves),
                "wave_max_s": max(waves),
                "ping_idle_p99_ms": pings["idle"]["p99_ms"],
                "ping_p50_ms": pings["storm"]["p50_ms"],
                "ping_p99_ms": pings["storm"]["p99_ms"],
                "ping_max_ms": pings["storm"]["max_ms"],
                "pings": pings["pings"],
                "listen_drops": drops,
                "rss_after_mib": rss_after / 1024,
                **usage,
                "problems": [f"{failed} connections failed, e.g. {storms[0]['failures'][:1]}"]
                if failed
                else [],
            },
        )

    def compression(self) -> None:
        """The compression scenario twice: no client offering permessage-deflate, then
        every measured client offering it to the server started with its setting for
        it (where it has one); one row with both."""
        o = self.o
        row: dict[str, Any] = {"setting": "yes" if self.spec.deflate else "none"}
        problems: list[str] = []
        for mode, start in (("off", None), ("deflate", self.spec.deflate)):
            self.progress(f"compression, {mode}")
            with self.server(start) as server:
                params = self.params(
                    server,
                    deflate=mode == "deflate",
                    doc_bytes=int(o.compress_doc_mib * 2**20),
                    chunk_bytes=o.compress_chunk_kib * 1024,
                    sync_peers=o.compress_sync_peers,
                    typing_readers=o.compress_readers,
                    typing_updates=o.compress_updates,
                )
                result = run_load("compression", params)
            problems += [f"{mode}: {p}" for p in result.pop("problems")]
            row |= {f"{key}_{mode}": value for key, value in result.items()}
        self.record("compression-sync", {**row, "problems": problems})  # reports them
        self.record("compression-typing", {**row, "converged": "NO" if problems else "yes"})


def bench_server(spec: ServerSpec, o: Options, workdir: Path) -> None:
    data = workdir / f"{spec.name}-{time.time_ns()}"
    data.mkdir()
    try:
        ServerBench(spec, o, workdir, data).run()
    finally:
        stop_mongodb(data)


def run_main(o: Options, json_path: str | None, keep: bool) -> int:
    check_update_encoding()
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
        write_json(Path(json_path), info, o)
    if o.failures:
        print_failures(o.failures)
        return 1
    return 0
