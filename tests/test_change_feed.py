"""The change feed across documents: ``GET /api/events`` streams every update of
every document the token may read, in commit order, from every instance, with
ids that resume right after any change (Last-Event-ID); the Python client's
``follow()`` resumes across reconnects without skipping or repeating."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator

import pytest
from tornado.httpclient import AsyncHTTPClient

from collab.auth import Authenticator
from collab.client import Change, Deletion, FollowError, follow
from collab.config import Settings
from collab.peers.events import feed_id, parse_feed_id
from collab.store import UpdateRecord
from tests.helpers import RawPeer, SeqWatcher, appends
from tests.proxy import Proxy

SECRET = "s" * 32
TIMEOUT_S = 10.0


def token(user: str, grants: dict[str, str]) -> str:
    return Authenticator(SECRET).issue(user, grants)


async def write(port: int, doc: str, count: int, client: int, start: int = 0) -> None:
    writer = await SeqWatcher.join(port, f"w{client}", doc)
    try:
        for ref, update in enumerate(appends(client, start + count)[start:]):
            writer.send(ref, update)
        await writer.wait_for(lambda: len(writer.acks) == count)
    finally:
        await writer.close()


async def take(changes: AsyncIterator[Change | Deletion], count: int) -> list[Change | Deletion]:
    taken = []
    async with asyncio.timeout(TIMEOUT_S):
        while len(taken) < count:
            taken.append(await anext(changes))
    return taken


class RawStream:
    """``GET /api/events`` on a bare socket: its status, then what it sends."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.status = 0

    @classmethod
    async def open(cls, port: int, headers: dict[str, str] | None = None) -> RawStream:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        writer.write(f"GET /api/events HTTP/1.0\r\n{head}\r\n".encode())
        stream = cls(reader, writer)
        stream.status = int((await reader.readline()).split()[1])
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        return stream

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


def test_a_feed_id_holds_a_position_and_how_many_records_after_it_were_sent():
    for position in (0, 12345, {"_data": "8266A1B2"}):
        assert parse_feed_id(feed_id(position, 3)) == (position, 3, None)
    seen = UpdateRecord("notes", 4, b"", 1.0)
    assert parse_feed_id(feed_id(7, 2, seen)) == (7, 2, ["notes", 4])
    forged = [{"x": 1}, [1, 2], "a", 10**20, True, 1.5, -3, {}]
    for bad in (
        "",
        "x",
        "not-base64!",
        feed_id(None),
        feed_id(7, -1),
        feed_id(7, True),
        "WzcsMiwzXQ",
        *(feed_id(position) for position in forged),  # type: ignore[arg-type]
    ):
        with pytest.raises(ValueError):
            parse_feed_id(bad)


async def test_a_reader_sees_every_document_it_may_read_in_commit_order_and_resumes(
    settings: Settings, start_server
):
    server = await start_server(settings.replace(auth_secret=SECRET))
    reader = token("ann", {"team-*": "read"})
    writer = token("bot", {"*": "write"})
    base = f"http://127.0.0.1:{server.port}"
    now = feed_id(await server.store.feed_position())
    async with contextlib.aclosing(follow(base, token=reader, after=now)) as changes:
        # Writes in the order team-a, secret, team-b: the reader sees only its own.
        for doc, client in (("team-a", 1), ("secret", 2), ("team-b", 3)):
            peer = await RawPeer.connect(f"ws://127.0.0.1:{server.port}/ws?token={writer}")
            watcher = await SeqWatcher.over(peer, f"w{client}", doc)
            try:
                for ref, update in enumerate(appends(client, 3)):
                    watcher.send(ref, update)
                await watcher.wait_for(lambda w=watcher: len(w.acks) == 3)
            finally:
                await watcher.close()
        seen = await take(changes, 6)
    assert [(c.doc, c.seq) for c in seen] == [
        ("team-a", 1),
        ("team-a", 2),
        ("team-a", 3),
        ("team-b", 1),
        ("team-b", 2),
        ("team-b", 3),
    ]
    assert seen[0].origin["user"] == "bot" and seen[0].update

    # From any change's id: exactly what came after it, however the store's pages fell.
    for index in (0, 2, 4):
        async with contextlib.aclosing(follow(base, token=reader, after=seen[index].id)) as again:
            rest = await take(again, 5 - index)
        assert [(c.doc, c.seq) for c in rest] == [(c.doc, c.seq) for c in seen[index + 1 :]]


