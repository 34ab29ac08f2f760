"""MongoDB for tests: a SecantusDB server started as a subprocess, or a real
replica set named by ``COLLAB_TEST_MONGODB_URL``.

SecantusDB speaks MongoDB's wire protocol and reports itself as a one-member
replica set, so PyMongo's ``AsyncMongoClient`` talks to it unchanged. Each test
gets a database of its own, dropped afterwards. Where SecantusDB differs from
``mongod``, the difference is worked around here, never in ``collab``, and listed
in docs/MONGODB.md.
"""

from __future__ import annotations

import contextlib
import gc
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ENV_URL = "COLLAB_TEST_MONGODB_URL"
START_TIMEOUT_S = 20.0


def free_port() -> int:
    """A port a process started next can listen on: free now, and below the
    ephemeral range, from which the kernel gives every port-0 listener and outgoing
    connection of the tests running beside (one of those took a port 0 had given
    here before the process started: "Address already in use")."""
    low = 32768
    with contextlib.suppress(OSError, ValueError, IndexError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    while True:
        port = secrets.choice(range(max(1024, low - 12000), low))
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


@dataclass
class MongoServer:
    """Where the tests' MongoDB runs: ``url(database)`` names a database on it."""

    base_url: str  # mongodb://host:port/?options, no database
    process: subprocess.Popen[bytes] | None = None  # None: an external server
    storage: Path | None = None  # removed when it stops
    storage_path: Path | None = None
    port: int = 0

    @property
    def external(self) -> bool:
        return self.process is None

    def url(self, database: str) -> str:
        scheme, netloc, _, query, _ = urlsplit(self.base_url)
        return urlunsplit((scheme, netloc, f"/{database}", query, ""))

    def new_database(self) -> str:
        return f"collab_test_{secrets.token_hex(6)}"

    def stop(self) -> None:
        """Stop the test server for good. Killed: what it stored is not read again
        (SIGTERM costs 2 s, SecantusDB's clean stop), and its files go if it owns them."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        if self.storage is not None:
            shutil.rmtree(self.storage, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL the test server (its files stay, as after a crash)."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()


def collect_cancelled_connects() -> None:
    """PyMongo does not close a socket whose connect is cancelled (PYTHON-5867):
    a client closed while it reconnects to a server that is down leaves one for
    the garbage collector, which warns. Tests that do that on purpose collect it
    here, quietly, rather than in whichever test runs next."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def start_secantus(
    *extra: str, storage: Path | None = None, port: int | None = None
) -> MongoServer:
    """A SecantusDB server on a free loopback port, storing under ``storage`` (a new
    temporary folder, removed when it stops, if None)."""
    owned = storage is None
    if storage is None:
        storage = Path(tempfile.mkdtemp(prefix="collab-secantus-"))
    port = port or free_port()
    command = [
        shutil.which("secantusd-py") or str(Path(os.sys.executable).parent / "secantusd-py"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--storage-path",
        str(storage),
        "--log-level",
        "WARNING",
        *extra,
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    server = MongoServer(
        f"mongodb://127.0.0.1:{port}/?directConnection=true",
        process,
        storage if owned else None,
        storage,
        port,
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            assert process.stderr is not None
            raise RuntimeError(
                "secantusd-py exited: " + process.stderr.read().decode(errors="replace")
            )
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return server
        except OSError:
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"secantusd-py did not listen on {port}") from None
            time.sleep(0.05)


def session_server() -> Iterator[MongoServer]:
    """The session's server: ``COLLAB_TEST_MONGODB_URL`` or a SecantusDB subprocess."""
    external = os.environ.get(ENV_URL)
    if external:
        yield MongoServer(external)
        return
    server = start_secantus()
    try:
        yield server
    finally:
        server.stop()
