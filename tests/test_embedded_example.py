"""The embedding example (docs/examples/embedded_app.py) runs as written: its own
login, collab under /collab, identities handed over by the authenticate hook.

The example runs as its own process on a loopback port; the test logs in over
HTTP, opens /collab/ws with the session cookie, edits, and is refused without it."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import urllib.parse
from pathlib import Path

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import websocket_connect

from collab.errors import CloseCode
from tests.helpers import TIMEOUT_S, RawPeer, text_of, text_update

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "examples" / "embedded_app.py"


@pytest.fixture
def example(io_loop, tmp_path):
    """``(base_url, process)``: the example app, stopped with SIGTERM after the test."""

    async def start():
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(EXAMPLE),
            "--port",
            "0",
            "--store",
            f"sqlite:///{tmp_path}/app.db",
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},  # this checkout's collab
        )
        line = await asyncio.wait_for(process.stdout.readline(), TIMEOUT_S)
        assert line.startswith(b"listening on "), line
        return line.decode().split()[-1], process

    base, process = io_loop.run_sync(start)
    yield base, process
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        io_loop.run_sync(lambda: asyncio.wait_for(process.wait(), TIMEOUT_S))


async def log_in(base: str, user: str) -> str:
    response = await AsyncHTTPClient().fetch(
        f"{base}/login", method="POST", body=urllib.parse.urlencode({"user": user})
    )
    return response.headers["Set-Cookie"].split(";")[0]  # user="..."


async def open_ws(base: str, cookie: str | None) -> RawPeer:
    url = base.replace("http://", "ws://") + "/collab/ws"
    request = HTTPRequest(url, headers={"Cookie": cookie} if cookie else {})
    return RawPeer(await asyncio.wait_for(websocket_connect(request), TIMEOUT_S))


async def test_the_embedded_example_logs_in_edits_and_refuses_strangers(example):
    base, process = example
    ann = await open_ws(base, await log_in(base, "ann"))
    stranger = await open_ws(base, None)
    bob = await open_ws(base, await log_in(base, "bob"))
    try:
        welcome = await ann.hello()
        assert (welcome["type"], welcome["user"]) == ("welcome", "ann")
        assert (await ann.subscribe("notes/today"))["role"] == "write"
        ann.send({"type": "update", "doc": "notes/today", "ref": 1, "update": text_update("hi")})
        assert (await ann.recv_type("ack"))["seq"] == 1

        # bob reads what ann wrote, and may not write.
        assert (await bob.hello())["user"] == "bob"
        sync = await bob.subscribe("notes/today")
        assert (sync["role"], text_of(sync["update"])) == ("read", "hi")

        # Without the application's login: refused, with its reason.
        refused = await stranger.recv()
        assert refused["code"] == "unauthorized"
        assert "log in first" in refused["message"]
        assert (await stranger.closed())[0] == CloseCode.UNAUTHORIZED
    finally:
        for peer in (ann, stranger, bob):
            peer.close()

    # The application's lifetime closes collab's store: it exits cleanly.
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), TIMEOUT_S) == 0
