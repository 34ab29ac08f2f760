"""The tables: one per scenario, one row per server, each figure the median over
rounds; the machine the run was on; every round's raw figures as JSON."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .servers import NODE_SERVER, SERVERS
from .shapes import SHAPES

if TYPE_CHECKING:
    from .driver import Options

Column = tuple[str, str, str]  # (heading, result key, format)

LATENCY_COLUMNS: list[Column] = [
    ("p50 ms", "p50_ms", "{:.2f}"),
    ("p99 ms", "p99_ms", "{:.2f}"),
    ("max ms", "max_ms", "{:.2f}"),
    ("missing", "missing", "{:.0f}"),
]
CPU_COLUMNS: list[Column] = [
    ("server CPU %", "server_cpu_pct", "{:.0f}"),
    ("loadgen CPU %", "client_cpu_pct", "{:.0f}"),
]
THROUGHPUT_COLUMNS: list[Column] = [
    ("accepted/s", "accepted_per_s", "{:.0f}"),
    ("durable/s", "durable_per_s", "{:.0f}"),
    ("backlog", "durable_backlog", "{:.0f}"),
    ("catch-up s", "durable_catch_up_s", "{:.2f}"),
    ("server CPU %", "server_cpu_pct", "{:.0f}"),
    ("CPU ms / 1k", "server_cpu_ms_per_1k", "{:.0f}"),
    ("loadgen CPU %", "client_cpu_pct", "{:.0f}"),
    ("converged", "converged", "{}"),
]
RSS_COLUMNS: list[Column] = [
    ("RSS before MiB", "rss_before_mib", "{:.1f}"),
    ("peak MiB", "rss_peak_mib", "{:.1f}"),
    ("growth MiB", "rss_growth_mib", "{:.1f}"),
]

SHAPE_COLUMNS: list[Column] = [
    ("deliveries/s", "deliveries_per_s", "{:.0f}"),
    ("updates/s", "updates_per_s", "{:.0f}"),
    ("CPU us / delivery", "cpu_us_per_delivery", "{:.1f}"),
    ("server CPU %", "server_cpu_pct", "{:.0f}"),
    ("p50 ms", "p50_ms", "{:.2f}"),
    ("p99 ms", "p99_ms", "{:.2f}"),
    ("loadgen CPU %", "client_cpu_pct", "{:.0f}"),
    ("procs", "loadgen_procs", "{:.0f}"),
    ("busiest %", "client_cpu_max_pct", "{:.0f}"),
    ("other CPU %", "other_cpu_pct", "{:.0f}"),
    ("server waited %", "server_waited_pct", "{:.0f}"),
    ("converged", "converged", "{}"),
]
SHAPE_TITLE = (
    "{shape}: {docs} document(s) x {peers} peers, {writers} writing each, {mode}, "
    "{duration:g} s (deliveries: an update reaching one other peer of its document)"
)

# Per result key, or per scenario family (a key up to its first "-"): title, columns.
TABLES: dict[str, tuple[str, list[Column]]] = {
    **{name: (SHAPE_TITLE, SHAPE_COLUMNS) for name in SHAPES},
    "idle10k": (
        "Idle connections: {conns} synced y-websocket connections on {conn_docs} "
        "documents, opened 256 at a time (server VmRSS once it is quiet)",
        [
            ("RSS before MiB", "rss_before_mib", "{:.1f}"),
            ("after MiB", "rss_after_mib", "{:.1f}"),
            ("peak MiB", "rss_peak_mib", "{:.1f}"),
            ("KiB / conn", "kib_per_conn", "{:.1f}"),
            ("connect s", "connect_s", "{:.1f}"),
            ("converged", "converged", "{}"),
        ],
    ),
    "storm": (
        "Connection storm: {conns} connections on {conn_docs} documents, {storm_wave} "
        "opened at once, the next {storm_wave} when those synced; WebSocket ping round "
        "trips from a probe connection in its own process (idle: the second before)",
        [
            ("all synced s", "synced_s", "{:.1f}"),
            ("wave p50 s", "wave_p50_s", "{:.2f}"),
            ("wave max s", "wave_max_s", "{:.2f}"),
            ("ping idle p99 ms", "ping_idle_p99_ms", "{:.1f}"),
            ("ping p50 ms", "ping_p50_ms", "{:.1f}"),
            ("ping p99 ms", "ping_p99_ms", "{:.1f}"),
            ("ping max ms", "ping_max_ms", "{:.1f}"),
            ("SYNs dropped", "listen_drops", "{:.0f}"),
            ("server CPU %", "server_cpu_pct", "{:.0f}"),
            ("loadgen CPU %", "client_cpu_pct", "{:.0f}"),
            ("other CPU %", "other_cpu_pct", "{:.0f}"),
            ("server waited %", "server_waited_pct", "{:.0f}"),
            ("RSS after MiB", "rss_after_mib", "{:.1f}"),
            ("converged", "converged", "{}"),
        ],
    ),
    "compression-sync": (
        "Compression, first sync of a {compress_doc_mib:g} MiB document to a new peer "
        "(mean of {compress_sync_peers}): TCP bytes it received, without and with "
        "permessage-deflate offered",
        [
            ("setting", "setting", "{}"),
            ("negotiated", "sync_negotiated_deflate", "{}"),
            ("wire MiB off", "sync_wire_mib_off", "{:.2f}"),
            ("wire MiB deflate", "sync_wire_mib_deflate", "{:.2f}"),
            ("ms off", "sync_ms_off", "{:.0f}"),
            ("ms deflate", "sync_ms_deflate", "{:.0f}"),
            ("CPU ms off", "sync_cpu_ms_off", "{:.0f}"),
            ("CPU ms deflate", "sync_cpu_ms_deflate", "{:.0f}"),
            ("converged", "converged", "{}"),
        ],
    ),
    "compression-typing": (
        "Compression, typing: 1 writer, {compress_readers} readers, {compress_updates} "
        "8-character updates, each sent once the previous reached every reader "
        "(TCP bytes per delivery; server CPU per delivery)",
        [
            ("setting", "setting", "{}"),
            ("negotiated", "typing_negotiated_deflate", "{}"),
            ("message B", "typing_message_b_off", "{:.1f}"),
            ("wire B off", "typing_wire_b_off", "{:.1f}"),
            ("wire B deflate", "typing_wire_b_deflate", "{:.1f}"),
            ("writer in B off", "typing_writer_in_b_off", "{:.1f}"),
            ("CPU us off", "typing_cpu_us_off", "{:.1f}"),
            ("CPU us deflate", "typing_cpu_us_deflate", "{:.1f}"),
            ("p50 ms off", "typing_p50_ms_off", "{:.2f}"),
            ("p50 ms deflate", "typing_p50_ms_deflate", "{:.2f}"),
            ("converged", "converged", "{}"),
        ],
    ),
    "latency": (
        "Fan-out latency: 1 writer, {readers} readers, {latency_updates} appends at "
        "{latency_rate:g}/s (ms from send to arrival at each reader)",
        [*LATENCY_COLUMNS, *CPU_COLUMNS],
    ),
    "crosslag": (
        "Cross-instance lag: 1 writer on one process, {crosslag_readers} readers on another "
        "on the same store, {crosslag_updates} appends at 100/s (ms from send to arrival)",
        [
            *LATENCY_COLUMNS,
            ("reader-side CPU %", "server_cpu_pct", "{:.0f}"),
            ("loadgen CPU %", "client_cpu_pct", "{:.0f}"),
        ],
    ),
    "throughput": (
        "Throughput: {writers} writers on {where}, {duration:g} s, window {window} "
        "(appends/s received by an observer; durable/s from the server's database)",
        THROUGHPUT_COLUMNS,
    ),
    "durable50": (
        "Durable acks: {durable_writers} native writers on 1 document, window "
        "{durable_window} unacked each, {duration:g} s (acks/s); then half that rate, "
        "open loop (ms from send to ack)",
        [
            ("acked/s", "acked_per_s", "{:.0f}"),
            ("CPU ms / 1k", "server_cpu_ms_per_1k", "{:.0f}"),
            *CPU_COLUMNS,
            ("half rate/s", "half_rate", "{:.0f}"),
            ("p50 ms", "p50_ms", "{:.2f}"),
            ("p99 ms", "p99_ms", "{:.2f}"),
            ("max ms", "max_ms", "{:.2f}"),
            ("server CPU % (half)", "half_server_cpu_pct", "{:.0f}"),
            ("loadgen CPU % (half)", "half_client_cpu_pct", "{:.0f}"),
            ("converged", "converged", "{}"),
        ],
    ),
    "relay50": (
        "Relay: {durable_writers} y-websocket writers on 1 document, {duration:g} s, "
        "window {window} (appends/s received by an observer): the durable scenario "
        "without acks, for every server",
        THROUGHPUT_COLUMNS,
    ),
    "memory": (
        "Memory (VmRSS): {memory_conns} idle connections on {memory_docs} documents, then "
        "{memory_updates} appends per document relayed to every connection",
        [
            ("idle MiB", "rss_idle_mib", "{:.1f}"),
            ("connected MiB", "rss_connected_mib", "{:.1f}"),
            ("KiB / conn", "kib_per_conn", "{:.1f}"),
            ("after appends MiB", "rss_loaded_mib", "{:.1f}"),
            ("appends +MiB", "fill_delta_mib", "{:.1f}"),
            ("fill s", "fill_s", "{:.2f}"),
        ],
    ),
    "stalled": (
        "Stalled reader: it stops reading while {flood_mb:g} MB of {flood_value_kib} KiB "
        "updates pass through its document, an observer reading along "
        "(bound: collab's outbound_queue_bytes + 16 MiB)",
        [
            *RSS_COLUMNS,
            ("bound MiB", "bound_mib", "{:.0f}"),
            ("within", "within_bound", "{}"),
            ("stalled reader", "stalled_reader", "{}"),
            ("write s", "write_s", "{:.1f}"),
            *CPU_COLUMNS,
            ("converged", "converged", "{}"),
        ],
    ),
    "fastwriter": (
        "Fast writer over {protocol}: {flood_mb:g} MB of {flood_value_kib} KiB updates sent "
        "without waiting ({done}/s until the last was {done_how})",
        [
            ("updates/s", "done_per_s", "{:.0f}"),
            ("MB/s", "mb_per_s", "{:.1f}"),
            ("all durable s", "durable_s", "{:.1f}"),
            *RSS_COLUMNS,
            ("refused", "refused", "{:.0f}"),
            ("lost", "lost", "{:.0f}"),
            ("writer closed", "writer_closed", "{}"),
            *CPU_COLUMNS,
            ("converged", "converged", "{}"),
        ],
    ),
    "history": (
        "History: the state at a random seq of a document of {size} updates, "
        "{history_requests} requests one at a time (ms per request; update-log rows read)",
        [
            ("p50 ms", "p50_ms", "{:.1f}"),
            ("p99 ms", "p99_ms", "{:.1f}"),
            ("max ms", "max_ms", "{:.1f}"),
            ("rows p50", "rows_p50", "{:.0f}"),
            ("rows max", "rows_max", "{:.0f}"),
        ],
    ),
    "coldload": (
        "Cold load: a document of {cold_updates} stored appends, first full sync after a "
        "restart ({cold_restarts} restarts)",
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


def median_of(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def median_result(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per key, the median over repeats of the numeric values (others: the first
    round's, unless a round differs: then every round's, joined)."""
    out: dict[str, Any] = {}
    for key in runs[0]:
        values = [r.get(key) for r in runs]
        numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        if numbers:
            out[key] = statistics.median(numbers)
        else:
            distinct = list(dict.fromkeys(str(v) for v in values))
            out[key] = values[0] if len(distinct) == 1 else " / ".join(distinct)
    out["runs"] = len(runs)
    return out


