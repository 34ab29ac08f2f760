"""An abusive client, run as its own process by tests/test_security_fair_use.py (so
that making the flood costs the server's event loop nothing): for ``seconds`` it
opens sockets to a document and floods each, as fast as it can write, with
garbage frames, awareness updates and valid updates in turn, reconnecting after
every close. Prints "flooding" once its first socket is open, and what happened
as one JSON line at the end (after SECONDS, or at once on SIGTERM).

    python -m tests.flooder ws://127.0.0.1:PORT DOC SECONDS

``FLOOD_KINDS=garbage,awareness`` (say) floods with those kinds only.

Against HTTP it floods what a request may cost before it is refused (used by
tests/test_security_requests.py): ``bodies`` opens ``FLOOD_CONNECTIONS`` requests
at once, without a token, each declaring a 95 MiB body (Tornado's default
``max_body_size``) and sending up to ``FLOOD_BODY_MIB`` of it; ``heads`` opens as
many connections that send half a request head and then nothing; ``idle`` as many
that send nothing at all. Each kind runs once and the outcome is printed.

    python -m tests.flooder http://127.0.0.1:PORT/api/documents/DOC/import

``reads`` floods with the costliest reads a read-only token can make (a diff from
seq 0, the latest version, the whole state), ``FLOOD_CONNECTIONS`` at once, for
``seconds``; each is bounded by the read budgets and the caps on expensive reads
(docs/SECURITY.md).

    python -m tests.flooder reads http://127.0.0.1:PORT/api/documents/DOC SECONDS [TOKEN]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import sys
import time
import urllib.parse
from dataclasses import asdict, dataclass

import msgpack
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from tornado.iostream import StreamClosedError
from tornado.websocket import websocket_connect

from collab.wire.yformat import AwarenessEntry, encode_awareness_update
from tests.helpers import typing_updates

FRAMES_PER_SOCKET = 5000
UPDATES = 30_000  # valid updates in all (each socket sends the next ones)


class Frames:
    """Every kind of flood, made once (making them must not cost the server's
    machine more than sending them): ``take(kind)`` gives the next socket's worth."""

    def __init__(self, doc: str) -> None:
        junk = [os.urandom(random.randint(1, 64)) for _ in range(100)]
        junk.append(msgpack.packb({"type": "nonsense", "doc": doc}))
        self.garbage = [junk[i % len(junk)] for i in range(FRAMES_PER_SOCKET)]
        client = random.randint(1, 2**31)
        self.awareness = [
            msgpack.packb(
                {
                    "type": "awareness",
                    "doc": doc,
                    "update": encode_awareness_update([AwarenessEntry(client, i + 1, {"i": i})]),
                }
            )
            for i in range(FRAMES_PER_SOCKET)
        ]
        # Valid updates, new to the document each time: one client's appends, in order.
        self.updates = [
            msgpack.packb({"type": "update", "doc": doc, "ref": i + 1, "update": u})
            # One client's appends, each after the one before (written directly: pycrdt
            # took 0.6 s of CPU to type them).
            for i, u in enumerate(typing_updates(UPDATES, random.randint(1, 2**31)))
        ]
        self._next_update = 0

    def take(self, kind: str) -> list[bytes]:
        if kind == "garbage":
            return self.garbage
        if kind == "awareness":
            return self.awareness
        start = self._next_update
        self._next_update = min(len(self.updates), start + FRAMES_PER_SOCKET)
        return self.updates[start : self._next_update]


