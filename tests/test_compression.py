"""Bytes on the wire: HTTP answers are gzip-compressed for clients that accept it
(JSON, states, the page's bundle; never event streams), and WebSocket
permessage-deflate is offered on both endpoints when the setting asks for it."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pycrdt
import pytest
import tornado.web
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import websocket_connect

from collab.config import Settings, SettingsError
from collab.embed import Collab
from collab.errors import CloseCode
from collab.store import NewUpdate
from collab.web import page_files
from collab.wire.native import PROTOCOL_VERSION
from tests.helpers import RawPeer, text_of, text_update, wait_until

# Text that compresses, large enough for the off-loop path (64 KiB and more).
PROSE = "".join(f"line {i}: the quick brown fox jumps over the lazy dog\n" for i in range(4000))


async def fetch(server: Any, path: str, encoding: str | None, **options: Any) -> Any:
    """The raw answer: decompress_response=False shows what went over the wire."""
    headers = {"Accept-Encoding": encoding} if encoding is not None else {}
    raise_error = options.pop("raise_error", True)
    return await AsyncHTTPClient().fetch(
        HTTPRequest(
            f"http://127.0.0.1:{server.port}{path}",
            headers={**headers, **options.pop("headers", {})},
            decompress_response=False,
            **options,
        ),
        raise_error=raise_error,
    )


async def revalidated(server: Any, path: str, etag: str) -> Any:
    """The gzip answer to a request that holds ``etag`` (304: it is still current)."""
    return await fetch(server, path, "gzip", headers={"If-None-Match": etag}, raise_error=False)


async def a_document(server: Any, doc: str, content: str) -> None:
    await server.store.append([NewUpdate(doc, text_update(content), time.time())])


async def test_json_and_binary_answers_are_gzipped_for_clients_that_accept_it(server):
    await a_document(server, "big", PROSE)
    plain = await fetch(server, "/api/documents/big", None)
    assert "Content-Encoding" not in plain.headers
    squeezed = await fetch(server, "/api/documents/big", "gzip, deflate")
    assert squeezed.headers["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in squeezed.headers["Vary"]
    assert gzip.decompress(squeezed.body) == plain.body
    assert len(squeezed.body) * 10 < len(plain.body)
    assert json.loads(plain.body)["content"]["text"] == PROSE

    # The state, binary, compressed on a thread (it is over 64 KiB).
    binary = {"Accept": "application/octet-stream"}
    state = await fetch(server, "/api/documents/big/state", None, headers=binary)
    zipped = await fetch(server, "/api/documents/big/state", "gzip", headers=binary)
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(zipped.body) == state.body
    doc = pycrdt.Doc()
    doc.apply_update(gzip.decompress(zipped.body))
    assert text_of(doc) == PROSE


async def test_small_answers_go_through_the_transform_and_tiny_ones_stay_plain(server):
    await a_document(server, "small", "x" * 3000)  # a 3 KiB answer: the transform's
    small = await fetch(server, "/api/documents/small", "gzip")
    assert small.headers["Content-Encoding"] == "gzip"
    assert json.loads(gzip.decompress(small.body))["content"]["text"] == "x" * 3000
    tiny = await fetch(server, "/healthz", "gzip")  # under 1 KiB: not worth a header
    assert "Content-Encoding" not in tiny.headers


async def test_a_client_that_refuses_gzip_gets_plain_answers(server):
    await a_document(server, "big", PROSE)
    for refusal in ("gzip;q=0", "identity", "br, gzip; q=0.0"):
        answer = await fetch(server, "/api/documents/big", refusal)
        assert "Content-Encoding" not in answer.headers, refusal
        assert json.loads(answer.body)["content"]["text"] == PROSE


async def test_the_page_bundle_is_compressed(server):
    plain = await fetch(server, "/app.js", None)
    squeezed = await fetch(server, "/app.js", "gzip")
    assert squeezed.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(squeezed.body) == plain.body
    assert len(squeezed.body) * 2 < len(plain.body)


async def test_the_page_s_files_are_compressed_once_on_a_thread_and_again_once_changed(
    start_server, settings, tmp_path, monkeypatch
):
    compressed_on: list[str] = []
    compress = page_files._compress

    def spy(path: str) -> bytes:
        compressed_on.append(threading.current_thread().name)
        return compress(path)

    monkeypatch.setattr(page_files, "_compress", spy)
    page = tmp_path / "page"
    page.mkdir()
    (page / "index.html").write_text("<!doctype html>" + "<p>page</p>" * 200)
    bundle = page / "app.js"
    bundle.write_text(PROSE)
    (page / "picture.png").write_bytes(bytes(range(256)) * 20)
    (tmp_path / "secret.txt").write_text(PROSE)
    server = await start_server(settings.replace(static_dir=str(page)))

    plain = await fetch(server, "/app.js", None)
    first, second = [await fetch(server, "/app.js", "gzip") for _ in range(2)]
    for answer in (first, second):
        assert answer.headers["Content-Encoding"] == "gzip"
        assert answer.headers["Vary"] == "Accept-Encoding"
        assert gzip.decompress(answer.body) == plain.body == PROSE.encode()
    assert len(compressed_on) == 1 and compressed_on[0] != threading.current_thread().name
    # Another representation, another tag; the compressed one is revalidated as such.
    assert first.headers["Etag"] == second.headers["Etag"] != plain.headers["Etag"]
    unchanged = await revalidated(server, "/app.js", first.headers["Etag"])
    assert unchanged.code == 304
    # A range is a range of what is sent: the compressed bytes.
    part = await fetch(server, "/app.js", "gzip", headers={"Range": "bytes=10-109"})
    assert part.code == 206 and part.body == first.body[10:110]
    assert part.headers["Content-Range"] == f"bytes 10-109/{len(first.body)}"

    # The page's index, by its directory's path; no image and no file outside.
    index = await fetch(server, "/", "gzip")
    assert gzip.decompress(index.body).startswith(b"<!doctype html>")
    picture = await fetch(server, "/picture.png", "gzip")
    assert "Content-Encoding" not in picture.headers
    assert picture.body == bytes(range(256)) * 20
    for path in ("/../secret.txt", "/%2e%2e/secret.txt"):
        outside = await fetch(server, path, "gzip", raise_error=False)
        assert outside.code in (403, 404), path
    assert len(compressed_on) == 2  # app.js, index.html

    # The file changed: compressed anew, once.
    changed = PROSE.replace("fox", "cat")
    bundle.write_text(changed)
    os.utime(bundle, ns=(time.time_ns(), time.time_ns() + 1_000_000_000))
    for _ in range(2):
        again = await fetch(server, "/app.js", "gzip")
        assert gzip.decompress(again.body) == changed.encode()
    assert len(compressed_on) == 3


@pytest.fixture
def compressions(monkeypatch) -> list[str]:
    """The paths page_files compressed during the test, from no copy kept before it."""
    compressed: list[str] = []
    compress = page_files._compress

    def spy(path: str) -> bytes:
        compressed.append(path)
        return compress(path)

    monkeypatch.setattr(page_files, "_compress", spy)
    monkeypatch.setattr(page_files.PageFiles, "_compressed", OrderedDict())
    monkeypatch.setattr(page_files.PageFiles, "_kept_bytes", 0)
    return compressed


def a_page(tmp_path: Path) -> Path:
    page = tmp_path / "page"
    page.mkdir()
    (page / "index.html").write_text("<!doctype html>" + "<p>page</p>" * 200)
    (page / "app.js").write_text(PROSE)
    return page


async def test_a_page_file_asked_for_by_many_at_once_is_compressed_once(
    start_server, settings, tmp_path, compressions
):
    server = await start_server(settings.replace(static_dir=str(a_page(tmp_path))))
    answers = await asyncio.gather(*(fetch(server, "/app.js", "gzip") for _ in range(8)))
    assert {gzip.decompress(answer.body) for answer in answers} == {PROSE.encode()}
    assert len(compressions) == 1


async def test_symlinks_give_a_page_file_one_copy_and_lead_to_nothing_read_outside(
    start_server, settings, tmp_path, compressions
):
    page = a_page(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(PROSE)
    (page / "again").symlink_to(".")  # endless paths to every file of the page
    (page / "secret.txt").symlink_to(outside / "secret.txt")
    (page / "out").symlink_to(outside)
    server = await start_server(settings.replace(static_dir=str(page)))

    for depth in range(6):
        answer = await fetch(server, "/again" * depth + "/app.js", "gzip")
        assert gzip.decompress(answer.body) == PROSE.encode()
    assert len(compressions) == 1
    for path in ("/secret.txt", "/out/secret.txt"):
        refused = await fetch(server, path, "gzip", raise_error=False)
        assert refused.code == 403, path
    # A directory without its slash is redirected, its index not read for it.
    moved = await fetch(server, "/again", "gzip", follow_redirects=False, raise_error=False)
    assert moved.code == 301
    assert compressions == [str(page / "app.js")]


async def test_the_compressed_copies_kept_are_bounded_in_bytes(
    start_server, settings, tmp_path, compressions, monkeypatch
):
    page = a_page(tmp_path)
    for name in ("one", "two", "three"):
        (page / f"{name}.js").write_text(name + PROSE)
    server = await start_server(settings.replace(static_dir=str(page)))
    one = await fetch(server, "/one.js", "gzip")
    monkeypatch.setattr(page_files, "MAX_KEPT_BYTES", 2 * len(one.body) + 100)
    for name in ("two", "three", "one"):
        answer = await fetch(server, f"/{name}.js", "gzip")
        assert gzip.decompress(answer.body) == (name + PROSE).encode()
    kept = page_files.PageFiles._compressed.values()
    assert len(kept) == 2 and sum(len(copy.body) for copy in kept) <= 2 * len(one.body) + 100
    assert len(compressions) == 4  # one.js again: the oldest, dropped for three.js


async def test_a_changed_page_file_gets_a_new_tag_not_a_304_for_the_old_one(
    start_server, settings, tmp_path, compressions
):
    page = a_page(tmp_path)
    server = await start_server(settings.replace(static_dir=str(page)))
    before = await fetch(server, "/app.js", "gzip")
    changed = PROSE.replace("fox", "cat")
    (page / "app.js").write_text(changed)
    os.utime(page / "app.js", ns=(time.time_ns(), time.time_ns() + 1_000_000_000))
    # A browser that kept the file before revalidates it with the tag it got.
    after = await revalidated(server, "/app.js", before.headers["Etag"])
    assert after.code == 200 and gzip.decompress(after.body) == changed.encode()
    assert after.headers["Etag"] != before.headers["Etag"]
    unchanged = await revalidated(server, "/app.js", after.headers["Etag"])
    assert unchanged.code == 304


async def test_an_unsatisfiable_range_of_a_compressed_file_says_no_encoding(
    start_server, settings, tmp_path, compressions
):
    server = await start_server(settings.replace(static_dir=str(a_page(tmp_path))))
    for bad in ("bytes=999999-", "bytes=-0"):
        refused = await fetch(server, "/app.js", "gzip", headers={"Range": bad}, raise_error=False)
        assert refused.code == 416 and refused.body == b""
        assert "Content-Encoding" not in refused.headers, bad


async def test_the_page_embedded_without_collab_s_transform_still_says_it_varies(
    settings, tmp_path, compressions
):
    collab = Collab(settings.replace(static_dir=str(a_page(tmp_path))), page=True)
    application = tornado.web.Application(collab.handlers())  # no transform
    await collab.start()
    listening = application.listen(0, "127.0.0.1")
    try:
        port = next(iter(listening._sockets.values())).getsockname()[1]
        target = SimpleNamespace(port=port)
        squeezed = await fetch(target, "/collab/app.js", "gzip")
        plain = await fetch(target, "/collab/app.js", None)
        assert squeezed.headers["Content-Encoding"] == "gzip"
        assert "Content-Encoding" not in plain.headers
        for answer in (squeezed, plain):
            assert answer.headers["Vary"] == "Accept-Encoding"
    finally:
        listening.stop()
        await collab.stop()


async def test_event_streams_are_never_compressed(server):
    await a_document(server, "streamed", PROSE)
    chunks: list[bytes] = []
    headers: dict[str, str] = {}
    got_event = asyncio.Event()

    def on_chunk(chunk: bytes) -> None:
        chunks.append(chunk)
        if b"\nevent: update" in b"".join(chunks) or b"data:" in b"".join(chunks):
            got_event.set()

    def on_header(line: str) -> None:
        if ":" in line:
            key, value = line.split(":", 1)
            headers[key.strip().lower()] = value.strip()

    request = HTTPRequest(
        f"http://127.0.0.1:{server.port}/api/documents/streamed/events?after=0",
        headers={"Accept-Encoding": "gzip"},
        decompress_response=False,
        streaming_callback=on_chunk,
        header_callback=on_header,
        request_timeout=30,
    )
    fetching = asyncio.ensure_future(AsyncHTTPClient().fetch(request, raise_error=False))
    try:
        await asyncio.wait_for(got_event.wait(), 10)
        assert "content-encoding" not in headers
        assert b"id: 1" in b"".join(chunks)
    finally:
        fetching.cancel()


@pytest.fixture
def plain_settings(settings: Settings) -> Settings:
    return settings.replace(http_compression="off")


async def test_http_compression_off_sends_everything_plain(start_server, plain_settings):
    server = await start_server(plain_settings)
    await a_document(server, "big", PROSE)
    for path in ("/api/documents/big", "/app.js"):
        answer = await fetch(server, path, "gzip")
        assert "Content-Encoding" not in answer.headers, path


def test_compression_settings_take_only_known_values(settings: Settings):
    with pytest.raises(SettingsError, match="http_compression"):
        settings.replace(http_compression="brotli")
    with pytest.raises(SettingsError, match="websocket_compression"):
        settings.replace(websocket_compression="yes")
    with pytest.raises(SettingsError, match="listen_backlog"):
        settings.replace(listen_backlog=0)


async def deflate_socket(server: Any, path: str) -> Any:
    return await websocket_connect(f"ws://127.0.0.1:{server.port}{path}", compression_options={})


async def test_websockets_decline_deflate_by_default(server):
    socket = await deflate_socket(server, "/ws")
    try:
        assert "Sec-WebSocket-Extensions" not in socket.headers
    finally:
        socket.close()


async def test_websocket_deflate_is_negotiated_on_both_endpoints_and_carries_edits(
    start_server, settings
):
    server = await start_server(settings.replace(websocket_compression="deflate"))
    native = await deflate_socket(server, "/ws")
    yjs = await deflate_socket(server, "/yjs/squeezed")
    try:
        for socket in (native, yjs):
            assert "permessage-deflate" in socket.headers["Sec-WebSocket-Extensions"]
        writer, reader = RawPeer(native), await RawPeer.connect(f"ws://127.0.0.1:{server.port}/ws")
        for peer in (writer, reader):
            assert (await peer.hello(version=PROTOCOL_VERSION))["type"] == "welcome"
            await peer.subscribe("squeezed")
        writer.send({"type": "update", "doc": "squeezed", "ref": 1, "update": text_update(PROSE)})
        ack = await writer.recv_type("ack")
        relayed = await reader.recv_type("update")
        assert relayed["seq"] == ack["seq"]
        assert text_of(relayed["update"]) == PROSE
        reader.close()
    finally:
        native.close()
        yjs.close()


async def test_a_deflate_socket_closed_for_flooding_leaves_the_server_once_it_is_gone(
    start_server, settings
):
    # Tornado's own reader (it inflates) stops for good on a flood, as collab's does:
    # the socket's end, 5 s after its close frame at the latest, must reach the handler.
    server = await start_server(
        settings.replace(
            websocket_compression="deflate", rate_messages_per_s=50, rate_messages_burst=100
        )
    )
    flood = RawPeer(await deflate_socket(server, "/ws"))
    assert (await flood.hello(version=PROTOCOL_VERSION))["type"] == "welcome"
    for i in range(500):
        flood.send({"type": "ping", "id": i})
    assert (await flood.closed())[0] == CloseCode.POLICY_VIOLATION
    await wait_until(lambda: not server.sockets)
    flood.close()
