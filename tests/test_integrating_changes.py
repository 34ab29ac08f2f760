"""docs/INTEGRATING.md, "Learning what changed", runs as written: its receiver.py
takes the webhooks of a server started with its command line (signatures checked,
repeats skipped), and its follow.py prints every change and, restarted, resumes
after the last one it printed. Only addresses change (free ports)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from collab.peers.events import feed_id
from tests.helpers import SeqWatcher
from tests.mongodb import free_port
from tests.processes import server_process

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "INTEGRATING.md"
pytestmark = pytest.mark.slow  # the recipes run as processes


def block_after(text: str, marker: str, language: str) -> str:
    match = re.compile(rf"```{language}\n(.*?)```", re.S).search(text, text.index(marker))
    assert match is not None, f"no {language} block after {marker!r}"
    return match.group(1)


class Printer:
    """A recipe run as a process, its output read line by line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []

    async def until(self, line: str, timeout_s: float = 30.0) -> None:
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout_s):
            while line not in self.lines:
                read = await self.process.stdout.readline()
                assert read, f"the recipe ended; it printed {self.lines}"
                self.lines.append(read.decode().rstrip("\n"))


@contextlib.asynccontextmanager
async def recipe(path: Path, env: dict[str, str]) -> AsyncIterator[Printer]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, path.name, cwd=path.parent, env=env, stdout=asyncio.subprocess.PIPE
    )
    try:
        yield Printer(process)
    finally:
        process.terminate()
        await process.wait()


async def edit(port: int, doc: str, words: list[str], start_ref: int = 0) -> None:
    writer = await SeqWatcher.join(port, "writer", doc)
    try:
        for ref, word in enumerate(words, start_ref):
            await writer.insert(ref, 0, word)
    finally:
        await writer.close()


async def test_the_receiver_and_follow_recipes_run_as_written(tmp_path: Path):
    text = DOC.read_text()
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLAB_")}
    env["PYTHONPATH"] = str(ROOT)  # this checkout's collab, wherever the recipe runs
    hook_port = free_port()

    # The server's command line, as written: its environment and its flags.
    serve_args: list[str] = []
    for line in block_after(text, "Start the server with one `--webhook`", "sh").splitlines():
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            env[name] = value
        elif line.startswith("collab serve "):
            serve_args = shlex.split(line.replace(":9000/", f":{hook_port}/"))[2:]
    assert serve_args and env["COLLAB_WEBHOOK_SECRET"]

    receiver = block_after(text, "save as `receiver.py`", "python")
    (tmp_path / "receiver.py").write_text(receiver.replace(", 9000)", f", {hook_port})"))
    follower = block_after(text, "Save as `follow.py`", "python")
    store = f"sqlite:///{tmp_path / 'collab.db'}"
    receiver_env = {**env, "WEBHOOK_SECRET": env["COLLAB_WEBHOOK_SECRET"]}
    quick = ["--webhook-quiet-s", "0.2", "--webhook-max-wait-s", "1"]

    async with (
        recipe(tmp_path / "receiver.py", receiver_env) as hooks,
        server_process(store, *serve_args, *quick, env=env) as server,
    ):
        await edit(server.port, "team/notes", ["hello", "world", "again"])
        await hooks.until("created team/notes")
        await hooks.until("changed team/notes up to seq 3")

        address = f"127.0.0.1:{server.port}"
        (tmp_path / "follow.py").write_text(follower.replace("127.0.0.1:8000", address))
        (tmp_path / "last-change-id").write_text(feed_id(0))  # from the store's beginning
        async with recipe(tmp_path / "follow.py", env) as first:
            await first.until("team/notes seq 3 by None")
        assert first.lines == [f"team/notes seq {seq} by None" for seq in (1, 2, 3)]

        await edit(server.port, "team/notes", ["more", "still"], start_ref=3)
        async with recipe(tmp_path / "follow.py", env) as second:
            await second.until("team/notes seq 5 by None")
        # Resumed after the last change it saved: it saves after it prints, so the
        # change printed as it was stopped may come again, and nothing is skipped.
        assert second.lines[-2:] == ["team/notes seq 4 by None", "team/notes seq 5 by None"]
        assert second.lines[:-2] in ([], ["team/notes seq 3 by None"])
        await hooks.until("changed team/notes up to seq 5")
