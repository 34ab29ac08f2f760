"""Interop: the real y-websocket provider (yjs, y-websocket, ws from npm, under
Node.js) against ``/yjs/{document}``.

Each Node process (tests/node/peer.mjs) hosts named providers and is driven
over stdin/stdout with JSON lines; it reports every provider's state (document
content, awareness, connection status, sync flag) whenever it changes, and the
tests wait on conditions over those states, with timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import shutil
import string
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pycrdt
import pytest
from tornado.httpclient import AsyncHTTPClient
from tornado.ioloop import IOLoop

from collab.app import CollabServer
from collab.client import CollabClient
from collab.config import Settings
from tests.helpers import text_of
from tests.proxy import Proxy

pytestmark = pytest.mark.node

NODE_DIR = Path(__file__).resolve().parent / "node"
PEER_SCRIPT = NODE_DIR / "peer.mjs"
TIMEOUT_S = 10.0
STREAM_LIMIT_BYTES = 32 * 1024 * 1024  # one state line carries a whole document


class NodeError(Exception):
    """A peer process refused a command or died."""


class Provider:
    """One WebsocketProvider (with its Y.Doc) inside a peer process."""

    def __init__(self, process: PeerProcess, name: str, state: dict[str, Any]) -> None:
        self.process = process
        self.name = name
        self.state = state

    @property
    def client_id(self) -> int:
        return int(self.state["clientID"])

    @property
    def status(self) -> str:
        return str(self.state["status"])

    @property
    def synced(self) -> bool:
        return bool(self.state["synced"])

    @property
    def text(self) -> str:
        return str(self.state["text"])

    @property
    def map(self) -> dict[str, Any]:
        return dict(self.state["map"])

    @property
    def array(self) -> list[Any]:
        return list(self.state["array"])

    @property
    def content(self) -> tuple[str, dict[str, Any], list[Any]]:
        return self.text, self.map, self.array

    @property
    def awareness(self) -> dict[int, Any]:
        return {int(client): state for client, state in self.state["awareness"].items()}

    @property
    def close_codes(self) -> list[int]:
        """Close codes of the connections the server closed."""
        return [close["code"] for close in self.state["closes"]]

    async def edit(self, *ops: list[Any]) -> None:
        """Apply ``ops`` (``["text_insert", 0, "hi"]``, ``["map_set", "k", 1]``...)
        in one transaction."""
        await self.process.request("edit", name=self.name, ops=list(ops))

    async def set_awareness(self, state: dict[str, Any] | None) -> None:
        await self.process.request("awareness", name=self.name, state=state)

    async def disconnect(self) -> None:
        await self.process.request("disconnect", name=self.name)

    async def connect(self) -> None:
        await self.process.request("connect", name=self.name)

    async def destroy(self) -> None:
        await self.process.request("destroy", name=self.name)

    def describe(self) -> str:
        shown = dict(self.state)
        if len(self.text) > 80:
            shown["text"] = f"{self.text[:80]}... ({len(self.text)} chars)"
        return f"{self.process.label}/{self.name}: {json.dumps(shown)[:600]}"


class PeerProcess:
    """One ``node peer.mjs`` process."""

    def __init__(self, harness: NodeHarness, process: asyncio.subprocess.Process, label: str):
        self.harness = harness
        self.label = label
        self.providers: dict[str, Provider] = {}
        self.versions: dict[str, str] = {}
        self.exited = False
        self.killed = False
        self._process = process
        self._requests = 0
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ready = asyncio.get_running_loop().create_future()
        self._stderr: deque[str] = deque(maxlen=50)
        self._readers = [
            asyncio.create_task(self._read_stdout()),
            asyncio.create_task(self._read_stderr()),
        ]

    async def started(self) -> None:
        await asyncio.wait_for(self._ready, TIMEOUT_S)

    async def open(
        self, server: CollabServer, room: str, *, awareness: dict[str, Any] | None = None
    ) -> Provider:
        """A provider for ``room`` on ``server``; it connects in the background."""
        name = f"p{len(self.providers) + 1}"
        url = f"ws://127.0.0.1:{server.port}/yjs"
        await self.request("open", name=name, url=url, room=room, awareness=awareness)
        return self.providers[name]

    async def edit_together(self, edits: dict[Provider, list[list[Any]]]) -> None:
        """Edit several of this process's providers in one turn of its event loop,
        so that no provider has seen another's edit: truly concurrent edits."""
        assert all(provider.process is self for provider in edits)
        await self.request(
            "edit_together", edits=[{"name": p.name, "ops": ops} for p, ops in edits.items()]
        )

    async def request(self, cmd: str, **args: Any) -> Any:
        if self.exited:
            raise NodeError(f"{self.label} has exited\n{self.stderr_tail()}")
        self._requests += 1
        request_id = self._requests
        answer = self._pending[request_id] = asyncio.get_running_loop().create_future()
        line = json.dumps({"id": request_id, "cmd": cmd, **args}) + "\n"
        assert self._process.stdin is not None
        self._process.stdin.write(line.encode())
        await self._process.stdin.drain()
        reply = await asyncio.wait_for(answer, TIMEOUT_S)
        if not reply["ok"]:
            raise NodeError(f"{self.label} {cmd}: {reply['error']}")
        return reply["result"]

    async def _read_stdout(self) -> None:
        assert self._process.stdout is not None
        try:
            while line := await self._process.stdout.readline():
                try:
                    message = json.loads(line)
                except ValueError:  # a stray print: keep it for the failure report
                    self._stderr.append(f"(stdout) {line.decode(errors='replace').rstrip()}")
                    continue
                self._dispatch(message)
        finally:
            self.exited = True
            for answer in self._pending.values():
                if not answer.done():
                    answer.set_exception(NodeError(f"{self.label} exited\n{self.stderr_tail()}"))
            if not self._ready.done():
                self._ready.set_exception(NodeError(f"{self.label} did not start"))
            self.harness.changed()

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "id" in message:
            answer = self._pending.pop(message["id"], None)
            if answer is not None and not answer.done():
                answer.set_result(message)
        elif message["event"] == "state":
            name = message["name"]
            provider = self.providers.get(name)
            if provider is None:
                self.providers[name] = Provider(self, name, message["state"])
            else:
                provider.state = message["state"]
            self.harness.changed()
        elif message["event"] == "ready" and not self._ready.done():
            self.versions = message["versions"]
            self._ready.set_result(None)

    async def _read_stderr(self) -> None:
        assert self._process.stderr is not None
        while line := await self._process.stderr.readline():
            self._stderr.append(line.decode(errors="replace").rstrip())

    def stderr_tail(self) -> str:
        return "\n".join(f"  {self.label} stderr: {line}" for line in self._stderr)

    def kill(self) -> None:
        """End the process abruptly: no close frame, no goodbye."""
        self.killed = True
        self._process.kill()

    async def close(self) -> None:
        """Close stdin (the peer destroys its providers and exits) and reap it."""
        if self._process.returncode is None and not self.killed:
            assert self._process.stdin is not None
            self._process.stdin.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._process.wait(), 5)
        if self._process.returncode is None:
            self._process.kill()
        await self._process.wait()
        await asyncio.gather(*self._readers, return_exceptions=True)