async def flood(url: str, doc: str, seconds: float) -> dict[str, object]:
    made = Frames(doc)
    deadline = time.monotonic() + seconds
    closes: dict[str, int] = {}
    sent = 0
    kinds = tuple(os.environ.get("FLOOD_KINDS", "garbage,awareness,updates").split(","))
    turn = 0
    # SIGTERM ends the flood where it is, as its time running out does: a test stops
    # it once it has measured what it floods, and still gets the report.
    stopped = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopped.set)
    flooding = False
    while time.monotonic() < deadline and not stopped.is_set():
        kind = kinds[turn % len(kinds)]
        turn += 1
        batch = made.take(kind)
        if not batch:
            continue  # its valid updates all sent: the other kinds go on
        try:
            ws = await websocket_connect(url)
        except (OSError, HTTPClientError, StreamClosedError) as exc:
            key = f"{kind}:refused {type(exc).__name__}"
            closes[key] = closes.get(key, 0) + 1
            await asyncio.sleep(0.05)
            continue
        if not flooding:
            print("flooding", flush=True)
            flooding = True
        ws.write_message(msgpack.packb({"type": "hello", "version": 1}), binary=True)
        ws.write_message(msgpack.packb({"type": "subscribe", "doc": doc}), binary=True)
        for frame in batch:
            if ws.protocol is None or ws.protocol.is_closing():
                break
            ws.write_message(frame, binary=True)
            sent += 1
        # Read whatever comes back until the server closes (or the time is up).
        stop = asyncio.ensure_future(stopped.wait())
        while (left := deadline - time.monotonic()) > 0 and not stopped.is_set():
            read = asyncio.ensure_future(ws.read_message())
            await asyncio.wait({read, stop}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            if not read.done():
                read.cancel()
                break
            if read.result() is None:
                break
        stop.cancel()
        key = f"{kind}:{ws.close_code}"
        closes[key] = closes.get(key, 0) + 1
        ws.close()
    return {"sent": sent, "closes": closes}


# -- HTTP: what a request costs before it is refused ------------------------------------

DECLARED_BODY_BYTES = 95 * 1024 * 1024  # Tornado's default max_body_size, nearly
CHUNK = b"x" * (1024 * 1024)  # one object, sent again and again: the flood costs no memory


@dataclass
class Outcome:
    """How one flooding connection ended: the status line the server answered
    with (None: no answer), the bytes it sent before the server stopped taking
    them, how long the answer took, and whether the server closed the connection."""

    status: int | None = None
    sent_bytes: int = 0
    answered_s: float | None = None
    closed: bool = False


def _target(url: str) -> tuple[str, int, str]:
    parts = urllib.parse.urlsplit(url)
    assert parts.hostname is not None and parts.port is not None, url
    return parts.hostname, parts.port, parts.path or "/"


async def _status(reader: asyncio.StreamReader) -> int | None:
    line = await reader.readline()
    fields = line.split()
    return int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None


async def _answer(sock: socket.socket, outcome: Outcome, started: float) -> None:
    """Read the server's answer on ``sock`` into ``outcome``: its status as soon as
    it comes, then whether the server closes the connection. Read from the socket
    itself: an answer the server sent before it stopped reading stays readable
    after the reset that followed, where a stream transport drops it with the error."""
    loop = asyncio.get_running_loop()
    received = b""
    try:
        while b"\r\n" not in received:
            data = await loop.sock_recv(sock, 4096)
            if not data:
                break
            received += data
        fields = received.split(b"\r\n", 1)[0].split()
        if len(fields) > 1 and fields[1].isdigit():
            outcome.status = int(fields[1])
            outcome.answered_s = time.monotonic() - started
        while await loop.sock_recv(sock, 65536):
            pass  # the rest of the answer, then the end
    except (ConnectionError, OSError):
        pass  # reset: the server closed without reading what was sent
    outcome.closed = True


class BodyFlood:
    """``connections`` POSTs to ``url`` at once, without a token, each declaring
    a ``declared_bytes`` body and sending up to ``send_bytes`` of it while
    waiting for an answer. The connections stay open until :meth:`close`, so
    that what the server holds for them can be measured while they are."""

    def __init__(self, url: str, connections: int, send_bytes: int, declared_bytes: int) -> None:
        self.url = url
        self.connections = connections
        self.send_bytes = send_bytes
        self.declared_bytes = declared_bytes
        self.outcomes = [Outcome() for _ in range(connections)]
        self._sockets: list[socket.socket] = []

    async def run(self, answer_timeout_s: float) -> list[Outcome]:
        """Open every connection, send, and wait (at most ``answer_timeout_s``
        after the last byte sent) for the answers."""
        await asyncio.gather(*(self._one(o, answer_timeout_s) for o in self.outcomes))
        return self.outcomes

    async def _one(self, outcome: Outcome, answer_timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        host, port, path = _target(self.url)
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setblocking(False)
        self._sockets.append(sock)
        await loop.sock_connect(sock, (host, port))
        started = time.monotonic()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/octet-stream\r\n"
            f"Content-Length: {self.declared_bytes}\r\n\r\n"
        ).encode()
        answer = asyncio.ensure_future(_answer(sock, outcome, started))
        try:
            await loop.sock_sendall(sock, head)
            while outcome.sent_bytes < self.send_bytes and not answer.done():
                sending = asyncio.ensure_future(loop.sock_sendall(sock, CHUNK))
                await asyncio.wait(
                    [answer, sending], timeout=5.0, return_when=asyncio.FIRST_COMPLETED
                )
                if not sending.done():  # the server stopped reading (or answered)
                    sending.cancel()
                    break
                sending.result()
                outcome.sent_bytes += len(CHUNK)
        except (ConnectionError, OSError):
            pass  # the server closed the connection
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(answer, answer_timeout_s)  # else left open, as the server has it

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()


async def idle_flood(url: str, connections: int, head: bytes, wait_s: float) -> list[Outcome]:
    """``connections`` connections that send ``head`` (part of a request head, or
    nothing) and then wait, at most ``wait_s``, for the server to answer or close."""
    host, port, _ = _target(url)

    async def one() -> Outcome:
        outcome = Outcome()
        started = time.monotonic()
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(head)
            outcome.sent_bytes = len(head)
            with contextlib.suppress(TimeoutError, ConnectionError, OSError):
                outcome.status = await asyncio.wait_for(_status(reader), wait_s)
                outcome.closed = True  # an answer or an end: the server let it go
                outcome.answered_s = time.monotonic() - started
        finally:
            writer.close()
        return outcome

    return list(await asyncio.gather(*(one() for _ in range(connections))))


async def http_flood(url: str) -> dict[str, object]:
    connections = int(os.environ.get("FLOOD_CONNECTIONS", "16"))
    body_bytes = int(os.environ.get("FLOOD_BODY_MIB", "8")) * 1024 * 1024
    kinds = os.environ.get("FLOOD_KINDS", "bodies,heads,idle").split(",")
    host, port, path = _target(url)
    report: dict[str, object] = {}
    if "bodies" in kinds:
        bodies = BodyFlood(url, connections, body_bytes, DECLARED_BODY_BYTES)
        try:
            report["bodies"] = [asdict(o) for o in await bodies.run(answer_timeout_s=10.0)]
        finally:
            bodies.close()
    half_head = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n".encode()
    for kind, head in (("heads", half_head), ("idle", b"")):
        if kind in kinds:
            outcomes = await idle_flood(url, connections, head, wait_s=120.0)
            report[kind] = [asdict(o) for o in outcomes]
    return report


async def read_flood(urls: list[str], seconds: float, token: str | None) -> dict[str, object]:
    """The costliest reads there are (a diff from seq 0, the latest version, the
    whole state), ``FLOOD_CONNECTIONS`` at once and again for ``seconds``: how
    many were answered, refused for their cost (422) or their number (429), and
    how long answers took."""
    connections = int(os.environ.get("FLOOD_CONNECTIONS", "6"))
    client = AsyncHTTPClient(force_instance=True, max_clients=connections)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    statuses: dict[str, int] = {}
    answered_s: list[float] = []
    deadline = time.monotonic() + seconds

    async def one(index: int) -> None:
        while time.monotonic() < deadline:
            started = time.monotonic()
            url = urls[index % len(urls)]
            try:
                response = await client.fetch(url, headers=headers, request_timeout=120)
                code = response.code
            except HTTPClientError as exc:
                code = exc.code
            except OSError:
                code = 0
            statuses[str(code)] = statuses.get(str(code), 0) + 1
            answered_s.append(time.monotonic() - started)
            index += 1

    try:
        await asyncio.gather(*(one(i) for i in range(connections)))
    finally:
        client.close()
    answered_s.sort()
    return {
        "statuses": statuses,
        "requests": len(answered_s),
        "slowest_s": round(answered_s[-1], 3) if answered_s else None,
        "median_s": round(answered_s[len(answered_s) // 2], 3) if answered_s else None,
    }


READ_ROUTES = ("/diff?from=0", "", "/state")  # the diff of all, the latest version, the state


def main() -> None:
    if sys.argv[1] == "reads":
        # python -m tests.flooder reads http://HOST:PORT/api/documents/DOC SECONDS [TOKEN]
        base, seconds = sys.argv[2].rstrip("/"), float(sys.argv[3])
        token = sys.argv[4] if len(sys.argv) > 4 else None
        urls = [base + route for route in READ_ROUTES]
        print("ready", flush=True)
        print(json.dumps(asyncio.run(read_flood(urls, seconds, token))), flush=True)
        return
    if sys.argv[1].startswith("http"):
        print("ready", flush=True)
        print(json.dumps(asyncio.run(http_flood(sys.argv[1]))), flush=True)
        return
    url, doc, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    print("ready", flush=True)  # (after the imports; the frames are made next)
    print(json.dumps(asyncio.run(flood(url, doc, seconds))), flush=True)


if __name__ == "__main__":
    main()
