"""docs/INTEGRATING.md, "Hooks in Python": its ``myhooks.py`` and its ``collab serve``
line run as written (only the port changes: the server picks a free one), and do
what the page says."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import sys
from pathlib import Path

from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from collab.errors import CloseCode
from tests.helpers import TIMEOUT_S, RawPeer, text_of
from tests.test_readme import code_block_after

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "INTEGRATING.md"


async def open_ws(port: int, headers: dict[str, str]) -> RawPeer:
    request = HTTPRequest(f"ws://127.0.0.1:{port}/ws", headers=headers)
    return RawPeer(await asyncio.wait_for(websocket_connect(request), TIMEOUT_S))


async def test_the_hooks_recipe_runs_as_written(tmp_path):
    page = PAGE.read_text()
    (tmp_path / "myhooks.py").write_text(code_block_after(page, "Save as `myhooks.py`", "python"))
    line = code_block_after(page, "and serve with it", "sh").strip()
    words = shlex.split(line)
    assignments = [w for w in words if re.fullmatch(r"[A-Z_]+=.*", w)]
    assert assignments == ["PYTHONPATH=."]
    command = words[len(assignments) :]
    assert command[:2] == ["collab", "serve"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLAB_")}
    env["PYTHONPATH"] = f".{os.pathsep}{ROOT}"  # "." as written; this checkout's collab
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "collab",
        *command[1:],
        "--port",
        "0",
        cwd=tmp_path,
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    peers: list[RawPeer] = []
    try:
        port = None
        while port is None:
            logged = await asyncio.wait_for(process.stderr.readline(), TIMEOUT_S)
            assert logged, "the server exited"
            found = re.search(rb"listening on http://127\.0\.0\.1:(\d+)", logged)
            port = int(found.group(1)) if found else None

        ann = await open_ws(port, {"X-Api-Key": "key-ann"})
        peers.append(ann)
        assert (await ann.hello())["user"] == "ann"
        sync = await ann.subscribe("notes/today")
        assert (sync["role"], text_of(sync["update"])) == ("write", "# notes/today\n")

        stranger = await open_ws(port, {})
        peers.append(stranger)
        assert (await stranger.recv())["message"] == "send your API key in X-Api-Key"
        assert await stranger.closed() == (CloseCode.UNAUTHORIZED, "send your API key in X-Api-Key")
    finally:
        for peer in peers:
            peer.close()
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.communicate(), TIMEOUT_S)
    assert process.returncode == 0
