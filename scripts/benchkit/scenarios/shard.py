"""The load generator's side of a scenario split over several processes (shards).

The driver (``benchkit.shards``) starts the shards and moves them through named
barriers together: a shard prints ``barrier NAME`` when it reaches one and waits for
``go T`` on its standard input, T being the moment (``time.perf_counter()``, which is
CLOCK_MONOTONIC on Linux and so the same clock in every process) at which every shard
goes on. Between barriers the driver measures what the shards cannot see alone (the
server's and every shard's CPU, the server's memory). A shard's result is its last
line on standard output, as for every scenario.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import Iterable

# Latencies travel from shards to the driver as counts per 0.01 ms (a histogram).
LATENCY_BUCKET_MS = 0.01

if "CLOCK_MONOTONIC" not in time.get_clock_info("perf_counter").implementation:
    raise SystemExit("benchkit: shards need perf_counter to be CLOCK_MONOTONIC (Linux)")


async def barrier(name: str) -> float:
    """Tell the driver this shard reached ``name``; wait until the driver says go
    and until the moment it names, which this returns."""
    print(f"barrier {name}", flush=True)
    line = await asyncio.to_thread(sys.stdin.readline)
    words = line.split()
    if not 1 <= len(words) <= 2 or words[0] != "go":
        raise SystemExit(f"benchkit shard: expected 'go T' after barrier {name}, got {line!r}")
    # A bare "go" (a person driving one shard, e.g. `yes go | ... load rooms ...`): now.
    at = float(words[1]) if len(words) == 2 else time.perf_counter()
    delay = at - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)
    return at


def latency_histogram(latencies_ms: Iterable[float]) -> dict[str, int]:
    """Latencies as counts per LATENCY_BUCKET_MS bucket (keys: the bucket's index, as
    JSON object keys are strings), which the driver merges over shards."""
    counts = Counter(int(ms / LATENCY_BUCKET_MS) for ms in latencies_ms)
    return {str(k): v for k, v in counts.items()}
