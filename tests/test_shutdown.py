"""Shutdown stops reading, stores and acknowledges every write the rooms accepted,
then closes sockets with 1012 (service restart: reconnect at once).

Updates still in flight when it starts are not acknowledged; clients keep and
resend those, so nothing acknowledged depends on them."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
from collections.abc import Sequence

import pycrdt

from collab import app
from collab.app import SHUTDOWN_CLOSE_S
from collab.auth import Identity
from collab.errors import CloseCode
from collab.extensions import Extension, Request
from collab.store import AppendResult, NewUpdate, UpdateRecord, create_store
from collab.store.sqlite import SQLiteStore
from tests.helpers import TIMEOUT_S, SilentPeer, text_update, typing_updates, wait_until


class SlowStore(SQLiteStore):
    """Appends take a while, so that writes are pending when shutdown starts."""

    async def append(self, updates: Sequence[NewUpdate]) -> AppendResult:
        await asyncio.sleep(0.05)  # a slow disk: a deliberate delay, nothing awaited
        return await super().append(updates)


async def test_shutdown_stores_and_acknowledges_pending_writes_then_closes_with_1012(
    tmp_path, settings, start_server, connect
):
    server = await start_server(settings, SlowStore(tmp_path / "slow.db"))
    client = await connect(server)
    remote = await client.subscribe("bye")
    text = remote.doc.get("text", type=pycrdt.Text)
    for i in range(100):
        text.insert(len(text), f"{i},")
    room = server.rooms.get("bye")
    await wait_until(lambda: room.pending_writes > 0)
    # Updates that reached the room: stored and sent already, or queued. Later ones
    # are never acknowledged.
    applied = room.head_seq + room.pending_writes

    await server.stop()
    await client.closed()
    assert client.close_code == CloseCode.SERVICE_RESTART
    assert remote.seq >= applied  # their acks came before the close

    reopened = SQLiteStore(tmp_path / "slow.db")
    await reopened.open()
    try:
        stored = await reopened.read_updates("bye")
    finally:
        await reopened.close()
    doc = pycrdt.Doc()
    for record in stored:
        doc.apply_update(record.data)
    assert [r.seq for r in stored] == list(range(1, applied + 1))
    assert str(doc.get("text", type=pycrdt.Text)) == "".join(f"{i}," for i in range(applied))


class HeldReads(SQLiteStore):
    """Reading the stored sizes of listed documents waits until released: a slow
    read under way when the server stops."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.reading = asyncio.Event()
        self.release = asyncio.Event()

    async def stored_bytes(self, docs: Sequence[str]) -> dict[str, int]:
        self.reading.set()
        await self.release.wait()
        return await super().stored_bytes(docs)


