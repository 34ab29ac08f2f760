"""``collab serve --workers N``: N server processes on one port.

Each worker is a full instance (its own rooms, writer and instance id) that binds
the port with SO_REUSEPORT, so the kernel spreads new connections over them; they
share documents through the store and its change feed as separate servers do
(docs/MONGODB.md, "several instances"). This process only starts the workers,
passes SIGINT / SIGTERM on to them, restarts one that dies, and exits when they
have all stopped.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

from collab.config import Settings

log = logging.getLogger("collab.workers")

WORKER_INDEX_ENV = "COLLAB_WORKER_INDEX"
RESTART_DELAY_S = 1.0
POLL_S = 0.2


def worker_index() -> int | None:
    """This process's worker number, when a supervisor started it."""
    value = os.environ.get(WORKER_INDEX_ENV)
    return int(value) if value is not None else None


def as_worker(settings: Settings, index: int) -> Settings:
    """A worker's settings: an instance id of its own (presence and the feed tell
    instances apart by it)."""
    return settings.replace(instance_id=f"{settings.instance_id}-{index}")


def supervise(settings: Settings, serve_argv: Sequence[str]) -> int:
    """Run ``settings.workers`` copies of ``collab <serve_argv>`` until a signal
    stops them; returns the exit status (0 when every worker stopped cleanly)."""
    stopping: list[int] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)
        for process in workers.values():
            if process.poll() is None:
                process.send_signal(signum)

    workers: dict[int, subprocess.Popen[bytes]] = {}
    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for index in range(settings.workers):
            workers[index] = _start(index, serve_argv, settings.instance_id)
        log.info("started %d workers on port %d", settings.workers, settings.port)
        while any(p.poll() is None for p in workers.values()):
            time.sleep(POLL_S)
            if stopping:
                continue
            for index, process in list(workers.items()):
                if process.poll() is not None:
                    log.error(
                        "worker %d exited with status %s; restarting it",
                        index,
                        process.returncode,
                    )
                    time.sleep(RESTART_DELAY_S)
                    if not stopping:
                        workers[index] = _start(index, serve_argv, settings.instance_id)
        return 0 if all(p.returncode == 0 for p in workers.values()) else 1
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _start(index: int, serve_argv: Sequence[str], instance_id: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, WORKER_INDEX_ENV: str(index), "COLLAB_INSTANCE_ID": instance_id}
    return subprocess.Popen([sys.executable, "-m", "collab", *serve_argv], env=env)
