"""How many new connections the server takes on at once.

A new connection costs the event loop most between its accept and the end of its
handshake: its request head read and parsed, the WebSocket upgrade, ``open`` and
the first sync. Tornado accepts up to 128 connections each time the listening
socket is ready, whatever is already under way, so in a storm of reconnecting
clients the loop's ready queue fills with thousands of handshake steps and a ping
from a connected peer waits behind all of them.

:class:`Handshakes` counts the connections between their accept and the end of
their handshake; :class:`Acceptor` stops accepting while ``max_handshakes`` are
under way and starts again as they end. The kernel's listen backlog
(``listen_backlog``) holds the rest: a bounded queue that pushes back on clients,
and each pass of the loop does a bounded amount of handshake work.

A handshake ends when its WebSocket is open and synced (collab.web.sockets), when
its first request turns out to be plain HTTP (collab.web.gate: each route bounds
its own work), when its connection closes, or ``HANDSHAKE_SLOT_S`` after its
accept: a client that is slow to send its head, or a handshake waiting on the
store, costs the loop nothing meanwhile and must not keep others out. While
addresses are capped (``max_connections_per_ip``), one address holds at most half
the slots; its further connections are served as they come, as before, within its
cap.
"""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Callable

from tornado.ioloop import IOLoop

# A handshake holds its slot at most this long (seconds): a storm's handshakes
# take milliseconds each, one slow to send its head or waiting on the store is not
# the loop's work.
HANDSHAKE_SLOT_S = 1.0
# Connections accepted at most per readiness of the listening socket (Tornado's).
ACCEPT_BATCH = 128


class Handshakes:
    """Connections between their accept and the end of their handshake, against
    ``limit`` (0: no limit, nothing is counted)."""

    def __init__(
        self, limit: int, *, address_share: int = 0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """``address_share``: slots one address may hold (0: any)."""
        self.limit = limit
        self.address_share = address_share
        self.clock = clock
        self.on_free: Callable[[], None] | None = None  # called when a slot frees up
        self.peak = 0  # the most in progress at once, since the start
        # connection: (accepted at, address), oldest first
        self._open: dict[object, tuple[float, str]] = {}
        self._per_address: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._open)

    @property
    def full(self) -> bool:
        return bool(self.limit) and len(self._open) >= self.limit

    def begin(self, connection: object, address: str) -> None:
        """A connection was accepted: its handshake begins."""
        if not self.limit:
            return
        if self.address_share and self._per_address[address] >= self.address_share:
            return  # served uncounted, within its address's cap
        self._open[connection] = (self.clock(), address)
        self._per_address[address] += 1
        self.peak = max(self.peak, len(self._open))

    def end(self, connection: object) -> None:
        """The connection's handshake ended, or the connection did (idempotent)."""
        entry = self._open.pop(connection, None)
        if entry is not None:
            self._release(entry[1])

    def expire(self) -> float | None:
        """End the handshakes that held their slot ``HANDSHAKE_SLOT_S``; the
        seconds until the next one would expire (None: none in progress)."""
        now = self.clock()
        while self._open:
            connection, (started, address) = next(iter(self._open.items()))
            left = started + HANDSHAKE_SLOT_S - now
            if left > 0:
                return left
            del self._open[connection]
            self._release(address)
        return None

    def _release(self, address: str) -> None:
        self._per_address[address] -= 1
        if self._per_address[address] <= 0:
            del self._per_address[address]
        if self.on_free is not None and len(self._open) < self.limit:
            self.on_free()


class Acceptor:
    """Accepts connections on one listening socket, handing each to ``handle``,
    while ``handshakes`` is not full; paused while it is (the kernel's backlog
    holds what comes meanwhile)."""

    def __init__(
        self,
        sock: socket.socket,
        handle: Callable[[socket.socket, object], None],
        handshakes: Handshakes,
    ) -> None:
        self.sock = sock
        self.handle = handle
        self.handshakes = handshakes
        self.io_loop = IOLoop.current()
        self.reading = False
        self.stopped = False
        self._expiry: object | None = None  # the timer that frees expired slots
        self._read()

    def resume(self) -> None:
        if not self.stopped and not self.reading and not self.handshakes.full:
            self._read()

    def stop(self) -> None:
        """Accept no more (idempotent); the socket is the caller's to close."""
        self.stopped = True
        self._pause()
        if self._expiry is not None:
            self.io_loop.remove_timeout(self._expiry)
            self._expiry = None

    def _read(self) -> None:
        self.io_loop.add_handler(self.sock, self._accept, IOLoop.READ)
        self.reading = True

    def _pause(self) -> None:
        if self.reading:
            self.io_loop.remove_handler(self.sock)
            self.reading = False

    def _accept(self, fd: object, events: int) -> None:
        for _ in range(ACCEPT_BATCH):
            if self.stopped:
                return
            if self.handshakes.full:
                self._pause()
                self._expire_later()
                return
            try:
                connection, address = self.sock.accept()
            except BlockingIOError:
                return  # none waiting
            except ConnectionAbortedError:
                continue  # closed while it waited in the backlog
            self.handle(connection, address)

    def _expire_later(self) -> None:
        if self._expiry is not None:
            return
        left = self.handshakes.expire()
        if left is None or not self.handshakes.full:
            self.resume()
            return
        self._expiry = self.io_loop.call_later(left, self._expired)

    def _expired(self) -> None:
        self._expiry = None
        if self.stopped:
            return
        if self.handshakes.full:
            self._expire_later()
        self.resume()
