"""Extensions (collab.extensions): the application's hooks, called with what they
promise, deciding within their time limit, observing off the path of an edit.

Real servers on loopback ports, real sockets, real SQLite files."""

from __future__ import annotations

import asyncio
import json

import msgpack
import pycrdt
import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import websocket_connect

from collab.app import CollabServer
from collab.auth import Authenticator, Identity, Role
from collab.cli import build_parser
from collab.errors import CloseCode
from collab.extensions import (
    Change,
    Connection,
    Extension,
    IncomingUpdate,
    Refuse,
    Request,
    Stored,
    load_extension,
)
from collab.store import create_store
from tests.helpers import TIMEOUT_S, RawPeer, text_of, text_update, wait_until

SECRET = "test-secret-with-at-least-32-bytes!"
HOOK_TIMEOUT_S = 0.5


class Recorder(Extension):
    """Records what each observing hook is told."""

    def __init__(self) -> None:
        self.connects: list[Connection] = []
        self.disconnects: list[Connection] = []
        self.changes: list[Change] = []
        self.texts: list[str] = []  # the document each change was handed, as text
        self.stored: list[Stored] = []
        self.deleted: list[str] = []

    async def on_connect(self, connection: Connection) -> None:
        self.connects.append(connection)

    async def on_disconnect(self, connection: Connection) -> None:
        self.disconnects.append(connection)

    async def on_change(self, change: Change) -> None:
        self.changes.append(change)
        self.texts.append(text_of(await change.document()))

    async def on_store(self, stored: Stored) -> None:
        self.stored.append(stored)

    async def on_delete(self, doc: str) -> None:
        self.deleted.append(doc)


class CookieLogin(Extension):
    """Who a connection is comes from a ``session`` cookie: ann writes team/*,
    anyone else is refused."""

    def __init__(self) -> None:
        self.requests: list[Request] = []

    async def on_authenticate(self, request: Request) -> Identity | None:
        self.requests.append(request)
        if request.cookies.get("session") == "ann":
            return Identity(user="ann", grants=(("team/*", Role.WRITE), ("handbook", Role.READ)))
        if request.cookies.get("session") == "jwt":
            return None  # not ours: the token decides
        raise Refuse("log in first")


class Failing(Extension):
    """Deciding hooks that raise or hang, as asked by the document's name."""

    def __init__(self) -> None:
        self.seen: list[IncomingUpdate] = []

    async def on_authenticate(self, request: Request) -> Identity | None:
        if request.headers.get("X-Mode") == "raise":
            raise RuntimeError("the session store is down")
        if request.headers.get("X-Mode") == "hang":
            await asyncio.Event().wait()
        return None

    async def before_update(self, update: IncomingUpdate) -> None:
        self.seen.append(update)
        if b"forbidden" in update.update:
            raise Refuse("no forbidden words")
        if b"crash" in update.update:
            raise RuntimeError("the checker crashed")
        if b"stall" in update.update:
            await asyncio.Event().wait()


def hook_settings(settings, **changes):
    return settings.replace(
        hook_timeout_s=HOOK_TIMEOUT_S,
        hook_change_debounce_s=0.05,
        hook_change_max_wait_s=1.0,
        **changes,
    )


@pytest.fixture
def open_peer():
    """``await open_peer(server, path="/ws", headers=None)``: a native peer whose
    opening request carries ``headers`` (cookies...), closed after the test."""
    peers: list[RawPeer] = []

    async def open_one(server, path="/ws", headers=None) -> RawPeer:
        request = HTTPRequest(f"ws://127.0.0.1:{server.port}{path}", headers=headers or {})
        peer = RawPeer(await asyncio.wait_for(websocket_connect(request), TIMEOUT_S))
        peers.append(peer)
        return peer

    yield open_one
    for peer in peers:
        peer.close()


async def send_update(peer, doc, ref, update) -> dict:
    """Send an update; the ack or the error answering it."""
    peer.send({"type": "update", "doc": doc, "ref": ref, "update": update})
    while True:
        message = await peer.recv()
        if message["type"] in ("ack", "error") and message.get("ref") == ref:
            return message


