"""The pycrdt-websocket baseline server (``python -m benchkit serve-pycrdt``)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from . import HOST


def serve_pycrdt_main(port: int, sqlite_path: str | None, deflate: bool = False) -> int:
    """pycrdt-websocket's WebsocketServer behind its ASGIServer on uvicorn (plain
    asyncio loop, no uvloop, as collab runs). With ``sqlite_path``, rooms persist
    to pycrdt-store's SQLiteYStore and load from it, as Jupyter wires them. With
    ``deflate``, uvicorn accepts permessage-deflate from a client that offers it."""
    import uvicorn
    from pycrdt.websocket import ASGIServer, WebsocketServer, YRoom, exception_logger

    if sqlite_path:
        from pycrdt.store import SQLiteYStore, YDocNotFound

        class Store(SQLiteYStore):
            db_path = sqlite_path

    class Server(WebsocketServer):
        """Starts (and, with a store, first loads) each room once; the others who
        join meanwhile wait for that. Without this, pycrdt-websocket 0.16.5 leaves a
        client that joins a room while another client starts it waiting forever
        (YRoom.start holds its start lock for the room's whole life)."""

        def __init__(self) -> None:
            # With a store, rooms stay after their last client leaves: the default
            # clean-up stops the room, which cancels the updates still waiting for
            # SQLiteYStore.write (one commit each), and they are never stored.
            super().__init__(exception_handler=exception_logger, auto_clean_rooms=not sqlite_path)
            self._starting: dict[str, asyncio.Event] = {}

        async def get_room(self, name: str) -> YRoom:
            while name in self._starting:
                await self._starting[name].wait()
            room = self.rooms.get(name)
            if room is not None and room.started.is_set():
                return room
            self._starting[name] = started = asyncio.Event()
            try:
                if room is None and sqlite_path:
                    store = Store(path=name, log=self.log)
                    room = YRoom(
                        ready=False, ystore=store, exception_handler=exception_logger, log=self.log
                    )
                    self.rooms[name] = room
                    assert self._task_group is not None
                    await self._task_group.start(store.start)
                    with contextlib.suppress(YDocNotFound):
                        await store.apply_updates(room.ydoc)
                    room.ready = True  # from now on, updates are relayed and stored
                return await super().get_room(name)
            finally:
                del self._starting[name]
                started.set()

    async def main() -> None:
        websocket_server = Server()
        asgi = ASGIServer(websocket_server)

        async def app(scope: Any, receive: Any, send: Any) -> None:
            async def tolerant_send(message: Any) -> None:
                # A room broadcasts in tasks of its own; a peer that left meanwhile
                # makes uvicorn raise ClientDisconnected (an OSError), which would
                # fail the whole room in pycrdt-websocket 0.16.5, so drop the frame
                # as y-websocket's server does.
                with contextlib.suppress(OSError):
                    await send(message)

            await asgi(scope, receive, tolerant_send)

        config = uvicorn.Config(
            app,
            host=HOST,
            port=port,
            log_level="warning",
            loop="asyncio",
            http="h11",
            ws="websockets-sansio",
            ws_per_message_deflate=deflate,
            lifespan="off",
        )
        async with websocket_server:
            await uvicorn.Server(config).serve()

    asyncio.run(main())
    return 0
