"""Benchmark collab beside other y-websocket servers: ``scripts/bench [run] [options]``.

Every server runs as its own subprocess on loopback and is driven by a separate
load-generator process (``load``), over the y-websocket protocol that all of them
speak, and over collab's native protocol where a scenario needs its acks. Run it
through ``scripts/bench``, which installs the pinned baselines first;
scripts/benchkit/README.md says what each scenario measures and how to read the tables.

Commands (the first is the default):

    run [options]                   drive every scenario against every server
    load SCENARIO PARAMS            one scenario of the load generator (JSON out)
    serve-pycrdt --port N [--sqlite PATH] [--deflate]
                                    the pycrdt-websocket baseline server
    serve-bare --port N [--deflate] the bare Tornado + pycrdt relay (a floor)
"""

from __future__ import annotations

import argparse
import resource
import sys
from collections.abc import Sequence

from .driver import DEFAULT_SCENARIOS, SCENARIO_NAMES, Options, run_main
from .servers import SERVERS


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench", description=(__doc__ or "").split("\n\n")[0])
    commands = parser.add_subparsers(dest="command")

    run = commands.add_parser("run", help="run every scenario against every server (default)")
    run.add_argument(
        "--servers", default=",".join(SERVERS), help=f"comma-separated, of {', '.join(SERVERS)}"
    )
    run.add_argument(
        "--scenarios",
        default=",".join(DEFAULT_SCENARIOS),
        help=f"comma-separated subset of {','.join(SCENARIO_NAMES)} "
        f"(default: {','.join(DEFAULT_SCENARIOS)})",
    )
    run.add_argument("--repeat", type=int, default=1, help="rounds; tables show medians")
    run.add_argument("--long", action="store_true", help="longer, larger runs (about 4x)")
    run.add_argument("--readers", default="10,50", help="fan-out reader counts")
    run.add_argument(
        "--latency-updates", type=int, default=None, help="appends per latency run (default 200)"
    )
    run.add_argument("--latency-rate", type=float, default=50.0, help="appends per second")
    run.add_argument("--writers", type=int, default=4, help="throughput writers")
    run.add_argument(
        "--duration", type=float, default=None, help="throughput and durable window, s (5)"
    )
    run.add_argument("--warmup", type=float, default=1.0, help="before the window, s")
    run.add_argument("--window", type=int, default=64, help="appends in flight per writer")
    run.add_argument(
        "--catch-up-s", type=float, default=15.0, help="longest wait for the durable backlog"
    )
    run.add_argument(
        "--durable-writers", type=int, default=50, help="writers on one document (durable50)"
    )
    run.add_argument(
        "--durable-window", type=int, default=16, help="unacked updates per durable writer"
    )
    run.add_argument("--memory-docs", type=int, default=None, help="documents (default 100)")
    run.add_argument("--memory-conns", type=int, default=None, help="connections (default 1000)")
    run.add_argument("--memory-updates", type=int, default=100, help="appends per document")
    run.add_argument(
        "--flood-mb", type=float, default=100.0, help="MB of updates (stalled, fastwriter)"
    )
    run.add_argument(
        "--flood-value-kib", type=int, default=32, help="KiB per update (stalled, fastwriter)"
    )
    run.add_argument(
        "--flood-window", type=int, default=4, help="stalled: updates the observer may lag"
    )
    run.add_argument(
        "--cold-updates",
        type=int,
        default=10_000,
        help="stored appends (100000: the 100k cold load)",
    )
    run.add_argument("--cold-restarts", type=int, default=3)
    run.add_argument(
        "--shape-windows",
        default="1,16",
        help="rooms10x10, rooms100x3, crowd50: updates in flight per writer, one run each",
    )
    run.add_argument(
        "--shape-scale",
        type=float,
        default=1.0,
        help="rooms10x10, rooms100x3: documents x this (e.g. 0.1 for a short trial)",
    )
    run.add_argument(
        "--loadgen-procs",
        type=int,
        default=1,
        help="load-generator processes for the shapes (split by document), idle10k, storm",
    )
    run.add_argument("--conns", type=int, default=10_000, help="idle10k, storm: connections")
    run.add_argument("--conn-docs", type=int, default=1_000, help="idle10k, storm: documents")
    run.add_argument("--storm-wave", type=int, default=1_000, help="storm: opened at once")
    run.add_argument(
        "--compress-doc-mib", type=float, default=10.0, help="compression: document to sync"
    )
    run.add_argument(
        "--compress-chunk-kib", type=int, default=256, help="compression: KiB per seeded update"
    )
    run.add_argument("--compress-sync-peers", type=int, default=3, help="compression: new peers")
    run.add_argument(
        "--compress-readers", type=int, default=10, help="compression: readers of the typing"
    )
    run.add_argument(
        "--compress-updates", type=int, default=2_000, help="compression: typed updates"
    )
    run.add_argument("--json", default=None, help="also write every result to this file")
    run.add_argument("--keep", action="store_true", help="keep the data and server logs")

    load = commands.add_parser("load", help="(internal) one scenario of the load generator")
    load.add_argument("scenario")
    load.add_argument("params")

    serve = commands.add_parser("serve-pycrdt", help="(internal) the pycrdt-websocket baseline")
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--sqlite", default=None, help="persist to pycrdt-store's SQLiteYStore")
    serve.add_argument("--deflate", action="store_true", help="accept permessage-deflate")

    bare = commands.add_parser("serve-bare", help="(internal) the bare Tornado + pycrdt relay")
    bare.add_argument("--port", type=int, required=True)
    bare.add_argument("--deflate", action="store_true", help="accept permessage-deflate")

    return parser.parse_args(argv if argv and argv[0] in commands.choices else ["run", *argv])


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    if args.command == "load":
        from .scenarios import SCENARIOS, load_main

        if args.scenario not in SCENARIOS:
            raise SystemExit(f"bench: unknown scenario {args.scenario}; known: {sorted(SCENARIOS)}")
        return load_main(args.scenario, args.params)
    if args.command == "serve-pycrdt":
        from .pycrdt_server import serve_pycrdt_main

        return serve_pycrdt_main(args.port, args.sqlite, args.deflate)
    if args.command == "serve-bare":
        from .bare_server import serve_bare_main

        return serve_bare_main(args.port, args.deflate)
    scale = 4 if args.long else 1
    servers = [s for s in args.servers.split(",") if s]
    unknown = [s for s in servers if s not in SERVERS]
    if unknown:
        raise SystemExit(f"bench: unknown server(s) {unknown}; known: {', '.join(SERVERS)}")
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = [s for s in scenarios if s not in SCENARIO_NAMES]
    if unknown:
        raise SystemExit(
            f"bench: unknown scenario(s) {unknown}; known: {', '.join(SCENARIO_NAMES)}"
        )
    options = Options(
        servers=servers,
        scenarios=scenarios,
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
        durable_writers=args.durable_writers,
        durable_window=args.durable_window,
        flood_mb=args.flood_mb,
        flood_value_kib=args.flood_value_kib,
        flood_window=args.flood_window,
        shape_windows=tuple(int(n) for n in args.shape_windows.split(",") if n),
        shape_scale=args.shape_scale,
        loadgen_procs=max(1, args.loadgen_procs),
        conns=args.conns,
        conn_docs=args.conn_docs,
        storm_wave=args.storm_wave,
        compress_doc_mib=args.compress_doc_mib,
        compress_chunk_kib=args.compress_chunk_kib,
        compress_sync_peers=args.compress_sync_peers,
        compress_readers=args.compress_readers,
        compress_updates=args.compress_updates,
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