async def stored_text(server, doc) -> str:
    records = await server.store.read_updates(doc)
    merged = pycrdt.Doc()
    for record in records:
        merged.apply_update(record.data)
    return text_of(merged)


# -- authenticate ---------------------------------------------------------------------


async def test_authenticate_is_given_the_token_cookies_and_headers_and_grants_per_document(
    settings, start_server, open_peer
):
    login = CookieLogin()
    server = await start_server(hook_settings(settings), extensions=[login])
    peer = await open_peer(
        server, "/ws?token=tok", {"Cookie": "session=ann; theme=dark", "X-App": "notes"}
    )
    welcome = await peer.hello()
    assert (welcome["type"], welcome["user"]) == ("welcome", "ann")
    request = login.requests[0]
    assert request.token == "tok"
    assert request.cookies == {"session": "ann", "theme": "dark"}
    assert request.headers["X-App"] == "notes"
    assert request.path == "/ws"

    assert (await peer.subscribe("team/notes"))["role"] == "write"
    peer.send({"type": "subscribe", "doc": "private/plans"})
    refused = await peer.recv_type("error")
    assert (refused["code"], refused["doc"]) == ("forbidden", "private/plans")
    assert (await send_update(peer, "team/notes", 1, text_update("hi")))["type"] == "ack"


async def test_a_refusing_authenticate_closes_the_socket_with_4401_and_its_reason(
    settings, start_server, yjs, open_peer
):
    server = await start_server(hook_settings(settings), extensions=[CookieLogin()])
    peer = await open_peer(server)
    error = await peer.recv()
    assert (error["code"], error["message"]) == ("unauthorized", "log in first")
    assert await peer.closed() == (CloseCode.UNAUTHORIZED, "log in first")
    y = await yjs.connect(server, "team/notes")
    assert (await y.closed())[0] == CloseCode.UNAUTHORIZED


async def test_authenticate_returning_none_leaves_the_decision_to_the_token(
    settings, start_server, open_peer
):
    server = await start_server(
        hook_settings(settings, auth_secret=SECRET), extensions=[CookieLogin()]
    )
    token = Authenticator(SECRET).issue("bob", {"*": "write"})
    peer = await open_peer(server, headers={"Cookie": "session=jwt"})
    assert (await peer.hello(token=token))["user"] == "bob"
    anonymous = await open_peer(server, headers={"Cookie": "session=jwt"})
    assert (await anonymous.hello())["code"] == "unauthorized"


@pytest.mark.allow_error_logs
@pytest.mark.parametrize("mode", ["raise", "hang"])
async def test_a_failing_authenticate_fails_closed_in_time_and_others_keep_working(
    settings, start_server, mode, open_peer
):
    server = await start_server(hook_settings(settings), extensions=[Failing()])
    other = await open_peer(server)
    await other.hello()
    await other.subscribe("doc")
    started = asyncio.get_running_loop().time()
    peer = await open_peer(server, headers={"X-Mode": mode})
    error = await peer.recv()
    assert error["code"] == "hook_failed"
    assert "on_authenticate" in error["message"]
    assert (await peer.closed())[0] == CloseCode.INTERNAL_ERROR
    assert asyncio.get_running_loop().time() - started < HOOK_TIMEOUT_S + 5  # a safety bound
    assert (await send_update(other, "doc", 1, text_update("still here")))["type"] == "ack"


async def test_http_requests_are_authenticated_by_the_hook_too(settings, start_server):
    server = await start_server(
        hook_settings(settings, auth_secret=SECRET), extensions=[CookieLogin()]
    )
    client = AsyncHTTPClient()
    url = f"http://127.0.0.1:{server.port}/api/documents"
    ok = await client.fetch(url, headers={"Cookie": "session=ann"})
    assert ok.code == 200
    refused = await client.fetch(url, raise_error=False)
    assert (refused.code, json.loads(refused.body)["error"]) == (401, "log in first")