async def test_a_reader_resuming_from_before_a_deletion_gets_it_after_that_documents_changes(
    settings: Settings, start_server
):
    server = await start_server(settings.replace(auth_secret=SECRET))
    reader = token("ann", {"team-*": "read"})
    writer = token("bot", {"*": "write"})
    base = f"http://127.0.0.1:{server.port}"
    before = feed_id(await server.store.feed_position())

    async def write_as_bot(doc: str, client: int) -> None:
        peer = await RawPeer.connect(f"ws://127.0.0.1:{server.port}/ws?token={writer}")
        watcher = await SeqWatcher.over(peer, f"w{client}", doc)
        try:
            for ref, update in enumerate(appends(client, 2)):
                watcher.send(ref, update)
            await watcher.wait_for(lambda: len(watcher.acks) == 2)
        finally:
            await watcher.close()

    async def delete_as_bot(doc: str) -> None:
        await AsyncHTTPClient().fetch(
            f"{base}/api/documents/{doc}",
            method="DELETE",
            headers={"Authorization": f"Bearer {writer}"},
        )

    async with contextlib.aclosing(follow(base, token=reader, after=before)) as changes:
        await write_as_bot("team-a", 1)
        await write_as_bot("secret", 2)
        seen = await take(changes, 2)
    old = (await server.store.get_document("team-a")).epoch
    await delete_as_bot("secret")  # not the reader's: it never hears of it
    await delete_as_bot("team-a")
    await write_as_bot("team-a", 3)  # a new document of that name

    # The reader was away when it was deleted: it resumes after what it saw.
    async with contextlib.aclosing(follow(base, token=reader, after=seen[-1].id)) as changes:
        missed = await take(changes, 3)
    # and from the deletion's own id: what came after it
    async with contextlib.aclosing(follow(base, token=reader, after=missed[0].id)) as again:
        rest = await take(again, 2)

    assert [(c.doc, c.seq) for c in seen if isinstance(c, Change)] == [("team-a", 1), ("team-a", 2)]
    assert [(type(c).__name__, c.doc) for c in missed] == [
        ("Deletion", "team-a"),
        ("Change", "team-a"),
        ("Change", "team-a"),
    ]
    deletion = missed[0]
    assert isinstance(deletion, Deletion)
    assert (deletion.epoch, deletion.last_seq) == (old, 2)
    assert deletion.origin["user"] == "bot"
    assert [c.seq for c in missed if isinstance(c, Change)] == [1, 2]
    assert [(type(c).__name__, c.seq) for c in rest] == [("Change", 1), ("Change", 2)]


async def test_follow_resumes_across_cut_connections_without_a_gap_or_a_repeat(
    settings: Settings, start_server
):
    server = await start_server(settings)
    proxy = await Proxy(server.port).start()
    base = f"http://127.0.0.1:{proxy.port}"
    got: list[Change] = []
    try:
        async with contextlib.aclosing(follow(base, after=feed_id(0))) as changes:
            for round_ in range(3):
                await write(server.port, "notes", 4, client=1, start=4 * round_)
                got.extend(await take(changes, 4))
                proxy.cut()
    finally:
        await proxy.close()
    assert [c.seq for c in got] == list(range(1, 13))
    assert len({c.id for c in got}) == 12
    assert proxy.connections >= 3


@pytest.mark.parametrize("backend", ["sqlite", "mongodb"])
async def test_two_instances_on_one_store_each_stream_the_others_commits(
    request: pytest.FixtureRequest, settings: Settings, start_server, backend: str
):
    if backend == "mongodb":
        settings = settings.replace(store_url=request.getfixturevalue("mongodb_url"))
    one = await start_server(settings.replace(instance_id="one"))
    two = await start_server(settings.replace(instance_id="two"))
    now = feed_id(await one.store.feed_position())
    async with contextlib.aclosing(follow(f"http://127.0.0.1:{one.port}", after=now)) as changes:
        await write(two.port, "notes", 2, client=1)
        await write(one.port, "notes", 1, client=1, start=2)
        seen = await take(changes, 3)
    assert [(c.seq, c.origin["instance"]) for c in seen] == [(1, "two"), (2, "two"), (3, "one")]


