"""Real server processes for tests: ``python -m collab serve`` as a child process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

LISTENING = re.compile(rb"listening on http://127\.0\.0\.1:(\d+)")


@dataclass
class ServerProcess:
    process: asyncio.subprocess.Process
    port: int
    log: list[bytes] = field(default_factory=list)  # stderr lines, as they come

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    def log_text(self) -> str:
        return b"".join(self.log).decode(errors="replace")


def running(pid: int) -> bool:
    """Whether ``pid`` is a process that has not exited (a zombie has)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


@asynccontextmanager
async def server_process(
    store_url: str,
    *args: str,
    python_prelude: str | None = None,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
) -> AsyncIterator[ServerProcess]:
    """A server child process on a free port; stopped (SIGTERM, then SIGKILL) after.

    ``python_prelude`` is Python code run in the child before the server starts
    (the fuzz tests use it to put a fixed fault back on purpose)."""
    argv: Sequence[str] = (
        "serve",
        "--port",
        "0",
        "--store-url",
        store_url,
        "--log-level",
        "info",
        # Bulk writers, as in tests/conftest.py: the defaults are tested in
        # tests/test_security_fair_use.py.
        "--rate-messages-per-s",
        "1e6",
        "--rate-messages-burst",
        "1000000",
        "--rate-bytes-per-s",
        str(2**40),
        "--rate-bytes-burst",
        str(2**40),
        *args,
    )
    if python_prelude is None:
        command = [sys.executable, "-m", "collab", *argv]
    else:
        bootstrap = "\n".join(
            [
                python_prelude,
                "import sys",
                "from collab.cli import main",
                f"sys.exit(main({list(argv)!r}))",
            ]
        )
        command = [sys.executable, "-c", bootstrap]
    process = await asyncio.create_subprocess_exec(
        *command,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        cwd=cwd,
    )
    assert process.stderr is not None
    stderr = process.stderr
    try:
        lines: list[bytes] = []
        port = None
        while port is None:
            line = await asyncio.wait_for(stderr.readline(), 20)
            assert line, "server exited before listening:\n" + b"".join(lines).decode()
            lines.append(line)
            if match := LISTENING.search(line):
                port = int(match.group(1))
        server = ServerProcess(process, port, lines)

        async def drain() -> None:
            # Keep reading so that the child never blocks on a full pipe.
            while line := await stderr.readline():
                server.log.append(line)

        draining = asyncio.ensure_future(drain())
        try:
            yield server
        finally:
            if process.returncode is None:
                process.terminate()
            try:
                await asyncio.wait_for(asyncio.shield(process.wait()), 20)
            except TimeoutError:
                # asyncio's child watcher can lose a child's exit (reaped elsewhere:
                # "Unknown child process pid"); only a process still running fails.
                if running(process.pid):
                    raise
            finally:
                # Its last lines; a child it left behind may hold the pipe open.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(draining, 5)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