async def test_revoking_a_user_refuses_the_hook_s_identities_started_before_it(
    settings, start_server
):
    class Sessions(Extension):
        """Sessions by cookie, each with the time it started (issued_s)."""

        started = {"old": 1000.0, "new": 3000.0}

        async def on_authenticate(self, request: Request) -> Identity | None:
            session = request.cookies.get("session", "")
            return Identity(
                user="ann", grants=(("team/*", Role.WRITE),), issued_s=self.started.get(session)
            )

    server = await start_server(hook_settings(settings), extensions=[Sessions()])
    url = f"http://127.0.0.1:{server.port}/api/documents"

    async def status(session: str) -> int:
        response = await AsyncHTTPClient().fetch(
            url, headers={"Cookie": f"session={session}"}, raise_error=False
        )
        return response.code

    assert [await status(s) for s in ("old", "new", "none")] == [200, 200, 200]
    server.auth.revoke("ann", now=2000.0)
    # A session started before the revocation, or that does not say when, is refused;
    # one started after it is let in (as tokens by their iat).
    assert [await status(s) for s in ("old", "new", "none")] == [401, 200, 401]
    socket = await websocket_connect(
        HTTPRequest(f"ws://127.0.0.1:{server.port}/ws", headers={"Cookie": "session=old"})
    )
    try:
        refusal = msgpack.unpackb(await socket.read_message())
        assert (refusal["code"], refusal["message"]) == (
            "unauthorized",
            "the access of 'ann' was revoked",
        )
        assert await socket.read_message() is None
        assert socket.close_code == CloseCode.UNAUTHORIZED
    finally:
        socket.close()


# -- before an update ---------------------------------------------------------------------


async def test_a_refused_update_leaves_the_document_exactly_as_it_was(
    settings, start_server, open_peer
):
    checker = Failing()
    server = await start_server(hook_settings(settings), extensions=[checker])
    peer = await open_peer(server)
    await peer.hello(client="writer")
    await peer.subscribe("doc")
    assert (await send_update(peer, "doc", 1, text_update("fine ", client_id=1)))["seq"] == 1
    before = await server.store.read_updates("doc")

    refused = await send_update(peer, "doc", 2, text_update("forbidden", client_id=2))
    assert (refused["code"], refused["message"]) == ("update_refused", "no forbidden words")
    assert await server.store.read_updates("doc") == before
    late = await open_peer(server)
    await late.hello()
    assert text_of((await late.subscribe("doc"))["update"]) == "fine "
    assert checker.seen[-1].doc == "doc" and checker.seen[-1].client == "writer"
    # The connection goes on: the next update is applied.
    assert (await send_update(peer, "doc", 3, text_update("more", client_id=3)))["seq"] == 2


async def test_a_refused_update_on_yjs_is_told_as_permission_denied_and_not_applied(
    settings, start_server, yjs
):
    server = await start_server(hook_settings(settings), extensions=[Failing()])
    y = await yjs.connect(server, "doc")
    await y.synced()
    y.doc.get("text", type=pycrdt.Text).insert(0, "forbidden")
    await y.wait_for(lambda: y.permission_denied == ["no forbidden words"])
    assert await server.store.read_updates("doc") == []


@pytest.mark.allow_error_logs
@pytest.mark.parametrize("word", ["crash", "stall"])
async def test_a_failing_before_update_gives_a_clear_error_and_loses_no_acknowledged_edit(
    settings, start_server, word, open_peer
):
    server = await start_server(hook_settings(settings), extensions=[Failing()])
    writer, other = await open_peer(server), await open_peer(server)
    for peer in (writer, other):
        await peer.hello()
        await peer.subscribe("doc")
    assert (await send_update(writer, "doc", 1, text_update("kept ", client_id=1)))["seq"] == 1

    failed = await send_update(writer, "doc", 2, text_update(word, client_id=2))
    assert failed["code"] == "hook_failed"
    assert "before_update" in failed["message"]
    # The room works on, for the other peer and for the writer.
    assert (await send_update(other, "doc", 1, text_update("and this", client_id=3)))["seq"] == 2
    assert (await send_update(writer, "doc", 3, text_update("too", client_id=4)))["seq"] == 3
    text = await stored_text(server, "doc")
    assert "kept " in text and "and this" in text and word not in text


