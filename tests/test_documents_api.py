"""HTTP API of documents: content as JSON now and at any version (by seq or time),
the timeline, restore, and the event stream (SSE) with resume."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import random
import re
import socket
import time
from typing import Any

import pycrdt
import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from collab.auth import Authenticator
from collab.client import CollabClient
from collab.store.memory import MemoryStore
from collab.wire.yformat import check_update
from tests.helpers import RawPeer, text_update, wait_until

SECRET = "s3cret-s3cret-s3cret-s3cret-s3cret"


def url(server, path: str) -> str:
    return f"http://127.0.0.1:{server.port}{path}"


async def get_json(server, path: str, **kwargs: Any) -> Any:
    response = await AsyncHTTPClient().fetch(url(server, path), **kwargs)
    assert response.headers["Content-Type"].startswith("application/json")
    return json.loads(response.body)


async def fails(server, path: str, status: int, **kwargs: Any) -> str:
    with pytest.raises(HTTPClientError) as failed:
        await AsyncHTTPClient().fetch(url(server, path), **kwargs)
    assert failed.value.code == status
    assert failed.value.response is not None
    return json.loads(failed.value.response.body)["error"]


async def post_json(server, path: str, body: Any, **kwargs: Any) -> Any:
    response = await AsyncHTTPClient().fetch(
        url(server, path), method="POST", body=json.dumps(body), **kwargs
    )
    return json.loads(response.body)


def rich(doc: pycrdt.Doc) -> None:
    """One of every root kind, with nested types, in one update."""
    with doc.transaction():
        _rich(doc)


def _rich(doc: pycrdt.Doc) -> None:
    doc.get("text", type=pycrdt.Text).insert(0, "héllo 😀")
    meta = doc.get("meta", type=pycrdt.Map)
    meta["title"] = "Plan"
    meta["count"] = 3
    meta["tags"] = pycrdt.Array(["a", "b"])
    meta["note"] = pycrdt.Text("inner")
    doc.get("items", type=pycrdt.Array).extend([1, "two", pycrdt.Map({"k": b"\x01"})])
    xml = doc.get("prosemirror", type=pycrdt.XmlFragment)
    xml.children.append(pycrdt.XmlElement("p", {"class": "lead"}))
    xml.children[0].children.append(pycrdt.XmlText("first paragraph"))


RICH_CONTENT = {
    "text": "héllo 😀",
    "meta": {"title": "Plan", "count": 3, "tags": ["a", "b"], "note": "inner"},
    "items": [1, "two", {"k": {"base64": "AQ=="}}],
    "prosemirror": '<p class="lead">first paragraph</p>',
}


async def written(connect, name: str, *edits: Any, target=None) -> tuple[CollabClient, Any]:
    client = await connect(target)
    remote = await client.subscribe(name)
    for edit in edits:
        edit(remote.doc)
        await remote.flushed()
    return client, remote


def append(text: str):
    def edit(doc: pycrdt.Doc) -> None:
        root = doc.get("text", type=pycrdt.Text)
        root.insert(len(root), text)

    return edit


async def guarded(settings, start_server, connect, name: str) -> tuple[Any, ...]:
    """A server with access tokens and a document ``name`` of one update: the
    server, its writer (a client) and its copy, and the headers of a reader and of
    an editor."""
    secured = await start_server(settings.replace(auth_secret=SECRET))
    issue = Authenticator(SECRET).issue
    writer = await connect(secured, token=issue("w", {"*": "write"}))
    remote = await writer.subscribe(name)
    append("x")(remote.doc)
    await remote.flushed()
    reader = {"Authorization": f"Bearer {issue('r', {'*': 'read'})}"}
    editor = {"Authorization": f"Bearer {issue('e', {'*': 'write'})}"}
    return secured, writer, remote, reader, editor


# -- content ------------------------------------------------------------------------------


async def test_a_document_is_rendered_as_json_by_root_without_naming_its_roots(server, connect):
    await written(connect, "rich", rich)

    body = await get_json(server, "/api/documents/rich")

    assert body["content"] == RICH_CONTENT
    assert body["types"] == {"items": "array", "meta": "map", "prosemirror": "xml", "text": "text"}
    assert body["seq"] == 1 and body["time"].endswith("+00:00")


async def test_with_accept_octet_stream_the_state_is_a_yjs_update(server, connect):
    _, remote = await written(connect, "binary", rich)
    response = await AsyncHTTPClient().fetch(
        url(server, "/api/documents/binary"), headers={"Accept": "application/octet-stream"}
    )
    assert response.headers["Content-Type"] == "application/octet-stream"
    check_update(response.body)
    copy = pycrdt.Doc()
    copy.apply_update(response.body)
    assert str(copy.get("text", type=pycrdt.Text)) == "héllo 😀"
    assert copy.get_state() == remote.doc.get_state()


async def test_every_version_by_seq_says_what_the_document_said_then(server, connect):
    await written(connect, "versions", append("one "), append("two "), append("three"))

    texts = [
        (await get_json(server, f"/api/documents/versions/versions/{seq}"))["content"]
        for seq in range(4)
    ]

    assert texts == [{}, {"text": "one "}, {"text": "one two "}, {"text": "one two three"}]


async def test_a_version_by_time_resolves_to_the_last_update_before_it(server, connect):
    _, remote = await written(connect, "timed", append("a"))
    await asyncio.sleep(0.05)
    append("b")(remote.doc)
    await remote.flushed()
    history = await get_json(server, "/api/documents/timed/history")
    first, second = (u["time_s"] for u in history["updates"])

    def at(time_s: float) -> str:
        moment = datetime.datetime.fromtimestamp(time_s, tz=datetime.UTC).isoformat()
        return moment.replace("+", "%2B")

    between = await get_json(server, f"/api/documents/timed/versions?at={at((first + second) / 2)}")
    assert (between["seq"], between["content"]) == (1, {"text": "a"})
    assert between["time_s"] == first
    before = await get_json(server, f"/api/documents/timed/versions?at={at(first - 60)}")
    assert (before["seq"], before["content"]) == (0, {})
    after = await get_json(server, f"/api/documents/timed/versions?at={at(second + 60)}")
    assert (after["seq"], after["content"]) == (2, {"text": "ab"})
    naive = datetime.datetime.fromtimestamp(second + 60, tz=datetime.UTC).replace(tzinfo=None)
    utc = await get_json(server, f"/api/documents/timed/versions?at={naive.isoformat()}")
    assert utc["seq"] == 2


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/documents/missing", 404),
        ("/api/documents/missing/versions/1", 404),
        ("/api/documents/known/versions/abc", 400),
        ("/api/documents/known/versions/-1", 400),
        ("/api/documents/known/versions/99", 400),
        ("/api/documents/known/versions?at=yesterday", 400),
        ("/api/documents/known/versions", 400),
        ("/api/documents/known/history?group=hour", 400),
        ("/api/documents/known/history?group=session&gap_s=x", 400),
        ("/api/documents/known/events?after=x", 400),
        ("/api/documents/known/events?after=99", 400),
        ("/api/documents?limit=0", 400),
    ],
)
async def test_unknown_documents_and_bad_versions_get_json_errors(server, connect, path, status):
    await written(connect, "known", append("x"))
    assert await fails(server, path, status)


async def test_documents_are_listed_by_prefix_a_page_at_a_time_with_their_peers(server, connect):
    await written(connect, "team/a", append("a"))
    client, _ = await written(connect, "team/b", append("b"))
    await written(connect, "other", append("c"))
    await client.close()  # team/b: no peer left on it... but team/a's client stays

    first = await get_json(server, "/api/documents?prefix=team/&limit=1")
    assert [d["name"] for d in first["documents"]] == ["team/a"]
    assert first["documents"][0]["peers"] == 1 and first["documents"][0]["seq"] == 1
    stored = await server.store.read_updates("team/a")
    assert first["documents"][0]["bytes"] == len(stored[0].data) > 0
    assert first["next_after"] == "team/a"
    rest = await get_json(server, "/api/documents?prefix=team/&limit=1&after=team/a")
    assert [d["name"] for d in rest["documents"]] == ["team/b"]
    assert rest["next_after"] is None
    await wait_until(lambda: server.rooms.get("team/b") is None)
    again = await get_json(server, "/api/documents?prefix=team/&after=team/a")
    assert again["documents"][0]["peers"] == 0


# -- timeline -------------------------------------------------------------------------------


async def test_the_timeline_merges_one_users_consecutive_updates(settings, start_server, connect):
    secured = await start_server(settings.replace(auth_secret=SECRET))
    issue = Authenticator(SECRET).issue
    ann = await connect(secured, token=issue("ann", {"*": "write"}))
    bob = await connect(secured, token=issue("bob", {"*": "write"}))
    a, b = await ann.subscribe("timeline"), await bob.subscribe("timeline")
    for remote, word in [(a, "a1"), (a, "a2"), (a, "a3"), (b, "b1"), (b, "b2"), (a, "a4")]:
        append(word)(remote.doc)
        await remote.flushed()
        other = b if remote is a else a
        await other.wait_for(lambda o=other, w=word: w in str(o.doc.get("text", type=pycrdt.Text)))
    reader = {"Authorization": f"Bearer {issue('r', {'*': 'read'})}"}

    body = await get_json(secured, "/api/documents/timeline/history?group=session", headers=reader)

    changes = body["changes"]
    assert [(c["user"], c["first_seq"], c["last_seq"], c["updates"]) for c in changes] == [
        ("ann", 1, 3, 3),
        ("bob", 4, 5, 2),
        ("ann", 6, 6, 1),
    ]
    assert all(c["bytes"] > 0 and c["last_time_s"] >= c["first_time_s"] for c in changes)
    paged = await get_json(
        secured, "/api/documents/timeline/history?group=session&limit=2", headers=reader
    )
    assert [c["first_seq"] for c in paged["changes"]] == [1, 4] and paged["next_after"] == 5
    split = await get_json(
        secured, "/api/documents/timeline/history?group=session&gap_s=0", headers=reader
    )
    assert len(split["changes"]) >= 3


async def test_without_tokens_the_timeline_splits_per_guest_by_client_label(
    server, connect
) -> None:
    ann = await connect(client_id="web:Ann")
    bob = await connect(client_id="web:Bob")
    a, b = await ann.subscribe("guests"), await bob.subscribe("guests")
    for remote, word in [(a, "a1"), (a, "a2"), (b, "b1"), (a, "a3")]:
        append(word)(remote.doc)
        await remote.flushed()
        other = b if remote is a else a
        await other.wait_for(lambda o=other, w=word: w in str(o.doc.get("text", type=pycrdt.Text)))

    body = await get_json(server, "/api/documents/guests/history?group=session")

    assert [(c["user"], c["clients"], c["first_seq"], c["last_seq"]) for c in body["changes"]] == [
        (None, ["web:Ann"], 1, 2),
        (None, ["web:Bob"], 3, 3),
        (None, ["web:Ann"], 4, 4),
    ]


async def test_a_long_history_of_keystrokes_is_a_short_timeline(server, connect):
    _, remote = await written(connect, "typed")
    text = remote.doc.get("text", type=pycrdt.Text)
    for i in range(300):
        text.insert(len(text), "x")
        if i % 50 == 0:
            await remote.flushed()
    await remote.flushed()
    body = await get_json(server, "/api/documents/typed/history?group=session")
    assert len(body["changes"]) == 1
    assert body["changes"][0]["first_seq"] == 1
    assert body["changes"][0]["updates"] == body["changes"][0]["last_seq"]


# -- restore --------------------------------------------------------------------------------


async def test_restore_brings_back_every_root_kind_as_one_new_update(server, connect):
    _, remote = await written(connect, "restored", rich)

    def later(doc: pycrdt.Doc) -> None:
        with doc.transaction():
            text = doc.get("text", type=pycrdt.Text)
            text.insert(0, "Änderung: ")
            meta = doc.get("meta", type=pycrdt.Map)
            meta["title"] = "Other"
            del meta["tags"]
            meta["added"] = True
            doc.get("items", type=pycrdt.Array).insert(0, "first")
            xml = doc.get("prosemirror", type=pycrdt.XmlFragment)
            xml.children.append(pycrdt.XmlElement("h1"))
            doc.get("extra", type=pycrdt.Text).insert(0, "written later")

    later(remote.doc)
    await remote.flushed()
    watcher = await (await connect()).subscribe("restored")

    body = await post_json(server, "/api/documents/restored/restore", {"seq": 1})

    assert body == {"doc": "restored", "restored_seq": 1, "seq": 3, "changed": True}
    now = await get_json(server, "/api/documents/restored")
    assert now["seq"] == 3
    extra = now["content"].pop("extra")
    assert extra in ("", [])  # it did not exist at seq 1: emptied
    assert now["content"] == RICH_CONTENT
    history = await get_json(server, "/api/documents/restored/history")
    assert [u["seq"] for u in history["updates"]] == [1, 2, 3]
    assert history["updates"][2]["origin"]["client"].startswith("api:restore:")
    # Connected editors get it at once, as any edit.
    for peer in (remote, watcher):
        await peer.wait_for(lambda p=peer: str(p.doc.get("text", type=pycrdt.Text)) == "héllo 😀")
    again = await post_json(server, "/api/documents/restored/restore", {"seq": 3})
    assert again["changed"] is False and again["seq"] is None


async def test_restore_while_another_client_keeps_typing(server, connect):
    _, remote = await written(connect, "busy", append("old text"))
    _, typist = await written(connect, "busy")
    text = typist.doc.get("text", type=pycrdt.Text)
    text.insert(0, "NEW ")
    await typist.flushed()
    stop = asyncio.Event()

    async def keep_typing() -> int:
        typed = 0
        while not stop.is_set():
            text.insert(len(text), ".")
            typed += 1
            await asyncio.sleep(0.002)
        await typist.flushed()
        return typed

    typing = asyncio.ensure_future(keep_typing())
    await asyncio.sleep(0.05)
    body = await post_json(server, "/api/documents/busy/restore", {"seq": 1})
    stop.set()
    typed = await typing

    # Right after the restore's seq the text was the old one. The restore is made on
    # a thread against the state it meets, again if the text changed meanwhile; when
    # every attempt was raced (a loaded machine) the dots typed meanwhile are kept,
    # as any concurrent edit is (collab.core.api_edits.server_edit).
    version = await get_json(server, f"/api/documents/busy/versions/{body['seq']}")
    assert re.fullmatch(r"old text\.*", version["content"]["text"])
    # The dots typed after it are kept; every copy converges.
    final = (await get_json(server, "/api/documents/busy"))["content"]["text"]
    assert final.startswith("old text") and typed > 0
    await remote.wait_for(lambda: str(remote.doc.get("text", type=pycrdt.Text)) == final)
    await typist.wait_for(lambda: str(text) == final)


async def test_restore_needs_write_access_and_a_valid_seq(settings, start_server, connect):
    secured, _, remote, reader, editor = await guarded(settings, start_server, connect, "guarded")
    restore = "/api/documents/guarded/restore"
    options = {"method": "POST", "body": json.dumps({"seq": 0})}

    assert "read-only" in await fails(secured, restore, 403, headers=reader, **options)
    assert await fails(secured, restore, 401, **options)
    for bad in ({"seq": "x"}, {"seq": -1}, {"seq": 9}, {}, [1], {"seq": True}):
        await fails(secured, restore, 400, method="POST", body=json.dumps(bad), headers=editor)
    await fails(secured, restore, 400, method="POST", body="{not json", headers=editor)
    body = await post_json(secured, restore, {"seq": 0}, headers=editor)
    assert body["changed"] is True
    await remote.wait_for(lambda: str(remote.doc.get("text", type=pycrdt.Text)) == "")
    history = await get_json(secured, "/api/documents/guarded/history", headers=editor)
    assert history["updates"][-1]["origin"]["user"] == "e"


# -- event stream ---------------------------------------------------------------------------


class EventReader:
    """An SSE client on a plain socket (HTTP/1.0: no chunking; closing it closes
    the connection): collects the update events and counts comments."""

    def __init__(self, server, doc: str, *, after: int | None = None, last_id: int | None = None):
        self.events: list[dict[str, Any]] = []
        self.comments = 0
        self.status: int | None = None
        query = f"?after={after}" if after is not None else ""
        header = f"Last-Event-ID: {last_id}\r\n" if last_id is not None else ""
        request = f"GET /api/documents/{doc}/events{query} HTTP/1.0\r\n{header}\r\n"
        self._writer: asyncio.StreamWriter | None = None
        self.done = asyncio.ensure_future(self._read(server.port, request.encode()))

    async def _read(self, port: int, request: bytes) -> None:
        reader, self._writer = await asyncio.open_connection("127.0.0.1", port)
        self._writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        self.status = int(head.split(b" ", 2)[1])
        buffer = b""
        while chunk := await reader.read(65536):
            buffer += chunk
            while b"\n\n" in buffer:
                block, buffer = buffer.split(b"\n\n", 1)
                self._block(block.decode().split("\n"))

    def _block(self, lines: list[str]) -> None:
        if all(line.startswith(":") for line in lines):
            self.comments += 1
            return
        fields = dict(line.split(": ", 1) for line in lines if ": " in line)
        if fields.get("event") == "update":
            data = json.loads(fields["data"])
            assert int(fields["id"]) == data["seq"]
            self.events.append(data)

    @property
    def seqs(self) -> list[int]:
        return [event["seq"] for event in self.events]

    def close(self) -> None:
        self.done.cancel()
        if self._writer is not None:
            self._writer.close()


async def test_events_replay_after_a_seq_then_follow_live(server, connect):
    _, remote = await written(connect, "live", append("a"), append("b"), append("c"))
    reader = EventReader(server, "live", after=1)
    await wait_until(lambda: reader.seqs == [2, 3])
    append("d")(remote.doc)
    await remote.flushed()
    await wait_until(lambda: reader.seqs == [2, 3, 4])
    event = reader.events[-1]
    doc = pycrdt.Doc()
    for e in reader.events:
        check_update(base64.b64decode(e["update"]))
    assert event["origin"]["instance"] == "test" and event["time_s"] > 0
    reader.close()
    # The room is no longer watched once the client is gone.
    await wait_until(
        lambda: server.rooms.get("live") is None or not server.rooms.get("live").watchers
    )
    del doc


async def test_a_reader_that_resumes_with_last_event_id_gets_every_update_once(server, connect):
    _, remote = await written(connect, "resumed", append("start,"))  # it exists
    text = remote.doc.get("text", type=pycrdt.Text)
    first = EventReader(server, "resumed", after=0)
    for i in range(30):
        text.insert(len(text), f"{i},")
        await asyncio.sleep(0.001)
    await wait_until(lambda: len(first.seqs) >= 5)
    first.close()  # mid-stream
    seen = list(first.seqs)
    for i in range(30, 60):  # while it is away
        text.insert(len(text), f"{i},")
    await remote.flushed()
    second = EventReader(server, "resumed", last_id=seen[-1])
    for i in range(60, 70):
        text.insert(len(text), f"{i},")
    await remote.flushed()
    head = (await get_json(server, "/api/documents/resumed"))["seq"]
    await wait_until(lambda: second.seqs and second.seqs[-1] == head)
    second.close()
    assert seen + second.seqs == list(range(1, head + 1))
    rebuilt = pycrdt.Doc()
    for event in first.events[: len(seen)] + second.events:
        rebuilt.apply_update(base64.b64decode(event["update"]))
    assert str(rebuilt.get("text", type=pycrdt.Text)) == str(text)


async def test_a_quiet_stream_gets_keep_alive_comments(settings, start_server, connect):
    quick = await start_server(settings.replace(events_keepalive_s=0.05))
    await written(connect, "quiet", append("x"), target=quick)
    reader = EventReader(quick, "quiet")
    await wait_until(lambda: reader.comments >= 2)
    assert reader.seqs == []  # from now on: nothing old
    reader.close()


async def test_a_reader_that_does_not_read_is_disconnected_not_buffered(
    settings, start_server, connect
):
    small = await start_server(
        settings.replace(events_buffer_bytes=64 * 1024, snapshot_every_bytes=64 * 1024 * 1024)
    )
    await written(connect, "flood", append("x"), target=small)
    # A client that asks for every update and then never reads: its socket's
    # receive buffer fills, then the server's send buffer, then the stream's.
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", small.port))
    stalled.sendall(b"GET /api/documents/flood/events?after=0 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await wait_until(lambda: (room := small.rooms.get("flood")) is not None and room.watchers)
    # 8 MB of updates (11 MB of events): past the 64 KiB the stream may hold, and
    # past what the kernel holds for the socket too (up to 4 MiB here,
    # net.ipv4.tcp_wmem), which a smaller flood could fill without overflowing.
    # Standalone updates of many clients: cheap to make and to apply.
    writer = await RawPeer.connect(f"ws://127.0.0.1:{small.port}/ws")
    await writer.hello()
    await writer.subscribe("flood")
    chunk = "y" * 15_000  # each checked on the event loop (below 16 KiB)
    for ref in range(540):
        update = text_update(chunk, client_id=1000 + ref)
        writer.send({"type": "update", "doc": "flood", "ref": ref, "update": update})
    for _ in range(540):
        await writer.recv_type("ack")
    writer.close()
    await wait_until(lambda: not small.rooms.get("flood").watchers, timeout_s=10)
    stalled.settimeout(5)
    received = 0
    with contextlib.suppress(ConnectionResetError):
        while chunk := stalled.recv(1 << 20):  # what reached it, then the end: closed
            received += len(chunk)
    stalled.close()
    assert received < 6_000_000  # far from every update: it was sent away, not buffered


async def test_events_carry_both_instances_updates_once_across_a_resume_elsewhere(
    settings, start_server, connect
):
    store = MemoryStore()
    shared = settings.replace(store_url="memory://", feed_poll_s=0.01, feed_audit_s=0.2)
    a = await start_server(shared.replace(instance_id="a"), store)
    b = await start_server(shared.replace(instance_id="b"), store)
    _, on_a = await written(connect, "both", append("start "), target=a)
    _, on_b = await written(connect, "both", target=b)
    await on_b.wait_for(lambda: "start" in str(on_b.doc.get("text", type=pycrdt.Text)))
    first = EventReader(a, "both", after=0)

    async def type_on(remote: Any, tag: str, count: int) -> None:
        text = remote.doc.get("text", type=pycrdt.Text)
        for i in range(count):
            text.insert(len(text), f"{tag}{i} ")
            await asyncio.sleep(0.002)
        await remote.flushed()

    writing = asyncio.gather(type_on(on_a, "a", 40), type_on(on_b, "b", 40))
    await wait_until(lambda: len(first.seqs) >= 20)
    first.close()
    seen = list(first.seqs)
    second = EventReader(b, "both", last_id=seen[-1])  # resumes on the other instance
    await writing
    head = (await store.get_document("both")).head_seq
    assert head == 81
    await wait_until(lambda: second.seqs and second.seqs[-1] == head)
    second.close()
    assert seen + second.seqs == list(range(1, head + 1))
    assert {e["origin"]["instance"] for e in first.events + second.events} == {"a", "b"}


# -- diff -----------------------------------------------------------------------------------


async def test_a_diff_shows_inserted_and_deleted_spans_with_their_authors(
    settings, start_server, connect
):
    secured = await start_server(settings.replace(auth_secret=SECRET))
    issue = Authenticator(SECRET).issue
    ann = await connect(secured, token=issue("ann", {"*": "write"}), client_id="ann-laptop")
    bob = await connect(secured, token=issue("bob", {"*": "write"}), client_id="bob-phone")
    a, b = await ann.subscribe("diffed"), await bob.subscribe("diffed")
    a_text, b_text = (r.doc.get("text", type=pycrdt.Text) for r in (a, b))
    a_text.insert(0, "héllo world")
    await a.flushed()
    await b.wait_for(lambda: str(b_text) == "héllo world")
    b_text.insert(len("héllo ".encode()), "big 😀 ")  # pycrdt counts UTF-8 bytes
    await b.flushed()
    await a.wait_for(lambda: "big" in str(a_text))
    del a_text[0 : len("héllo ".encode())]
    a_text.insert(0, "Hi ")
    await a.flushed()
    reader = {"Authorization": f"Bearer {issue('r', {'*': 'read'})}"}

    body = await get_json(secured, "/api/documents/diffed/diff?from=1&to=4", headers=reader)

    assert body["root"] == "text" and (body["from"], body["to"]) == (1, 4)
    spans = [(s["type"], s["text"], s.get("user")) for s in body["spans"]]
    assert spans == [
        ("delete", "héllo ", "ann"),
        ("insert", "Hi ", "ann"),
        ("insert", "big 😀 ", "bob"),
        ("equal", "world", None),
    ]
    bob_span = body["spans"][2]
    assert bob_span["client"] == "bob-phone" and bob_span["first_seq"] == 2
    assert bob_span["yjs_clients"] == [b.doc.client_id]
    # The newer text is what is not deleted; the older one what is not inserted.
    assert "".join(s["text"] for s in body["spans"] if s["type"] != "delete") == str(a_text)
    assert "".join(s["text"] for s in body["spans"] if s["type"] != "insert") == "héllo world"
    whole = await get_json(secured, "/api/documents/diffed/diff", headers=reader)
    assert [s["type"] for s in whole["spans"]] == ["insert", "insert", "insert"]
    for bad in ("from=3&to=1", "to=99", "root=nope", "from=x"):
        await fails(secured, f"/api/documents/diffed/diff?{bad}", 400, headers=reader)


# -- delete ---------------------------------------------------------------------------------


async def delete(server, path: str, **kwargs: Any) -> Any:
    response = await AsyncHTTPClient().fetch(url(server, path), method="DELETE", **kwargs)
    return json.loads(response.body)


async def test_a_deleted_document_is_gone_and_its_editors_get_a_new_empty_one(server, connect):
    _, remote = await written(connect, "doomed", append("old secret text"))
    old_epoch = remote.epoch
    reader = EventReader(server, "doomed", after=0)
    await wait_until(lambda: reader.seqs == [1])

    assert await delete(server, "/api/documents/doomed") == {"doc": "doomed", "deleted": True}

    # The connected editor is told, resubscribes and resets to the new document.
    await remote.wait_for(lambda: remote.epoch != old_epoch and remote.synced)
    assert str(remote.doc.get("text", type=pycrdt.Text)) == ""
    assert remote.resets == 1
    append("new text")(remote.doc)
    await remote.flushed()
    body = await get_json(server, "/api/documents/doomed")
    assert body["content"] == {"text": "new text"} and body["seq"] == 1
    assert body["epoch"] == remote.epoch != old_epoch
    history = await get_json(server, "/api/documents/doomed/history")
    assert [u["seq"] for u in history["updates"]] == [1]
    await wait_until(lambda: reader.done.done())  # the event stream ended: deleted
    reader.close()


async def test_deleting_needs_write_access_and_an_existing_document(
    settings, start_server, connect
):
    secured, writer, _, reader, editor = await guarded(settings, start_server, connect, "kept")

    await fails(secured, "/api/documents/kept", 403, method="DELETE", headers=reader)
    await fails(secured, "/api/documents/kept", 401, method="DELETE")
    await fails(secured, "/api/documents/never", 404, method="DELETE", headers=editor)
    assert (await get_json(secured, "/api/documents/kept", headers=reader))["seq"] == 1
    await writer.close()  # else it resubscribes, and subscribing creates a document
    await delete(secured, "/api/documents/kept", headers=editor)
    for path in ("", "/versions/1", "/history", "/events"):
        await fails(secured, f"/api/documents/kept{path}", 404, headers=reader)
    listed = await get_json(secured, "/api/documents", headers=reader)
    assert listed["documents"] == []


async def test_an_instance_editing_a_document_deleted_elsewhere_never_brings_old_content_back(
    settings, start_server, connect
):
    store = MemoryStore()
    shared = settings.replace(store_url="memory://", feed_poll_s=0.01, feed_audit_s=60)
    a = await start_server(shared.replace(instance_id="a"), store)
    b = await start_server(shared.replace(instance_id="b"), store)
    _, on_b = await written(connect, "shared", append("old "), append("content "), target=b)
    old_epoch = on_b.epoch

    await delete(a, "/api/documents/shared")  # b's room does not know yet (no audit soon)
    append("typed-after")(on_b.doc)  # b accepts it; the store refuses that generation

    await on_b.wait_for(lambda: on_b.epoch != old_epoch and on_b.synced and not on_b.unacked)
    await on_b.flushed()
    stored = await store.read_updates("shared")
    rebuilt = pycrdt.Doc()
    for record in stored:
        rebuilt.apply_update(record.data)
    text = str(rebuilt.get("text", type=pycrdt.Text))
    assert "old" not in text and "content" not in text  # nothing of the deleted generation
    assert text == str(on_b.doc.get("text", type=pycrdt.Text))
    assert [r.seq for r in stored] == list(range(1, len(stored) + 1))


async def test_restoring_a_long_text_does_not_stall_the_server(server, connect):
    # Two unrelated 20,000-character texts: a close comparison of them would take
    # seconds (quadratic); the restore must neither take that nor block the loop.
    _, remote = await written(connect, "long")
    text = remote.doc.get("text", type=pycrdt.Text)
    rng = random.Random(1)
    text.insert(0, "".join(rng.choice("abcdefghij ") for _ in range(20_000)))
    await remote.flushed()
    del text[0 : len(text)]
    text.insert(0, "".join(rng.choice("abcdefghij ") for _ in range(20_000)))
    await remote.flushed()
    old = (await get_json(server, "/api/documents/long/versions/1"))["content"]["text"]
    stalls: list[float] = []

    async def tick() -> None:
        while True:
            started = time.monotonic()
            await asyncio.sleep(0.005)
            stalls.append(time.monotonic() - started)

    ticker = asyncio.ensure_future(tick())
    try:
        body = await post_json(server, "/api/documents/long/restore", {"seq": 1})
    finally:
        ticker.cancel()
    assert body["changed"] is True
    assert max(stalls, default=0.0) < 0.25
    await remote.wait_for(lambda: str(text) == old)
