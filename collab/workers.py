"""``collab serve --workers N``: N server processes on one port.

Each worker is a full instance (its own rooms, writer and instance id) that binds
the port with SO_REUSEPORT, so the kernel spreads new connections over them; they
share documents through the store and its change feed as separate servers do
(README, "Several instances"). This process only starts the workers, passes
SIGINT / SIGTERM on to them, restarts one that dies, and exits when they have all
stopped.

SO_REUSEPORT would also let a second deployment bind the same port and take half
its connections, silently: the supervisor holds a lock named after the address
while it runs, and a second one on the same address refuses to start. Workers are
asked to stop (SIGTERM) when their supervisor dies.
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import IO

from collab.backoff import Backoff
from collab.config import Settings

log = logging.getLogger("collab.workers")

WORKER_INDEX_ENV = "COLLAB_WORKER_INDEX"
POLL_S = 0.2
# A worker that exits with an error status sooner than this after its start could
# not start (the port is taken, the store cannot be opened, a bad setting):
# restarting it would not help. (One killed by a signal is restarted.)
STARTUP_GRACE_S = 5.0
RESTART_DELAY_S = 1.0
RESTART_DELAY_MAX_S = 30.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
PR_SET_PDEATHSIG = 1


class AddressInUse(Exception):
    """Another supervisor serves this address."""


def worker_index() -> int | None:
    """This process's worker number, when a supervisor started it."""
    value = os.environ.get(WORKER_INDEX_ENV)
    return int(value) if value is not None else None


def as_worker(settings: Settings, index: int) -> Settings:
    """A worker's settings: an instance id of its own (presence and the feed tell
    instances apart by it)."""
    return settings.replace(instance_id=f"{settings.instance_id}-{index}")


class _Worker:
    def __init__(self, index: int, serve_argv: Sequence[str], instance_id: str) -> None:
        self.index = index
        self.started = time.monotonic()
        self.told: int | None = None  # the stop signal it was sent
        env = {**os.environ, WORKER_INDEX_ENV: str(index), "COLLAB_INSTANCE_ID": instance_id}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "collab", *serve_argv],
            env=env,
            preexec_fn=_stop_with_parent,  # safe: the supervisor runs no threads
        )

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def tell(self, signum: int) -> None:
        if self.told is None and self.running:
            self.told = signum
            self.process.send_signal(signum)

    @property
    def stopped_cleanly(self) -> bool:
        # Stopped by the signal it was passed before it could handle it: clean too.
        code = self.process.returncode
        return code == 0 or (self.told is not None and code == -self.told)


def supervise(settings: Settings, serve_argv: Sequence[str]) -> int:
    """Run ``settings.workers`` copies of ``collab <serve_argv>`` until a signal
    stops them; returns the exit status (0 when every worker stopped cleanly)."""
    try:
        lock = _lock_address(settings.host, settings.port)
    except AddressInUse as exc:
        log.error("could not start: %s", exc)
        return 1
    stop: list[int] = []  # the signal received; the loop passes it on

    def record(signum: int, _frame: FrameType | None) -> None:
        stop.append(signum)

    previous = {s: signal.signal(s, record) for s in STOP_SIGNALS}
    workers: list[_Worker] = []
    try:
        for index in range(settings.workers):
            if not stop:
                workers.append(_Worker(index, serve_argv, settings.instance_id))
        log.info("started %d workers on port %d", len(workers), settings.port)
        backoff = Backoff(RESTART_DELAY_S, RESTART_DELAY_MAX_S)
        while any(w.running for w in workers):
            if stop:
                for worker in workers:
                    worker.tell(stop[0])
            time.sleep(POLL_S)
            if stop:
                continue
            for position, worker in enumerate(workers):
                if worker.running:
                    continue
                code = worker.process.returncode
                if code > 0 and time.monotonic() - worker.started < STARTUP_GRACE_S:
                    log.error(
                        "worker %d could not start (status %s); stopping the others",
                        worker.index,
                        code,
                    )
                    stop.append(signal.SIGTERM)
                    break
                log.error("worker %d exited with status %s; restarting it", worker.index, code)
                time.sleep(backoff.pause())
                if not stop:
                    workers[position] = _Worker(worker.index, serve_argv, settings.instance_id)
            if all(time.monotonic() - w.started > 10 * STARTUP_GRACE_S for w in workers):
                backoff.reset()  # running steadily again
        failed = any(w.process.returncode is not None and not w.stopped_cleanly for w in workers)
        return 1 if failed else 0
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        lock.close()


def _lock_address(host: str, port: int) -> IO[str]:
    """Hold a lock named after the address for as long as the supervisor runs."""
    path = Path(tempfile.gettempdir()) / f"collab-workers-{host}-{port}.lock"
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        handle.close()
        raise AddressInUse(
            f"{host}:{port} is served by the workers of {owner} (lock {path})"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"collab supervisor pid {os.getpid()}")
    handle.flush()
    return handle


def _stop_with_parent() -> None:
    """In a new worker, before it runs: SIGTERM when the supervisor dies (Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: a worker outlives a killed supervisor