@pytest.mark.allow_error_logs
async def test_http_writes_and_restores_are_checked_by_before_update_too(settings, start_server):
    checker = Failing()
    server = await start_server(hook_settings(settings), extensions=[checker])
    base = f"http://127.0.0.1:{server.port}/api/documents/doc"

    async def post(path: str, body: bytes, kind: str = "application/octet-stream") -> int:
        request = HTTPRequest(base + path, method="POST", body=body, headers={"Content-Type": kind})
        response = await AsyncHTTPClient().fetch(request, raise_error=False)
        return response.code

    assert await post("/updates?author=bot", text_update("fine ", client_id=1)) == 200
    assert checker.seen[-1].user == "bot" and checker.seen[-1].client.startswith("api:write:")
    before = await server.store.read_updates("doc")
    assert await post("/updates", text_update("forbidden", client_id=2)) == 403
    assert await post("/updates", text_update("crash", client_id=3)) == 503
    edits = json.dumps(
        {"edits": [{"op": "text.insert", "root": "text", "index": 0, "text": "stall"}]}
    )
    assert await post("/updates", edits.encode(), "application/json") == 503
    assert await server.store.read_updates("doc") == before
    # A restore is an edit like any other: the hook sees it.
    seen = len(checker.seen)
    assert await post("/restore?seq=0", b"") == 200
    assert len(checker.seen) == seen + 1 and checker.seen[-1].doc == "doc"
    assert await stored_text(server, "doc") == ""


# -- a new document's first content --------------------------------------------------------


class Seeder(Extension):
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.release = asyncio.Event()

    async def on_load_document(self, doc: str) -> bytes | None:
        self.calls.append(doc)
        await self.release.wait()  # both peers are waiting by now
        return text_update(f"template of {doc}")


async def test_a_new_document_is_seeded_once_when_two_peers_open_it_at_once(
    settings, start_server, open_peer
):
    seeder = Seeder()
    server = await start_server(hook_settings(settings), extensions=[seeder])
    peers = [await open_peer(server) for _ in range(2)]
    for peer in peers:
        await peer.hello()
        peer.send({"type": "subscribe", "doc": "new"})
    await wait_until(lambda: seeder.calls == ["new"])
    seeder.release.set()
    for peer in peers:
        sync = await peer.recv_type("sync")
        assert text_of(sync["update"]) == "template of new"
    records = await server.store.read_updates("new")
    assert [(r.seq, r.author.client) for r in records] == [(1, "extension")]
    assert seeder.calls == ["new"]


async def test_two_instances_opening_a_new_document_at_once_store_one_seed(
    settings, start_server, open_peer
):
    seeders = [Seeder(), Seeder()]
    servers = [
        await start_server(
            hook_settings(settings, instance_id=f"i{index}"), extensions=[seeders[index]]
        )
        for index in range(2)
    ]
    peers = [await open_peer(server) for server in servers]
    for peer in peers:
        await peer.hello()
        peer.send({"type": "subscribe", "doc": "new"})
    await wait_until(lambda: all(s.calls == ["new"] for s in seeders))
    for seeder in seeders:  # both load hooks answered: both instances try to store a seed
        seeder.release.set()
    for peer in peers:
        sync = await peer.recv_type("sync")
        assert text_of(sync["update"]) == "template of new"
    records = await servers[0].store.read_updates("new")
    assert [r.seq for r in records] == [1]


async def test_a_reader_opening_a_new_document_neither_seeds_nor_creates_it(
    settings, start_server, open_peer
):
    seeder = Seeder()
    seeder.release.set()
    server = await start_server(hook_settings(settings, auth_secret=SECRET), extensions=[seeder])
    peer = await open_peer(server)
    await peer.hello(token=Authenticator(SECRET).issue("reader", {"*": "read"}))
    peer.send({"type": "subscribe", "doc": "new"})
    assert (await peer.recv_type("error"))["code"] == "not_found"
    assert seeder.calls == []
    assert await server.store.get_document("new") is None