async def raw_get(port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    return reader, writer


async def post_text_insert(
    port: int, doc: str, text: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw POST of one text insert to ``doc``, its answer left to read."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = json.dumps({"edits": [{"op": "text.insert", "root": "text", "text": text}]})
    writer.write(
        f"POST /api/documents/{doc}/updates HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode()
    )
    return reader, writer


async def stored_text_insert(port: int, doc: str) -> None:
    reader, writer = await post_text_insert(port, doc, "text")
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT_S)
        assert head.startswith(b"HTTP/1.1 200")
    finally:
        writer.close()


async def read_to_end(reader: asyncio.StreamReader, within_s: float) -> bytes:
    """What the server sends until it closes the connection (EOF)."""
    return await asyncio.wait_for(reader.read(), within_s)


async def test_a_stopped_server_leaves_no_socket_open(settings, start_server, connect, monkeypatch):
    # A peer that answers the close frame (the client), one that never does (a raw
    # socket), and an HTTP connection kept alive between requests. Tornado alone
    # keeps the last two open past the server's stop: an application that embeds
    # the server goes on serving them.
    monkeypatch.setattr(app, "SHUTDOWN_CLOSE_S", 0.5)
    server = await start_server(settings)
    host = f"127.0.0.1:{server.port}"
    client = await connect(server)
    await client.subscribe("open")
    kept_alive = await asyncio.open_connection("127.0.0.1", server.port)
    silent = await SilentPeer.connect(server.port, "/yjs/open")
    try:
        kept_alive[1].write(f"GET /api/documents HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        head = await kept_alive[0].readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        length = re.search(rb"(?i)content-length: (\d+)", head)
        assert length is not None
        await kept_alive[0].readexactly(int(length.group(1)))
        await wait_until(lambda: len(server.sockets) == 2)

        started = asyncio.get_running_loop().time()
        await server.stop()
        took = asyncio.get_running_loop().time() - started

        await client.closed()
        assert client.close_code == CloseCode.SERVICE_RESTART
        # The silent peer got the close frame (1012), then the server dropped it.
        assert await silent.read_close_code() == CloseCode.SERVICE_RESTART
        assert await read_to_end(silent.reader, 1) == b""
        assert await read_to_end(kept_alive[0], 1) == b""
        assert 0.5 <= took < 1.5
        assert not server.sockets
    finally:
        kept_alive[1].close()
        silent.close()


async def test_a_stop_whose_peers_answer_does_not_wait(settings, start_server, connect):
    server = await start_server(settings)
    clients = [await connect(server) for _ in range(3)]
    for client in clients:
        await client.subscribe("quick")
    started = asyncio.get_running_loop().time()
    await server.stop()
    assert asyncio.get_running_loop().time() - started < SHUTDOWN_CLOSE_S / 2
    for client in clients:
        await client.closed()
        assert client.close_code == CloseCode.SERVICE_RESTART


class HeldLogin(Extension):
    """Holds every request's authentication until released: a slow session store."""

    def __init__(self) -> None:
        self.waiting = 0
        self.release = asyncio.Event()

    async def on_authenticate(self, request: Request) -> Identity | None:
        self.waiting += 1
        await self.release.wait()
        return None


async def test_requests_waiting_on_a_hook_are_all_closed_at_once_and_do_not_hold_the_stop(
    settings, start_server, monkeypatch, caplog
):
    # An API request's head is decided (ApiHandler.prepare: the on_authenticate hook)
    # before Tornado ends its serving of the connection. Tornado's own
    # close_all_connections closed one connection at a time, each once the last one's
    # serving ended, and that serving swallows a cancellation: the stop waited for
    # every hook, the later connections open meanwhile.
    monkeypatch.setattr(app, "SHUTDOWN_CLOSE_S", 0.5)
    login = HeldLogin()
    server = await start_server(settings.replace(hook_timeout_s=60.0), extensions=[login])
    streams = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(3)]
    try:
        for _, writer in streams:
            writer.write(
                f"GET /api/documents HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode()
            )
        await wait_until(lambda: login.waiting == len(streams))
        caplog.set_level(logging.WARNING, logger="collab")
        stopping = asyncio.ensure_future(server.stop())
        for reader, _ in streams:
            assert await asyncio.wait_for(reader.read(), TIMEOUT_S) == b""
        done, _ = await asyncio.wait({stopping}, timeout=TIMEOUT_S)
        assert stopping in done
        assert any("still under way" in r.getMessage() for r in caplog.records)
    finally:
        login.release.set()
        for _, writer in streams:
            writer.close()
        await server.stop()


async def test_what_a_hook_let_in_after_the_stop_is_turned_away(
    settings, start_server, caplog, monkeypatch
):
    # Sockets and requests whose on_authenticate hook was still deciding when the
    # server stopped: a socket closes as the others did (1012), never one of the
    # server's; a request is refused (503) before its handler runs on a closed store.
    monkeypatch.setattr(app, "SHUTDOWN_CLOSE_S", 0.5)  # the request's hook holds it
    login = HeldLogin()
    server = await start_server(settings.replace(hook_timeout_s=60.0), extensions=[login])
    peers = [await SilentPeer.connect(server.port, path) for path in ("/ws", "/yjs/late")]
    post = await post_text_insert(server.port, "late", "late")
    try:
        await wait_until(lambda: login.waiting == 3)
        await server.stop()
        caplog.set_level(logging.INFO, logger="collab")
        login.release.set()
        for peer in peers:
            assert await peer.read_close_code() == CloseCode.SERVICE_RESTART
        await asyncio.sleep(0.1)  # the request's handler would have run by now
        assert not server.sockets
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        stored = create_store(settings.store_url)
        await stored.open()
        try:
            assert await stored.get_document("late") is None
        finally:
            await stored.close()
    finally:
        login.release.set()
        for peer in peers:
            peer.close()
        post[1].close()


async def test_an_http_write_stored_during_the_stop_gets_its_answer(
    tmp_path, settings, start_server
):
    # The stop stores what was accepted; a write over HTTP among it is answered
    # before its connection is closed (its update is stored: a lost answer would
    # have its client send it again).
    server = await start_server(settings, SlowStore(tmp_path / "slow.db"))
    reader, writer = await post_text_insert(server.port, "w", "kept")
    try:
        await wait_until(lambda: (room := server.rooms.get("w")) and room.pending_writes > 0)
        await server.stop()
        assert (await read_to_end(reader, TIMEOUT_S)).startswith(b"HTTP/1.1 200")
    finally:
        writer.close()


async def test_a_read_under_way_is_answered_before_the_stop_closes_the_store(
    tmp_path, settings, start_server
):
    store = HeldReads(tmp_path / "held.db")
    server = await start_server(settings, store)
    await stored_text_insert(server.port, "listed")
    reader, writer = await raw_get(server.port, "/api/documents")
    try:
        await asyncio.wait_for(store.reading.wait(), TIMEOUT_S)
        loop = asyncio.get_running_loop()
        stopping = asyncio.ensure_future(server.stop())
        await asyncio.sleep(0.2)
        assert not stopping.done()  # it waits for the read
        released = loop.time()
        store.release.set()
        answer = await read_to_end(reader, TIMEOUT_S)
        await asyncio.wait_for(stopping, TIMEOUT_S)
        assert loop.time() - released < SHUTDOWN_CLOSE_S / 2  # not the whole wait
        assert answer.startswith(b"HTTP/1.1 200")
        assert [d["name"] for d in json.loads(answer.split(b"\r\n\r\n", 1)[1])["documents"]] == [
            "listed"
        ]
    finally:
        store.release.set()
        writer.close()


async def test_event_streams_end_at_the_stop_and_do_not_hold_it(settings, start_server):
    # An event stream runs until its reader goes: the stop ends it as a finished
    # response (EventSource reconnects after the retry delay), rather than holding
    # the stop or cutting the connection mid-response.
    server = await start_server(settings)
    await stored_text_insert(server.port, "streamed")
    streams = [
        await raw_get(server.port, "/api/documents/streamed/events?after=0"),
        await raw_get(server.port, "/api/events"),
    ]
    try:
        for (reader, _), first in zip(streams, (b"event: update", b"retry: 1000"), strict=True):
            head = await asyncio.wait_for(reader.readuntil(first), TIMEOUT_S)
            assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head
        started = asyncio.get_running_loop().time()
        await server.stop()
        assert asyncio.get_running_loop().time() - started < SHUTDOWN_CLOSE_S / 2
        for reader, _ in streams:
            rest = await read_to_end(reader, TIMEOUT_S)
            assert rest.endswith(b"0\r\n\r\n")  # the chunked response's end
    finally:
        for _, writer in streams:
            writer.close()


async def test_requests_whose_body_was_cut_are_not_left_for_the_stop_to_wait_for(
    settings, start_server
):
    # Tornado ends a request whose body is cut short without finishing it (no
    # on_finish): a client that leaves mid-body, a body past what the route takes
    # (sent chunked, so it is read), a body sent on a route that takes none. Each
    # stayed among the requests under way, its body held, until the process ended,
    # and every stop waited SHUTDOWN_CLOSE_S for them.
    server = await start_server(settings)
    port = server.port
    host = f"Host: 127.0.0.1:{port}\r\n"
    requests = [
        # (the request, whether its client leaves: else the server closes it)
        (
            f"POST /api/documents/cut/updates HTTP/1.1\r\n{host}Content-Type: "
            'application/json\r\nContent-Length: 1000\r\n\r\n{"edits": [',
            True,
        ),
        (
            f"POST /api/documents/cut/restore HTTP/1.1\r\n{host}Transfer-Encoding: chunked"
            f"\r\n\r\n1400\r\n{' ' * 5120}\r\n0\r\n\r\n",
            False,
        ),
        (
            f"GET /api/documents/cut/events HTTP/1.1\r\n{host}Transfer-Encoding: chunked"
            "\r\n\r\n1\r\na\r\n0\r\n\r\n",
            False,
        ),
    ]
    for request, leaves in requests:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(request.encode())
            if leaves:
                await wait_until(lambda: server.requests)  # its head was read
                writer.close()
            await read_to_end(reader, TIMEOUT_S)
        finally:
            writer.close()
        await wait_until(lambda: server.connections.open_from("127.0.0.1") == 0)
        assert not server.requests, request.partition("\r\n")[0]
    started = asyncio.get_running_loop().time()
    await server.stop()
    assert asyncio.get_running_loop().time() - started < SHUTDOWN_CLOSE_S / 2


class HeldReplay(SQLiteStore):
    """An event stream's replay of the log (pages of 500) waits at its second
    page until released; the pages it reads are noted by where they start."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.pages: list[int] = []
        self.reading = asyncio.Event()
        self.release = asyncio.Event()

    async def read_updates(
        self,
        doc: str,
        *,
        after_seq: int = 0,
        until_seq: int | None = None,
        limit: int | None = None,
    ) -> list[UpdateRecord]:
        if limit == 500:
            self.pages.append(after_seq)
            if len(self.pages) == 2:
                self.reading.set()
                await self.release.wait()
        return await super().read_updates(
            doc, after_seq=after_seq, until_seq=until_seq, limit=limit
        )


async def test_an_event_stream_replaying_the_log_ends_at_the_stop_after_the_page_it_reads(
    tmp_path, settings, start_server
):
    # The replay read page after page whatever the stop said: a long log held the
    # whole wait, and the stream was cut mid-response when its connection closed.
    written = SQLiteStore(tmp_path / "replay.db")
    await written.open()
    updates = typing_updates(1500)
    await written.append([NewUpdate("long", updates[0], 0.0, create=True)])
    await written.append([NewUpdate("long", update, 0.0) for update in updates[1:]])
    await written.close()
    store = HeldReplay(tmp_path / "replay.db")
    server = await start_server(settings, store)
    reader, writer = await raw_get(server.port, "/api/documents/long/events?after=0")
    try:
        await asyncio.wait_for(store.reading.wait(), TIMEOUT_S)
        (stream,) = server.requests
        stopping = asyncio.ensure_future(server.stop())
        await wait_until(stream._gone.is_set)  # told to end (on_server_stop)
        store.release.set()
        answer = await read_to_end(reader, TIMEOUT_S)
        await asyncio.wait_for(stopping, TIMEOUT_S)
        assert answer.endswith(b"0\r\n\r\n")  # a finished response
        assert store.pages == [0, 500]  # not the third
        assert re.findall(rb"id: (\d+)", answer)[-1] == b"1000"  # its reader resumes there
    finally:
        store.release.set()
        writer.close()


async def test_an_event_stream_whose_reader_does_not_read_does_not_hold_the_stop(
    tmp_path, settings, start_server
):
    # Its response cannot be ended while what was written waits for the reader:
    # it held the stop for the whole wait (SHUTDOWN_CLOSE_S).
    written = SQLiteStore(tmp_path / "unread.db")
    await written.open()
    big = [text_update("x" * 200_000, client_id=client) for client in range(1, 41)]
    await written.append([NewUpdate("unread", big[0], 0.0, create=True)])
    await written.append([NewUpdate("unread", update, 0.0) for update in big[1:]])
    await written.close()
    server = await start_server(settings, SQLiteStore(tmp_path / "unread.db"))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
    request = f"GET /api/documents/unread/events?after=0 HTTP/1.1\r\nHost: 127.0.0.1:{server.port}"
    sock.send(f"{request}\r\n\r\n".encode())
    try:
        # 11 MB of events, unread: the server waits for the reader to take them.
        def waiting() -> bool:
            return any(r.request.connection.stream.writing() for r in server.requests)

        await wait_until(waiting)
        started = asyncio.get_running_loop().time()
        await server.stop()
        assert asyncio.get_running_loop().time() - started < SHUTDOWN_CLOSE_S / 2
    finally:
        sock.close()
