"""Heartbeats: one task pings every socket, and drops the peers that went silent.

Every ``ping_interval_s`` each open socket gets a WebSocket ping; a socket from
which nothing at all (no pong, no message) has come ``ping_timeout_s`` after its
ping is aborted at once, unless the server is not reading it (its handler's
``heard_since`` says so: the pongs wait unread behind backpressure). The pings go
out ``PING_BATCH`` sockets per pass of the event loop. Tornado's own ping would
start a close handshake with a peer that is gone and wait 5 s for the answer; a
task per socket would cost each connection about 2 KiB.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection
from typing import Protocol

log = logging.getLogger("collab.access")

# Sockets pinged per pass of the event loop: each ping is a write to its socket,
# and 8,000 at once held the loop for about 100 ms of CPU, a stall every peer's
# messages waited behind.
PING_BATCH = 256


class Pingable(Protocol):
    remote: str

    def ping_now(self) -> bool: ...

    def heard_since(self, moment: float) -> bool: ...

    def abort(self) -> None: ...


async def beat(
    sockets: Callable[[], Collection[Pingable]], interval_s: float, answer_within_s: float
) -> None:
    """Run until cancelled: ping, wait for the answers, drop the silent ones."""
    while True:
        pinged_at = time.monotonic()
        everyone = list(sockets())
        pinged: list[Pingable] = []
        for start in range(0, len(everyone), PING_BATCH):
            if start:
                await asyncio.sleep(0)  # the others' turn
            pinged += [
                socket for socket in everyone[start : start + PING_BATCH] if socket.ping_now()
            ]
        await asyncio.sleep(answer_within_s)
        current = sockets()
        for socket in pinged:
            if socket in current and not socket.heard_since(pinged_at):
                log.info(
                    "%s: no answer %.1fs after a ping; dropping it", socket.remote, answer_within_s
                )
                socket.abort()
        await asyncio.sleep(max(0.0, interval_s - answer_within_s))