@pytest.mark.allow_error_logs
async def test_a_failing_load_hook_refuses_the_subscription_and_stores_nothing(
    settings, start_server, open_peer
):
    class Broken(Extension):
        async def on_load_document(self, doc: str) -> bytes | None:
            raise RuntimeError("the template database is down")

    server = await start_server(hook_settings(settings), extensions=[Broken()])
    peer = await open_peer(server)
    await peer.hello()
    peer.send({"type": "subscribe", "doc": "new"})
    error = await peer.recv_type("error")
    assert (error["code"], error["doc"]) == ("hook_failed", "new")
    assert await server.store.get_document("new") is None


@pytest.mark.allow_error_logs
async def test_a_load_hook_that_returns_no_update_refuses_the_subscription_and_stores_nothing(
    settings, start_server, open_peer
):
    class Careless(Extension):
        async def on_load_document(self, doc: str) -> bytes | None:
            return "not a Yjs update"  # type: ignore[return-value]

    server = await start_server(hook_settings(settings), extensions=[Careless()])
    for _ in range(2):  # and again: nothing is left waiting for the first
        peer = await open_peer(server)
        await peer.hello()
        peer.send({"type": "subscribe", "doc": "new"})
        error = await peer.recv_type("error")
        assert (error["code"], error["doc"]) == ("hook_failed", "new")
    assert await server.store.get_document("new") is None


# -- observers ------------------------------------------------------------------------------


async def test_observers_hear_connect_change_store_delete_and_disconnect(
    settings, start_server, open_peer
):
    recorder = Recorder()
    server = await start_server(hook_settings(settings), extensions=[recorder])
    peer = await open_peer(server)
    await peer.hello()
    await wait_until(lambda: len(recorder.connects) == 1)
    assert recorder.connects[0].endpoint == "ws"
    await peer.subscribe("doc")
    doc: pycrdt.Doc = pycrdt.Doc(client_id=5)
    text = doc.get("text", type=pycrdt.Text)
    seqs = []
    for ref, word in enumerate(["one ", "two ", "three"], start=1):
        before = doc.get_state()
        text += word
        seqs.append((await send_update(peer, "doc", ref, doc.get_update(before)))["seq"])

    # on_change records the change, then awaits the document it was handed: wait for both.
    await wait_until(
        lambda: (
            recorder.changes
            and recorder.changes[-1].last_seq == seqs[-1]
            and len(recorder.texts) == len(recorder.changes)
        )
    )
    assert recorder.changes[0].first_seq == 1
    assert [r.seq for c in recorder.changes for r in c.records] == seqs
    assert recorder.texts[-1] == "one two three"
    assert {author.instance for c in recorder.changes for author in c.authors} == {"test"}
    assert [r.seq for s in recorder.stored for r in s.records] == seqs

    response = await AsyncHTTPClient().fetch(
        f"http://127.0.0.1:{server.port}/api/documents/doc", method="DELETE"
    )
    assert response.code in (200, 204)
    await wait_until(lambda: recorder.deleted == ["doc"])
    peer.close()
    await wait_until(lambda: len(recorder.disconnects) == 1)
    assert recorder.disconnects[0].id == recorder.connects[0].id


async def test_a_yjs_peer_is_told_with_its_document(settings, start_server, yjs):
    recorder = Recorder()
    server = await start_server(hook_settings(settings), extensions=[recorder])
    peer = await yjs.connect(server, "notes/today")
    await peer.synced()
    await wait_until(lambda: len(recorder.connects) == 1)
    assert (recorder.connects[0].endpoint, recorder.connects[0].doc) == ("yjs", "notes/today")
    await peer.disconnect()
    await wait_until(lambda: [c.id for c in recorder.disconnects] == [recorder.connects[0].id])


async def test_changes_are_debounced_per_document(settings, start_server, open_peer):
    recorder = Recorder()
    server = await start_server(
        hook_settings(settings).replace(hook_change_debounce_s=0.3, hook_change_max_wait_s=5.0),
        extensions=[recorder],
    )
    peer = await open_peer(server)
    await peer.hello()
    await peer.subscribe("doc")
    for ref in range(1, 6):
        await send_update(peer, "doc", ref, text_update("x", client_id=ref))
    await wait_until(lambda: recorder.changes)
    # Five commits in quick succession: one change (two, on a very slow machine).
    assert len(recorder.changes) <= 2
    assert recorder.changes[-1].last_seq == 5