class NodeHarness:
    """Starts peer processes and waits on conditions over their states."""

    def __init__(self) -> None:
        self.processes: list[PeerProcess] = []
        self._wakeups: list[asyncio.Future[None]] = []

    async def spawn(self, count: int = 1) -> list[PeerProcess]:
        """Start ``count`` peer processes; they load their modules in parallel."""
        started = []
        for _ in range(count):
            process = await asyncio.create_subprocess_exec(
                "node",
                str(PEER_SCRIPT),
                cwd=NODE_DIR,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                limit=STREAM_LIMIT_BYTES,
            )
            peer = PeerProcess(self, process, f"node{len(self.processes) + 1}")
            self.processes.append(peer)
            started.append(peer)
        await asyncio.gather(*(peer.started() for peer in started))
        return started

    async def providers(self, server: CollabServer, room: str, count: int = 2) -> list[Provider]:
        """``count`` providers for ``room``, each in its own process, all synced."""
        processes = await self.spawn(count)
        providers = [await process.open(server, room) for process in processes]
        await self.until(lambda: all(p.synced for p in providers), f"{room!r} providers sync")
        return providers

    def changed(self) -> None:
        for wakeup in self._wakeups:
            if not wakeup.done():
                wakeup.set_result(None)
        self._wakeups.clear()

    async def until(
        self, predicate: Callable[[], bool], what: str, timeout_s: float = TIMEOUT_S
    ) -> None:
        """Wait until ``predicate()`` holds; it is checked again after every state
        report from any peer process."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            crashed = [p for p in self.processes if p.exited and not p.killed]
            if crashed:
                raise NodeError("\n".join(f"{p.label} exited\n{p.stderr_tail()}" for p in crashed))
            if predicate():
                return
            wakeup = loop.create_future()
            self._wakeups.append(wakeup)
            try:
                await asyncio.wait_for(wakeup, max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise AssertionError(
                    f"timed out after {timeout_s:.0f}s waiting until {what}\n{self.describe()}"
                ) from None

    def describe(self) -> str:
        lines = []
        for process in self.processes:
            lines.append(f"{process.label} {process.versions}")
            lines.extend(f"  {p.describe()}" for p in process.providers.values())
            lines.append(process.stderr_tail())
        return "\n".join(line for line in lines if line)

    async def close(self) -> None:
        await asyncio.gather(*(process.close() for process in self.processes))


@pytest.fixture
def node(io_loop: IOLoop) -> Iterator[NodeHarness]:
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the y-websocket interop tests need Node.js")
    if not (NODE_DIR / "node_modules" / "y-websocket").is_dir():
        pytest.skip(
            "tests/node/node_modules is missing: run scripts/test, or `npm ci` in tests/node"
        )
    harness = NodeHarness()
    yield harness
    io_loop.run_sync(harness.close)


def converged(*providers: Provider) -> bool:
    """Every provider is synced, has seen every edit and has the same content."""
    first = providers[0]
    return all(
        p.synced and p.state["sv"] == first.state["sv"] and p.content == first.content
        for p in providers
    )


async def get_json(server: CollabServer, path: str) -> Any:
    response = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{server.port}{path}")
    return json.loads(response.body)


async def test_two_providers_converge_on_concurrent_text_map_and_array_edits(
    server: CollabServer, node: NodeHarness
) -> None:
    # Two providers (two Y.Docs, two sockets) in one process, so that their
    # edits can be made in the same instant.
    (process,) = await node.spawn()
    a = await process.open(server, "concurrent")
    b = await process.open(server, "concurrent")
    await node.until(lambda: a.synced and b.synced, "both providers sync")

    await process.edit_together(
        {
            a: [
                ["text_insert", 0, "alpha "],
                ["map_set", "a", 1],
                ["map_set", "both", "from a"],
                ["array_push", [1, 2]],
            ],
            b: [
                ["text_insert", 0, "beta "],
                ["map_set", "b", {"nested": [True, None, 2.5]}],
                ["map_set", "both", "from b"],
                ["array_push", [3, 4]],
            ],
        }
    )
    await node.until(lambda: converged(a, b), "the first concurrent edits converge")
    assert a.text in ("alpha beta ", "beta alpha ")
    assert a.map["a"] == 1 and a.map["b"] == {"nested": [True, None, 2.5]}
    assert a.map["both"] in ("from a", "from b")
    assert a.array in ([1, 2, 3, 4], [3, 4, 1, 2])
    first_array = a.array

    # Both replace the whole text and delete the same array element, and a map
    # delete races a set of the same key (the set wins: it made a new entry).
    length = len(a.text)
    await process.edit_together(
        {
            a: [
                ["text_delete", 0, length],
                ["text_insert", 0, "A2"],
                ["map_delete", "b"],
                ["array_delete", 0, 1],
            ],
            b: [
                ["text_delete", 0, length],
                ["text_insert", 0, "B2"],
                ["map_set", "b", "kept"],
                ["array_delete", 0, 1],
            ],
        }
    )
    await node.until(lambda: converged(a, b), "the second concurrent edits converge")
    assert a.text in ("A2B2", "B2A2")
    assert a.map == {"a": 1, "b": "kept", "both": a.map["both"]}
    assert a.array == first_array[1:]

    # The server merged them the same way: a newcomer gets the same document.
    (witness,) = await node.providers(server, "concurrent", count=1)
    await node.until(lambda: converged(a, b, witness), "a newcomer gets the merged document")


async def test_a_late_joiner_gets_the_full_state(server: CollabServer, node: NodeHarness) -> None:
    (first,) = await node.providers(server, "late", count=1)
    await first.edit(["text_insert", 0, "hello world"], ["array_push", ["x", "y", "z"]])
    await first.edit(
        ["text_delete", 0, 6],
        ["text_insert", 5, "!"],
        ["map_set", "title", "late"],
        ["map_set", "meta", {"tags": ["a", "b"], "n": 3}],
        ["array_delete", 1, 1],
    )
    assert first.content == (
        "world!",
        {"title": "late", "meta": {"tags": ["a", "b"], "n": 3}},
        ["x", "z"],
    )

    (late,) = await node.providers(server, "late", count=1)

    await node.until(lambda: converged(first, late), "the late joiner has everything")
    assert late.content == first.content


async def test_providers_converge_after_disconnect_and_connect_with_offline_edits_on_both_sides(
    server: CollabServer, node: NodeHarness
) -> None:
    a, b = await node.providers(server, "offline")
    await a.edit(["text_insert", 0, "base"])
    await node.until(lambda: converged(a, b), "the base text reaches b")

    await a.disconnect()
    assert a.status == "disconnected"
    await b.edit(["map_set", "b_online", 1])  # a misses this while away
    await b.disconnect()
    assert b.status == "disconnected"
    await a.edit(["text_insert", 4, " a-offline"], ["array_push", ["a"]])
    await b.edit(["text_insert", 0, "b-offline "], ["array_push", ["b"]], ["map_set", "b", True])
    assert "b_online" not in a.map and "a-offline" not in b.text

    await a.connect()
    await b.connect()

    await node.until(lambda: converged(a, b), "both reconnect and converge")
    assert a.text == "b-offline base a-offline"
    assert a.map == {"b_online": 1, "b": True}
    assert sorted(a.array) == ["a", "b"]
    # Live relaying resumed too.
    await a.edit(["map_set", "after", "reconnect"])
    await node.until(lambda: b.map.get("after") == "reconnect", "an edit after reconnecting")


async def test_awareness_is_shared_and_removed_when_a_provider_is_destroyed_or_its_process_dies(
    server: CollabServer, node: NodeHarness
) -> None:
    process_a, process_b, process_c = await node.spawn(3)
    a = await process_a.open(server, "presence", awareness={"user": {"name": "ada"}})
    b = await process_b.open(server, "presence", awareness={"user": {"name": "bob"}})
    await node.until(
        lambda: (
            a.awareness.get(b.client_id) == {"user": {"name": "bob"}}
            and b.awareness.get(a.client_id) == {"user": {"name": "ada"}}
        ),
        "a and b see each other",
    )

    await a.set_awareness({"user": {"name": "ada"}, "cursor": {"index": 3}})
    await node.until(
        lambda: b.awareness.get(a.client_id, {}).get("cursor") == {"index": 3},
        "b sees a's cursor move",
    )

    c = await process_c.open(server, "presence", awareness={"user": {"name": "cy"}})
    await node.until(
        lambda: set(c.awareness) == {a.client_id, b.client_id, c.client_id},
        "a late joiner sees everyone present",
    )
    assert c.awareness[a.client_id] == {"user": {"name": "ada"}, "cursor": {"index": 3}}

    await a.destroy()
    await node.until(
        lambda: a.client_id not in b.awareness and a.client_id not in c.awareness,
        "a's presence is gone after provider.destroy()",
    )

    process_b.kill()
    await node.until(
        lambda: set(c.awareness) == {c.client_id}, "b's presence is gone after its process died"
    )


async def test_a_yjs_provider_and_a_native_client_edit_together_and_history_records_both(
    server: CollabServer,
    node: NodeHarness,
    connect: Callable[..., Awaitable[CollabClient]],
) -> None:
    native = await connect(client_id="native-editor")
    remote = await native.subscribe("mixed")
    text = remote.doc.get("text", type=pycrdt.Text)
    shared = remote.doc.get("map", type=pycrdt.Map)
    (provider,) = await node.providers(server, "mixed", count=1)

    await provider.edit(["text_insert", 0, "one "])
    await remote.wait_for(lambda: str(text) == "one ")
    text.insert(len(text), "two ")
    await node.until(lambda: provider.text == "one two ", "the native edit reaches yjs")
    await provider.edit(["text_insert", 8, "three"], ["map_set", "from", "yjs"])
    await remote.wait_for(lambda: str(text) == "one two three" and shared.get("from") == "yjs")
    shared["native"] = 4
    await node.until(
        lambda: provider.map == {"from": "yjs", "native": 4}, "the native map edit reaches yjs"
    )
    # The writer commits in order: once the last edit is durable, all are.
    await remote.flushed()

    page = await get_json(server, "/api/documents/mixed/history")
    seqs = [update["seq"] for update in page["updates"]]
    clients = [update["origin"]["client"] for update in page["updates"]]
    assert seqs == list(range(seqs[0], seqs[0] + 4)), page
    assert clients[1] == clients[3] == "native-editor", clients
    assert clients[0] == clients[2] and clients[0].startswith("yjs:"), clients

    response = await AsyncHTTPClient().fetch(
        f"http://127.0.0.1:{server.port}/api/documents/mixed/state"
    )
    assert text_of(response.body) == "one two three"

    # Presence crosses the protocols both ways.
    remote.set_awareness({"user": "native"})
    await node.until(
        lambda: {"user": "native"} in provider.awareness.values(), "native awareness reaches yjs"
    )
    await provider.set_awareness({"user": "yjs"})
    await remote.wait_for(lambda: {"user": "yjs"} in remote.awareness.states.values())


async def test_a_one_megabyte_update_is_delivered(server: CollabServer, node: NodeHarness) -> None:
    a, b = await node.providers(server, "big")
    alphabet = string.ascii_letters + string.digits + " \n"
    big = "".join(random.Random(1).choices(alphabet, k=1024 * 1024))

    await a.edit(["text_insert", 0, big])

    await node.until(lambda: len(b.text) == len(big), "the 1 MB text reaches b", timeout_s=20)
    assert b.text == big


async def test_twenty_documents_with_two_providers_each_all_converge(
    server: CollabServer, node: NodeHarness
) -> None:
    left, right = await node.spawn(2)
    rooms = [f"many-{i}" for i in range(20)]
    pairs = [(await left.open(server, room), await right.open(server, room)) for room in rooms]
    everyone = [p for pair in pairs for p in pair]
    await node.until(lambda: all(p.synced for p in everyone), "all 40 providers sync")

    await asyncio.gather(
        *(
            p.edit(["text_insert", 0, f"{side}{i} "], ["map_set", side, i])
            for i, pair in enumerate(pairs)
            for side, p in zip("lr", pair, strict=True)
        )
    )

    await node.until(lambda: all(converged(*pair) for pair in pairs), "all 20 documents converge")
    for i, (first, _) in enumerate(pairs):
        assert sorted(first.text.split()) == [f"l{i}", f"r{i}"]
        assert first.map == {"l": i, "r": i}


async def test_providers_reconnect_on_their_own_after_a_server_restart(
    settings: Settings, server: CollabServer, node: NodeHarness
) -> None:
    a, b = await node.providers(server, "restart")
    await a.edit(["text_insert", 0, "before"], ["map_set", "a", 1])
    await node.until(lambda: converged(a, b), "the first edit reaches b")

    await server.stop()
    await node.until(
        lambda: a.status != "connected" and b.status != "connected", "the server closes both"
    )
    assert a.close_codes[:1] == b.close_codes[:1] == [1012]  # then refused reconnects
    await a.edit(["text_insert", 6, " offline"])  # made while the server is down

    # Same port and same SQLite file: a restart as the providers see it.
    restarted = CollabServer(settings.replace(port=server.port))
    await restarted.start()
    try:
        await node.until(
            lambda: converged(a, b) and b.text == "before offline",
            "both reconnect and resync",
            timeout_s=15,
        )
        await a.edit(["map_set", "after", "a"])
        await node.until(lambda: b.map.get("after") == "a", "an edit flows from a to b")
        await b.edit(["text_insert", 0, "b: "])
        await node.until(lambda: a.text == "b: before offline", "an edit flows from b to a")

        (fresh,) = await node.providers(restarted, "restart", count=1)
        await node.until(lambda: converged(a, b, fresh), "a new provider gets everything")
        assert fresh.content == ("b: before offline", {"a": 1, "after": "a"}, [])
    finally:
        await restarted.stop()


async def test_providers_ride_out_a_network_cut_with_their_offline_edits_merged(
    server: CollabServer, node: NodeHarness
) -> None:
    network = await Proxy(server.port).start()
    try:
        behind, direct = await node.spawn(2)
        a = await behind.open(SimpleNamespace(port=network.port), "cut")  # type: ignore[arg-type]
        b = await direct.open(server, "cut")
        await node.until(lambda: a.synced and b.synced, "both providers sync")
        await a.edit(["text_insert", 0, "before"])
        await node.until(lambda: converged(a, b), "the first edit reaches b")

        network.refuse()
        network.cut()  # no close frame: the provider finds out by itself
        await node.until(lambda: a.status != "connected", "a loses its connection")
        await a.edit(["text_insert", 6, " offline"])  # made while cut off
        await b.edit(["map_set", "b", 1])  # made meanwhile on the other side
        network.accept()

        await node.until(
            lambda: converged(a, b) and a.text == "before offline" and a.map == {"b": 1},
            "a reconnects and both sides' edits merge",
            timeout_s=20,
        )
    finally:
        await network.close()
