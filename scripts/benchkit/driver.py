"""The driver: for each round and each server, start the server, run every chosen
scenario's load generator against it as a separate process, record the results."""

from __future__ import annotations

import json
import os
import random
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
from .report import machine_info, median_of, print_tables, write_json
from .servers import (
    SERVERS,
    RunningServer,
    ServerSpec,
    benchkit_command,
    collab_outbound_bound_mib,
    stop_mongodb,
)

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
)
DEFAULT_SCENARIOS = tuple(s for s in SCENARIO_NAMES if s != "history")
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
    results: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)

    def record(self, scenario: str, server: str, result: dict[str, Any]) -> None:
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
        self.spec, self.o, self.data = spec, o, data
        self.log = workdir / f"{spec.name}.log"
        self.probe = spec.probe(data)

    def server(self) -> RunningServer:
        return RunningServer(self.spec, self.data, self.log)

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
    return 0
