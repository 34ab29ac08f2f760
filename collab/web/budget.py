"""Expensive read requests: how many run at once, where their work runs, and
what one may spend.

A read that rebuilds a version (the content now, a version, a state, a diff)
costs CPU in proportion to the history it replays. At most
``max_expensive_requests`` run at once on an instance, and
``max_expensive_requests_per_user`` of one user (the client address when access
is open); past either the request is refused at once with 429, never queued.
Their work (rebuilding, rendering, diffing; the store is read here) runs in
worker processes of their own, as many as may run, started when first needed:
threads would share the event loop's GIL, and one CPU-bound thread beside it
made another peer's acknowledgements ten times slower (1 -> 12 ms median, p99
130 ms); pycrdt also holds the GIL through each of its calls. Each request
spends a ReadBudget (collab.core.limits): past it, 422.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from collab.config import Settings
from collab.core.limits import ReadBudget

# Imported once by the fork server that starts the workers: collab.web.read_workers
# first (it lowers the fork server's CPU priority, and so its workers'), then what the
# workers run (rebuilding, rendering, diffing, attributing).
WORKER_MODULES = [
    "collab.web.read_workers",
    "collab.core.authors",
    "collab.core.diff",
    "collab.core.history",
    "collab.wire.prosemirror",
]


class Busy(Exception):
    """Past a cap on expensive requests: try again later (429)."""


class WorkerLost(Exception):
    """A worker process died under a request (killed, out of memory): 503; the
    next request gets fresh workers."""


class ExpensiveReads:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._total = settings.max_expensive_requests
        self._per_user = settings.max_expensive_requests_per_user
        self._pool: ProcessPoolExecutor | None = None
        self._running: Counter[str] = Counter()

    @property
    def executor(self) -> Executor:
        """The worker processes (started by the first request that needs them)."""
        if self._pool is None:
            # forkserver: the server runs threads (SQLite, the loop's executor), which
            # a child forked from it would inherit half-way through whatever they
            # held; the fork server is a process of its own, without them, started
            # once with the modules the work needs, so that a worker starts in
            # milliseconds, not in the 0.2 s of CPU a spawned one spends importing.
            # Niced (collab.web.read_workers): where the CPUs are short, the process
            # with the event loop (acknowledgements, subscribes) comes first.
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(WORKER_MODULES)
            self._pool = ProcessPoolExecutor(
                self._total,
                mp_context=context,
            )
        return self._pool

    @property
    def running(self) -> int:
        return self._running.total()

    @contextlib.contextmanager
    def admit(self, caller: str) -> Iterator[None]:
        """Hold one of the places while the request runs. Raises Busy past a cap."""
        if self.running >= self._total:
            raise Busy(
                f"{self._total} expensive reads are running on this server: try again shortly"
            )
        if self._running[caller] >= self._per_user:
            raise Busy(
                f"{self._per_user} of your expensive reads are running: wait for them to end"
            )
        self._running[caller] += 1
        try:
            yield
        except BrokenProcessPool:
            self._drop_pool()
            raise WorkerLost("the process rebuilding versions ended abruptly: try again") from None
        finally:
            self._running[caller] -= 1
            if not self._running[caller]:
                del self._running[caller]

    def budget(self, hint: str = "") -> ReadBudget:
        """What one request may spend (``hint``: what to narrow, for its error)."""
        s = self._settings
        return ReadBudget(
            updates=s.max_read_updates, bytes_=s.max_read_bytes, cpu_s=s.max_read_cpu_s, hint=hint
        )

    def _drop_pool(self) -> ProcessPoolExecutor | None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        return pool

    async def close(self) -> None:
        """Nothing new starts; work under way ends by itself (its budget bounds it),
        and then its process, which this waits for."""
        pool = self._drop_pool()
        if pool is not None:
            await asyncio.get_running_loop().run_in_executor(None, pool.shutdown)