@pytest.mark.allow_error_logs
async def test_a_raising_or_hanging_observer_is_skipped_and_editing_goes_on(
    settings, start_server, open_peer
):
    class Bad(Extension):
        def __init__(self) -> None:
            self.calls = 0

        async def on_store(self, stored: Stored) -> None:
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("boom")
            await asyncio.Event().wait()

    bad, recorder = Bad(), Recorder()
    server = await start_server(hook_settings(settings), extensions=[bad, recorder])
    peer = await open_peer(server)
    await peer.hello()
    await peer.subscribe("doc")
    for ref in (1, 2, 3):
        assert (await send_update(peer, "doc", ref, text_update("x", client_id=ref)))["seq"] == ref
    # The next extension in the chain still hears every commit.
    await wait_until(lambda: [r.seq for s in recorder.stored for r in s.records] == [1, 2, 3])


async def test_shutdown_cancels_and_awaits_the_hooks_task(settings, start_server, open_peer):
    class Slow(Extension):
        def __init__(self) -> None:
            self.started = asyncio.Event()
            self.ended = False

        async def on_store(self, stored: Stored) -> None:
            self.started.set()
            try:
                await asyncio.Event().wait()
            finally:
                self.ended = True

    slow = Slow()
    server = await start_server(
        hook_settings(settings).replace(hook_timeout_s=60.0), extensions=[slow]
    )
    peer = await open_peer(server)
    await peer.hello()
    await peer.subscribe("doc")
    await send_update(peer, "doc", 1, text_update("x"))
    await asyncio.wait_for(slow.started.wait(), TIMEOUT_S)
    await server.stop()
    assert slow.ended


async def test_past_its_bound_the_observers_queue_drops_events_instead_of_growing(
    settings, start_server, open_peer
):
    class Stuck(Extension):
        def __init__(self) -> None:
            self.release = asyncio.Event()

        async def on_connect(self, connection: Connection) -> None:
            await self.release.wait()

    stuck = Stuck()
    server = await start_server(
        hook_settings(settings).replace(hook_queue_events=2, hook_timeout_s=60.0),
        extensions=[stuck],
    )
    for _ in range(5):
        peer = await open_peer(server)
        await peer.hello()
    # One is being handled, two wait, two were dropped.
    assert server.rooms.hooks.dropped == 2
    stuck.release.set()


# -- loading extensions ------------------------------------------------------------------------


def test_a_request_shown_as_text_keeps_its_token_cookies_and_headers_out():
    request = Request("/ws", "tok123", {"session": "COOKIE"}, {"Cookie": "session=COOKIE"}, "::1")
    assert "tok123" not in repr(request) and "COOKIE" not in repr(request)


def test_an_extension_is_loaded_from_module_and_attribute():
    assert isinstance(load_extension("tests.test_extensions:Recorder"), Recorder)
    args = build_parser().parse_args(
        ["serve", "--extension", "a:b", "--extension", "tests.test_extensions:Recorder"]
    )
    assert args.extension == ["a:b", "tests.test_extensions:Recorder"]
    with pytest.raises(ValueError, match="module:attribute"):
        load_extension("no-colon")


async def test_extensions_chain_in_order_and_the_first_identity_wins(settings, tmp_path, open_peer):
    class Named(Extension):
        def __init__(self, name: str | None) -> None:
            self.name = name
            self.asked = 0

        async def on_authenticate(self, request: Request) -> Identity | None:
            self.asked += 1
            return None if self.name is None else Identity(self.name, (("*", Role.WRITE),))

    chain = [Named(None), Named("first"), Named("second")]
    server = CollabServer(
        hook_settings(settings), create_store(f"sqlite:///{tmp_path}/x.db"), extensions=chain
    )
    await server.start()
    try:
        peer = await open_peer(server)
        assert (await peer.hello())["user"] == "first"
        assert [n.asked for n in chain] == [1, 1, 0]
    finally:
        await server.stop()
