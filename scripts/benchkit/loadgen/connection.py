"""What the load generator's two clients share: one WebSocket on the ``websockets``
library, a task reading it, and an idempotent close."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from typing import Any

# struct tcp_info (linux/tcp.h): tcpi_bytes_acked and tcpi_bytes_received, u64 each
# at these offsets since Linux 4.1 (RFC 4898's HCThruOctetsAcked and ...Received).
TCP_INFO_BYTES_ACKED = 120
TCP_INFO_BYTES_RECEIVED = 128
TCP_INFO_SIZE = 136


async def connect(url: str, *, deflate: bool = False) -> Any:
    """A WebSocket as every client here opens it: no compression unless ``deflate``
    (no server here compresses by default; keep it equal; with ``deflate`` the client
    offers permessage-deflate with the library's defaults and the server decides),
    no size limit (a sync may be larger than any update), no pings of its own (the
    servers ping; the library answers)."""
    from websockets.asyncio.client import connect as ws_connect

    return await ws_connect(
        url,
        compression="deflate" if deflate else None,
        max_size=None,
        ping_interval=None,
        open_timeout=60,
        close_timeout=2,
    )


class Connection:
    """One open WebSocket whose frames a task hands to ``on_frame`` with their
    arrival time, until the connection closes (then ``closed`` is set)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.closed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    def start_reading(self) -> None:
        self._reader = asyncio.create_task(self._read())

    async def on_frame(self, frame: bytes, arrived: float) -> None:
        raise NotImplementedError

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for frame in self.ws:
                await self.on_frame(frame, time.perf_counter())
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()

    @property
    def deflated(self) -> bool:
        """Whether permessage-deflate was negotiated on this connection."""
        return bool(self.ws.protocol.extensions)

    def tcp_bytes(self) -> tuple[int, int]:
        """(bytes received, bytes sent and acknowledged) on this connection's TCP
        socket since it opened, from the kernel (TCP_INFO): what crossed the wire as
        TCP payload, WebSocket framing and the HTTP upgrade included."""
        sock = self.ws.transport.get_extra_info("socket")
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_SIZE)
        acked, received = struct.unpack_from("=QQ", info, TCP_INFO_BYTES_ACKED)
        return received, acked

    @property
    def close_code(self) -> int | None:
        """The close code the server sent (None: open, or closed without a close frame)."""
        received = self.ws.protocol.close_rcvd
        return None if received is None else int(received.code)

    def stop_reading(self) -> None:
        """Stop reading the socket: the kernel's buffers fill and the server must
        keep (or drop) what it still has for this peer."""
        self.ws.transport.pause_reading()

    def resume_reading(self) -> None:
        self.ws.transport.resume_reading()

    async def send(self, frame: bytes) -> None:
        await self.ws.send(frame)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                self._reader.cancel()
                await self._reader
