"""The driver's side of a scenario split over several load-generator processes
(``scenarios/shard.py`` is the other side): start them, move them through named
barriers together, and collect their results."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from . import ROOT
from .servers import benchkit_command


class ShardError(RuntimeError):
    pass


class Shards:
    """Load-generator processes, one per ``(scenario, params)``, started at once.
    ``barrier(name)`` waits until every one of them reached that barrier; ``go()``
    releases them at a moment a little ahead, the same for all; ``results()`` waits
    for their ends. A context manager that kills whatever is still running."""

    def __init__(self, jobs: list[tuple[str, dict[str, Any]]], log_dir: Path) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self.logs: list[Path] = []
        self._lines: list[queue.Queue[str | None]] = []
        self._log_files: list[IO[str]] = []
        for k, (scenario, params) in enumerate(jobs):
            argv, env = benchkit_command("load", scenario, json.dumps(params))
            log = log_dir / f"loadgen-{scenario}-{k}-{time.time_ns()}.log"
            log_file = open(log, "w")  # noqa: SIM115 (closed in close)
            proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env={**os.environ, **env},
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log_file,
                text=True,
            )
            lines: queue.Queue[str | None] = queue.Queue()
            threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
            self.procs.append(proc)
            self.logs.append(log)
            self._lines.append(lines)
            self._log_files.append(log_file)
        self._last: list[str] = [""] * len(self.procs)

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self.procs]

    def __enter__(self) -> Shards:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.close()

    def _next_line(self, k: int, deadline: float, what: str) -> str | None:
        try:
            return self._lines[k].get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise ShardError(f"load generator {k} did not reach {what} in time") from None

    def barrier(self, name: str, timeout_s: float = 600.0) -> None:
        """Wait until every shard printed ``barrier NAME``."""
        deadline = time.monotonic() + timeout_s
        for k in range(len(self.procs)):
            line = self._next_line(k, deadline, f"barrier {name}")
            if line != f"barrier {name}":
                raise ShardError(
                    f"load generator {k}: expected barrier {name}, got {line!r}:\n{self._tail(k)}"
                )

    def go(self, lead_s: float = 0.2) -> float:
        """Release every shard at ``lead_s`` from now; that moment (perf_counter)."""
        at = time.perf_counter() + lead_s
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(f"go {at!r}\n")
            proc.stdin.flush()
        return at

    def results(self, timeout_s: float = 600.0) -> list[dict[str, Any]]:
        """Each shard's result (its last line of output), once all have exited."""
        deadline = time.monotonic() + timeout_s
        out = []
        for k, proc in enumerate(self.procs):
            last = None
            while True:
                line = self._next_line(k, deadline, "its end")
                if line is None:
                    break
                last = line
            proc.wait(max(0.0, deadline - time.monotonic()))
            if proc.returncode != 0 or last is None:
                raise ShardError(f"load generator {k} failed:\n{self._tail(k)}")
            out.append(json.loads(last))
        return out

    def _tail(self, k: int) -> str:
        self._log_files[k].flush()
        return self.logs[k].read_text(errors="replace")[-3000:]

    def close(self) -> None:
        """Kill the shards still running (after a failure); safe to call twice."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for log_file in self._log_files:
            log_file.close()


def _pump(stream: IO[str] | None, lines: queue.Queue[str | None]) -> None:
    """Hand a shard's output to the driver line by line; None at its end."""
    assert stream is not None
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


def sleep_until(at: float) -> None:
    delay = at - time.perf_counter()
    if delay > 0:
        time.sleep(delay)


def merge_histograms(hists: list[dict[str, int]]) -> dict[int, int]:
    merged: dict[int, int] = {}
    for hist in hists:
        for bucket, count in hist.items():
            merged[int(bucket)] = merged.get(int(bucket), 0) + count
    return merged


def histogram_percentile(hist: dict[int, int], q: float, bucket_ms: float) -> float | None:
    """The ``q`` quantile of a latency histogram, in ms (the bucket's upper edge)."""
    total = sum(hist.values())
    if not total:
        return None
    rank = q * (total - 1)
    seen = 0
    for bucket in sorted(hist):
        seen += hist[bucket]
        if seen > rank:
            return (bucket + 1) * bucket_ms
    return (max(hist) + 1) * bucket_ms