def table_context(key: str, o: Options) -> dict[str, Any]:
    """What a table's title names, from the options and the result key."""
    family, _, suffix = key.partition("-")
    shape = SHAPES.get(family)
    shaped = {}
    if shape is not None:
        shaped = {
            "shape": shape.name,
            "docs": max(1, round(shape.docs * o.shape_scale)),
            "peers": shape.peers,
            "writers": shape.writers,
            "mode": "one update in flight per writer"
            if suffix == "1"
            else f"saturation: {suffix} updates in flight per writer",
        }
    return {
        **{k: v for k, v in vars(o).items() if k not in ("results", "failures")},
        **shaped,
        "readers": suffix,
        "size": suffix,
        "where": "1 shared document" if key.endswith("shared") else f"{o.writers} documents",
        "protocol": "the native protocol (/ws)" if suffix == "native" else "y-websocket",
        "done": "acks" if suffix == "native" else "updates",
        "done_how": "acknowledged" if suffix == "native" else "relayed to an observer",
    }


def print_tables(o: Options) -> None:
    print()
    print("Servers (each its own process on loopback)")
    width = max(len(name) for name in o.servers)
    for name in o.servers:
        print(f"  {name.ljust(width)}  persistence: {SERVERS[name].persists}")
    for key, per_server in o.results.items():
        title, columns = TABLES.get(key) or TABLES[key.split("-")[0]]
        print()
        print(title.format(**table_context(key, o)))
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
        print_rows([headings, *rows])


def print_failures(failures: list[str]) -> None:
    """What did not converge, after the tables, so that nobody reads a figure of a
    run that lost or doubled an update without seeing it."""
    print()
    print(f"FAILED: {len(failures)} check(s) did not pass; the rows marked NO are not valid")
    for failure in failures:
        print(f"  {failure}")


def print_rows(rows: list[list[str]]) -> None:
    """Left-aligned first column, the others right-aligned."""
    widths = [max(len(str(x)) for x in col) for col in zip(*rows, strict=True)]
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


def write_json(path: Path, info: dict[str, str], o: Options) -> None:
    options = vars(o) | {"results": None, "failures": None}  # they have their own keys
    path.write_text(
        json.dumps(
            {"machine": info, "options": options, "results": o.results, "failures": o.failures},
            indent=2,
        )
    )
