"""The servers under test: how each is started, what it persists, how the load
generator reads its database, and the process that runs it."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from . import HOST, ROOT, SCRIPTS
from .sampler import Probe

NODE_DIR = ROOT / ".bench" / "node"
NODE_SERVER = NODE_DIR / "node_modules" / "@y" / "websocket-server" / "src" / "server.js"
# The same server with permessage-deflate on (ws leaves it off by default); copied
# into NODE_DIR before it starts, where its imports resolve.
NODE_DEFLATE_SERVER = SCRIPTS / "bench-node" / "deflate-server.js"

# The arguments that switch permessage-deflate on in collab, for the compression
# scenario's deflate rows (BENCH_COLLAB_DEFLATE_ARGS overrides them).
COLLAB_DEFLATE_ARGS = tuple(
    shlex.split(os.environ.get("BENCH_COLLAB_DEFLATE_ARGS", "--websocket-compression deflate"))
)

# (argv, extra environment) of a server, given its data folder and port.
Start = Callable[[Path, int], tuple[list[str], dict[str, str]]]


def benchkit_command(*args: str) -> tuple[list[str], dict[str, str]]:
    """Run ``python -m benchkit ARGS`` from any working directory."""
    path = os.pathsep.join(filter(None, [str(SCRIPTS), os.environ.get("PYTHONPATH")]))
    return [sys.executable, "-m", "benchkit", *args], {"PYTHONPATH": path}


@dataclass
class ServerSpec:
    name: str
    persists: str  # how it stores updates ("none..." when it does not)
    start: Start
    probe: Callable[[Path], Probe] = lambda _data: None
    available: Callable[[], str | None] = lambda: None  # why not, or None
    # Several processes on one store (a second one started on the same data dir).
    instances: bool = False
    # How to start it accepting permessage-deflate from a client that offers it;
    # None: it has no setting for that (the compression scenario says so).
    deflate: Start | None = None

    @property
    def is_collab(self) -> bool:
        """Speaks the native protocol and has the history API."""
        return self.name.startswith("collab")


# The MongoDB store runs on SecantusDB, the MongoDB wire-protocol server the tests
# use (no registry here ships mongod): one per data folder, for as long as the
# server's scenarios run. --sync-on-commit: it honours journaled writes only so.
_MONGO_SERVERS: dict[Path, tuple[subprocess.Popen[bytes], int]] = {}


def mongodb_url(data: Path) -> str:
    if data not in _MONGO_SERVERS:
        port = free_port()
        secantus = shutil.which("secantusd-py") or str(Path(sys.executable).parent / "secantusd-py")
        argv = [secantus, "--host", HOST, "--port", str(port), "--sync-on-commit"]
        argv += ["--storage-path", str(data / "mongo"), "--log-level", "WARNING"]
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _MONGO_SERVERS[data] = (process, port)
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection((HOST, port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("secantusd-py did not start") from None
                time.sleep(0.05)
    _, port = _MONGO_SERVERS[data]
    return f"mongodb://{HOST}:{port}/bench?directConnection=true"


def stop_mongodb(data: Path) -> None:
    entry = _MONGO_SERVERS.pop(data, None)
    if entry is not None:
        process, _ = entry
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _needs_secantus() -> str | None:
    if shutil.which("secantusd-py") or (Path(sys.executable).parent / "secantusd-py").exists():
        return None
    return "secantusd-py is not installed (pip install -e '.[test]')"


def _collab(store: str, extra: Sequence[str] = ()) -> Start:
    def start(data: Path, port: int) -> tuple[list[str], dict[str, str]]:
        if store == "sqlite":
            url = f"sqlite:///{data / 'collab.db'}"
        elif store == "mongodb":
            url = mongodb_url(data)
        else:
            url = "memory://"
        argv = [sys.executable, "-m", "collab", "serve", "--host", HOST, "--port", str(port)]
        argv += ["--store-url", url, "--log-level", "warning"]
        # The load generator is one address sending thousands of updates a second
        # per socket: collab's fair-use limits (docs/SECURITY.md) are lifted, as the
        # other servers have none.
        argv += ["--max-connections-per-ip", "0", "--max-documents-created-per-minute", "0"]
        argv += ["--rate-messages-per-s", "1e9", "--rate-messages-burst", "1000000000"]
        argv += ["--rate-bytes-per-s", str(2**40), "--rate-bytes-burst", str(2**40)]
        return [*argv, *extra], {}

    return start


def _collab_deflate(store: str) -> Start | None:
    return _collab(store, COLLAB_DEFLATE_ARGS) if COLLAB_DEFLATE_ARGS else None


def _yws(persist: bool, deflate: bool = False) -> Start:
    def start(data: Path, port: int) -> tuple[list[str], dict[str, str]]:
        env = {"HOST": HOST, "PORT": str(port)}
        if persist:
            env["YPERSISTENCE"] = str(data / "leveldb")
        server = NODE_SERVER
        if deflate:
            server = NODE_DIR / NODE_DEFLATE_SERVER.name
            shutil.copyfile(NODE_DEFLATE_SERVER, server)
        return ["node", str(server)], env

    return start


def _pycrdt(persist: bool, deflate: bool = False) -> Start:
    def start(data: Path, port: int) -> tuple[list[str], dict[str, str]]:
        args = ["serve-pycrdt", "--port", str(port)]
        if persist:
            args += ["--sqlite", str(data / "ystore.db")]
        if deflate:
            args.append("--deflate")
        return benchkit_command(*args)

    return start


def _bare(deflate: bool = False) -> Start:
    def start(_data: Path, port: int) -> tuple[list[str], dict[str, str]]:
        return benchkit_command("serve-bare", "--port", str(port), *(["--deflate"] * deflate))

    return start


def _needs_node() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not NODE_SERVER.exists():
        return f"{NODE_SERVER} is missing (run scripts/bench, which installs it)"
    return None


def _needs_pycrdt_websocket() -> str | None:
    try:
        import pycrdt.websocket  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        return "pycrdt-websocket or uvicorn is not installed (run scripts/bench)"
    return None


SERVERS = {
    s.name: s
    for s in (
        ServerSpec(
            "collab-sqlite",
            "SQLite WAL, fsync per batch",
            instances=True,
            start=_collab("sqlite"),
            probe=lambda data: {"kind": "collab", "path": str(data / "collab.db")},
            deflate=_collab_deflate("sqlite"),
        ),
        ServerSpec(
            "collab-mongodb",
            "MongoDB majority+journaled writes, on SecantusDB (the test server, "
            "--sync-on-commit), not a production mongod",
            instances=True,
            start=_collab("mongodb"),
            probe=lambda data: {"kind": "collab-mongodb", "url": mongodb_url(data)},
            available=_needs_secantus,
            deflate=_collab_deflate("mongodb"),
        ),
        ServerSpec(
            "collab-memory",
            "none (memory://)",
            _collab("memory"),
            deflate=_collab_deflate("memory"),
        ),
        ServerSpec(
            "y-websocket", "none", _yws(False), available=_needs_node, deflate=_yws(False, True)
        ),
        ServerSpec(
            "y-websocket-leveldb",
            "LevelDB, no fsync",
            _yws(True),
            available=_needs_node,
            deflate=_yws(True, True),
        ),
        ServerSpec(
            "pycrdt-websocket",
            "none",
            _pycrdt(False),
            available=_needs_pycrdt_websocket,
            deflate=_pycrdt(False, True),
        ),
        ServerSpec(
            "pycrdt-websocket-sqlite",
            "SQLite, commit per update",
            _pycrdt(True),
            lambda data: {"kind": "ystore", "path": str(data / "ystore.db")},
            available=_needs_pycrdt_websocket,
            deflate=_pycrdt(True, True),
        ),
        ServerSpec(
            "bare-tornado",
            "none (a floor: Tornado + pycrdt, apply and relay, nothing else)",
            _bare(),
            deflate=_bare(deflate=True),
        ),
    )
}


def collab_outbound_bound_mib() -> float:
    """collab's per-peer bound on unsent bytes (``outbound_queue_bytes``), as the
    server under test has it by default."""
    from collab.config import Settings

    return Settings().outbound_queue_bytes / (1024 * 1024)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class RunningServer:
    """One server process on a free loopback port, its output in ``log_path``;
    listening when the constructor returns. A context manager that stops it."""

    def __init__(
        self, spec: ServerSpec, data: Path, log_path: Path, start: Start | None = None
    ) -> None:
        self.spec = spec
        self.data = data
        self.port = free_port()
        argv, env = (start or spec.start)(data, self.port)
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_listening()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _wait_listening(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        tail = self.log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{self.spec.name} did not start listening:\n{tail}")

    def stop(self) -> None:
        """SIGTERM (collab and uvicorn flush and exit; node exits at once), then
        SIGKILL after 30 s. Safe to call twice."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