async def test_a_quiet_stream_gets_keep_alives_and_a_bad_id_or_token_is_refused(
    settings: Settings, start_server
):
    server = await start_server(settings.replace(auth_secret=SECRET, events_keepalive_s=0.1))
    stream = await RawStream.open(
        server.port, {"Authorization": f"Bearer {token('a', {'*': 'read'})}"}
    )
    try:
        assert stream.status == 200
        comments = 0
        async with asyncio.timeout(TIMEOUT_S):
            while comments < 2:
                comments += (await stream.reader.read(65536)).count(b": keep-alive")
    finally:
        await stream.close()
    bad = await RawStream.open(
        server.port,
        {"Authorization": f"Bearer {token('a', {'*': 'read'})}", "Last-Event-ID": "nonsense"},
    )
    assert bad.status == 400
    await bad.close()
    anonymous = await RawStream.open(server.port)
    assert anonymous.status == 401
    await anonymous.close()
    with pytest.raises(FollowError):
        async with contextlib.aclosing(follow(f"http://127.0.0.1:{server.port}")) as changes:
            await anext(changes)


async def test_the_stream_ends_when_its_token_expires_and_follow_stops_there(
    settings: Settings, start_server
):
    server = await start_server(settings.replace(auth_secret=SECRET))
    brief = Authenticator(SECRET).issue("ann", {"*": "read"}, expires_in_s=1.0)
    base = f"http://127.0.0.1:{server.port}"
    with pytest.raises(FollowError, match="expired"):
        async with contextlib.aclosing(follow(base, token=brief)) as changes:
            async with asyncio.timeout(TIMEOUT_S):
                await anext(changes)


async def test_an_id_another_kind_of_store_made_is_refused(server):
    # A resume token (MongoDB's kind of position) on this SQLite store: 400, not a
    # stream that ends in a traceback.
    response = await AsyncHTTPClient().fetch(
        f"http://127.0.0.1:{server.port}/api/events",
        headers={"Last-Event-ID": feed_id({"_data": "8266A1B2"})},
        raise_error=False,
    )
    assert response.code == 400
    assert b"not an id of this feed" in response.body


@pytest.mark.slow
async def test_a_reader_that_stopped_reading_is_dropped_once_its_token_expires(
    settings: Settings, start_server, monkeypatch: pytest.MonkeyPatch
):
    from tests.helpers import text_update

    monkeypatch.setattr("collab.web.documents.END_GRACE_S", 0.5)
    server = await start_server(settings.replace(auth_secret=SECRET))
    writer_token = Authenticator(SECRET).issue("writer", {"*": "write"})
    # 8 MB of updates, written before the reader comes and streamed to it from the log
    # at once: past what the kernel holds for its socket, so that the stream waits on
    # a reader that does not read well before its token expires.
    start = feed_id(await server.store.feed_position())
    writer = await RawPeer.connect(f"ws://127.0.0.1:{server.port}/ws")
    await writer.hello(token=writer_token)
    await writer.subscribe("flood")
    for ref in range(540):
        update = text_update("y" * 15_000, client_id=1000 + ref)
        writer.send({"type": "update", "doc": "flood", "ref": ref, "update": update})
    for _ in range(540):
        await writer.recv_type("ack")
    writer.close()
    # Its reader's token: enough time for the server to write the kernel's buffers
    # full from the log (a fraction of a second).
    expires_s = 2.0
    issued = time.time()
    reader_token = Authenticator(SECRET).issue("reader", {"*": "read"}, expires_in_s=expires_s)
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", server.port))
    stalled.sendall(
        f"GET /api/events?token={reader_token}&after={start} HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\n\r\n".encode()
    )
    # The token expires (the stream waiting on the reader by then), the grace
    # passes (0.5 s): the server drops the connection.
    stalled.settimeout(15)

    def drain() -> None:  # on a thread: the server runs on this loop
        with contextlib.suppress(ConnectionResetError):
            while stalled.recv(1 << 20):
                pass  # what reached it, then the end: closed by the server

    try:
        # The reader reads nothing until the token expired and the grace passed: a
        # timer of the server's, so waited for by the clock. Had the stream ended
        # without being dropped, the connection would stay open (keep-alive) and
        # drain would time out.
        await asyncio.sleep(max(0.0, issued + expires_s + 0.5 - time.time()) + 0.5)
        await asyncio.get_running_loop().run_in_executor(None, drain)
    finally:
        stalled.close()


def test_the_part_of_tornado_an_ended_stream_relies_on_is_still_there():
    """collab.web.documents.EventStreamHandler._drop_if_open reads a request's
    HTTP1Connection._finish_future (done once all of the answer was written); if
    this fails, Tornado changed under it."""
    from tornado.http1connection import HTTP1Connection
    from tornado.iostream import IOStream

    left, right = socket.socketpair()
    try:
        connection = HTTP1Connection(IOStream(left), is_client=False)
        assert not connection._finish_future.done()
    finally:
        left.close()
        right.close()
