"""When Python's cyclic garbage collector looks at the server's long-lived objects.

A full collection (generation 2) walks every object the collector tracks, and the
server's are mostly long-lived: each open connection is a hundred or so (Tornado's
request, handler, stream and protocol, collab's connection and session). At 4,000
connections a full collection took up to 220 ms of the event loop's CPU, and
CPython runs one each time the long-lived objects have grown by a quarter: seven
in a storm of 4,000 reconnections, each longer than the last. They, not the
handshakes, set the 99th percentile of a connected peer's ping (docs/PERFORMANCE.md).

:class:`LongLivedObjects` sets what survived a full collection aside (``gc.freeze``),
so that the next full collections walk only what was made since. Cycles among the
objects set aside cannot be freed while they are, so every ``rescan_s`` they are
put back (``gc.unfreeze``): the next full collection walks everything once, frees
what became garbage, and sets the survivors aside again.

Process-wide: ``collab serve`` installs it (collab.cli); an application that embeds
collab keeps its own policy.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

log = logging.getLogger("collab")


class LongLivedObjects:
    """Sets aside what survives each full collection, and puts it back every
    ``rescan_s`` seconds (:meth:`run`)."""

    def __init__(self, rescan_s: float) -> None:
        self.rescan_s = rescan_s
        self.installed = False

    def install(self) -> None:
        """From now on; and what the server made while it started (modules, its
        objects) is collected and set aside at once: else the first full collection
        while it serves walks all of it, 15-25 ms with the loop stopped, which one
        fan-out to 50 readers met in two runs of three (scripts/bench --scenarios
        latency)."""
        if not self.installed:
            gc.collect()
            gc.freeze()
            gc.callbacks.append(self._collected)
            self.installed = True

    def uninstall(self) -> None:
        """Leave the collector as Python has it (idempotent)."""
        if self.installed:
            gc.callbacks.remove(self._collected)
            self.installed = False
            gc.unfreeze()

    def rescan(self) -> None:
        """Put the objects set aside back: the next full collection walks them."""
        log.debug("garbage collector: %d long-lived objects put back", gc.get_freeze_count())
        gc.unfreeze()

    async def run(self) -> None:
        """Rescan every ``rescan_s`` until cancelled."""
        while True:
            await asyncio.sleep(self.rescan_s)
            self.rescan()

    def _collected(self, phase: str, info: dict[str, Any]) -> None:
        # Called by the collector, in whichever thread collected: freezing only
        # moves its lists, under the GIL.
        if phase == "stop" and info["generation"] == 2:
            gc.freeze()
