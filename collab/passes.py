"""Work done once the current pass of the event loop ends, for many objects at
one loop callback.

A busy server has many rooms and sockets with something to send in one pass; each
scheduling its own flush with ``call_soon`` cost a handle, a context copy and a
callback apiece, a fair share of the work when each room sees one update a pass.

    flushes = EndOfPass(log)
    if not self._flush_queued:
        self._flush_queued = True
        flushes.call(self.flush)      # runs, with every other call, after this pass
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable


class EndOfPass:
    """Callables run together, in the order given, by one loop callback after the
    current pass; one that raises is logged and the others still run."""

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._calls: list[Callable[[], None]] = []
        self._handle: asyncio.Handle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def call(self, fn: Callable[[], None]) -> None:
        if self._handle is not None and not self._loop.is_running():  # type: ignore[union-attr]
            # Scheduled on a loop that has stopped (tests, embedding): what it was
            # to run belongs to that loop.
            self._calls.clear()
            self._handle = None
        self._calls.append(fn)
        if self._handle is None:
            self._loop = asyncio.get_running_loop()
            self._handle = self._loop.call_soon(self._run)

    def _run(self) -> None:
        calls, self._calls = self._calls, []
        self._handle = None
        for fn in calls:
            try:
                fn()
            except Exception:
                self._log.exception("%r failed", fn)
