"""collab inside an existing Tornado application.

    collab = Collab(Settings(store_url="sqlite:///data/collab.db"),
                    prefix="/collab", extensions=[MyHooks()])
    app = tornado.web.Application([*my_routes, *collab.handlers()])
    await collab.start()          # open the store, start the rooms and the hooks
    app.listen(8080)
    ...
    await collab.stop()           # flush, close the sockets (1012), close the store

Everything runs on the application's event loop. The handlers are the server's
own (collab.app.CollabServer.routes) under ``prefix``: ``/collab/ws``,
``/collab/yjs/{doc}``, ``/collab/api/documents``... The application's
HTTPServer serves them, so what collab's own listener adds in front of its routes
(the Host check, the per-address connection cap and the bound on handshakes in
progress, ``max_handshakes``: collab.web.gate, collab.web.accepting) is the
application's to do; origins are still checked (``allowed_origins``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from collab.app import CollabServer
from collab.config import Settings
from collab.store import Store


class Collab:
    """collab's handlers for another Tornado application, and their lifetime."""

    def __init__(
        self,
        settings: Settings,
        *,
        prefix: str = "/collab",
        extensions: Sequence[object] = (),
        store: Store | None = None,
        page: bool = False,
    ) -> None:
        """``page``: serve collab's editor page under the prefix too."""
        self.server = CollabServer(settings, store, extensions=extensions)
        self.prefix = prefix.rstrip("/")
        self._page = page

    def handlers(self) -> list[Any]:
        """The routes to add to the application (``tornado.web.Application(...)``,
        or ``app.add_handlers(r".*", ...)``)."""
        return self.server.routes(self.prefix, page=self._page)

    async def start(self) -> None:
        """Open the store and start the rooms, the writer and the hooks, on the
        running loop."""
        await self.server.open()

    async def stop(self) -> None:
        """Store what was accepted, close collab's sockets with 1012 (clients
        reconnect), stop the hooks' task and close the store. Safe to call twice."""
        await self.server.stop()

    async def __aenter__(self) -> Collab:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def handlers(
    settings: Settings, *, prefix: str = "/collab", extensions: Sequence[object] = ()
) -> tuple[list[Any], Collab]:
    """One call: ``(routes, collab)``; await ``collab.start()`` before serving the
    routes and ``collab.stop()`` when the application stops."""
    collab = Collab(settings, prefix=prefix, extensions=extensions)
    return collab.handlers(), collab
