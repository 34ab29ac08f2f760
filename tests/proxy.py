"""A TCP proxy on loopback that tests use as a bad network between clients and the
server: it can cut every connection (as a dropped Wi-Fi does), stall them (bytes
held, connections open: a sleeping laptop), and refuse new ones for a while."""

from __future__ import annotations

import asyncio
import contextlib


class Proxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.connections = 0  # accepted so far
        self.cuts = 0
        self._server: asyncio.Server | None = None
        self._pairs: set[_Pair] = set()
        self._refusing = False
        self._flowing = asyncio.Event()
        self._flowing.set()

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        pair = _Pair(writer, up_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, pair),
                self._pipe(up_reader, writer, pair),
            )
        finally:
            self._pairs.discard(pair)
            pair.abort()

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, pair: _Pair
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                data = await source.read(65536)
                if not data or pair.dead:
                    break
                await self._flowing.wait()  # stalled: hold the bytes
                if pair.dead:
                    break
                sink.write(data)
                await sink.drain()
        pair.abort()

    def cut(self) -> None:
        """Drop every open connection at once, without a close handshake."""
        self.cuts += 1
        for pair in list(self._pairs):
            pair.abort()

    def stall(self) -> None:
        """Hold every byte in both directions; connections stay open."""
        self._flowing.clear()

    def resume(self) -> None:
        """Deliver what was held and flow again."""
        self._flowing.set()

    def refuse(self) -> None:
        """Drop new connections as they come (the network is down)."""
        self._refusing = True

    def accept(self) -> None:
        self._refusing = False

    async def close(self) -> None:
        self.cut()
        self._flowing.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class _Pair:
    def __init__(self, downstream: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.writers = (downstream, upstream)
        self.dead = False

    def abort(self) -> None:
        if self.dead:
            return
        self.dead = True
        for writer in self.writers:
            writer.transport.abort()
