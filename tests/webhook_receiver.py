"""A webhook receiver for tests: a small Tornado app on a loopback port that
checks each request's signature and notes what came, and that can be told to
fail (500), to hang past the sender's timeout, or to take requests again."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import tornado.httpserver
import tornado.netutil
import tornado.web

from collab.webhooks import verify


@dataclass
class Received:
    event: str
    key: str
    payload: dict[str, Any]
    valid: dict[str, bool]  # each secret: whether the signature verifies with it


@dataclass
class Receiver:
    secrets: list[str]
    mode: str = "ok"  # ok, fail (500) or hang (no answer)
    taken: list[Received] = field(default_factory=list)  # answered 200
    refused: int = 0  # answered 500, or left hanging
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)  # ends hanging requests
    port: int = 0
    _server: tornado.httpserver.HTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        app = tornado.web.Application([(r"/hook", _Hook, {"receiver": self})])
        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        self.port = sockets[0].getsockname()[1]
        self._server = tornado.httpserver.HTTPServer(app)
        self._server.add_sockets(sockets)

    async def stop(self) -> None:
        self.released.set()
        if self._server is not None:
            self._server.stop()
            await self._server.close_all_connections()

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    def last_seqs(self) -> dict[str, int]:
        """Each document's highest seq delivered by a ``changed`` event."""
        seqs: dict[str, int] = {}
        for item in self.taken:
            if item.event == "changed":
                doc = item.payload["doc"]
                seqs[doc] = max(seqs.get(doc, 0), item.payload["last_seq"])
        return seqs


class _Hook(tornado.web.RequestHandler):
    def initialize(self, receiver: Receiver) -> None:
        self.receiver = receiver

    async def post(self) -> None:
        receiver = self.receiver
        if receiver.mode == "fail":
            receiver.refused += 1
            receiver.changed.set()
            raise tornado.web.HTTPError(500)
        if receiver.mode == "hang":
            receiver.refused += 1
            receiver.changed.set()
            await receiver.released.wait()
            return
        body = self.request.body
        header = self.request.headers.get("Collab-Signature", "")
        receiver.taken.append(
            Received(
                self.request.headers.get("Collab-Event", ""),
                self.request.headers.get("Idempotency-Key", ""),
                json.loads(body),
                {secret: verify(body, header, secret) for secret in receiver.secrets},
            )
        )
        receiver.changed.set()
        self.write({"ok": True})
