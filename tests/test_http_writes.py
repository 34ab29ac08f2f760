"""Writes over HTTP (``POST /api/documents/DOC/updates``): a Yjs update, JSON
edits and ProseMirror JSON, applied through the room as a peer's update is,
answered with its seq once stored and sent to every peer; grants, bad input,
rate limits and idempotency keys; the Python client and ``collab write``."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pycrdt
import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPResponse

from collab.auth import Authenticator
from collab.client import HttpWriter, WriteError
from tests.cli import collab_in_process
from tests.helpers import text_update
from tests.test_long_items import long_values

SECRET = "s3cret-s3cret-s3cret-s3cret-s3cret"
ROOT = Path(__file__).resolve().parent.parent

ARTICLE = {
    "type": "doc",
    "content": [
        {"type": "heading", "attrs": {"level": 2}, "content": [{"type": "text", "text": "Plan"}]},
        {
            "type": "paragraph",
            "content": [
                {"type": "text", "text": "Ship "},
                {"type": "text", "text": "bold", "marks": [{"type": "bold"}]},
                {
                    "type": "text",
                    "text": " ideas ✓",
                    "marks": [{"type": "link", "attrs": {"href": "https://example.com"}}],
                },
            ],
        },
        {
            "type": "bulletList",
            "content": [
                {
                    "type": "listItem",
                    "content": [
                        {"type": "paragraph", "content": [{"type": "text", "text": "one"}]}
                    ],
                },
                {
                    "type": "listItem",
                    "content": [
                        {"type": "paragraph", "content": [{"type": "text", "text": "two"}]}
                    ],
                },
            ],
        },
    ],
}


def url(server: Any, path: str) -> str:
    return f"http://127.0.0.1:{server.port}{path}"


async def post(
    server: Any,
    doc: str,
    body: bytes | Any,
    *,
    query: str = "",
    token: str | None = None,
    key: str | None = None,
) -> HTTPResponse:
    """POST a write; ``body`` bytes go as a Yjs update, anything else as JSON.
    Raises HTTPClientError on an error status."""
    binary = isinstance(body, bytes)
    headers = {"Content-Type": "application/octet-stream" if binary else "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if key:
        headers["Idempotency-Key"] = key
    return await AsyncHTTPClient().fetch(
        url(server, f"/api/documents/{doc}/updates{query}"),
        method="POST",
        body=body if binary else json.dumps(body).encode(),
        headers=headers,
    )


async def refused(status: int, write: Any) -> dict[str, Any]:
    with pytest.raises(HTTPClientError) as failed:
        await write
    assert failed.value.code == status, failed.value.response and failed.value.response.body
    assert failed.value.response is not None
    return json.loads(failed.value.response.body)


async def get_json(server: Any, path: str, token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = await AsyncHTTPClient().fetch(url(server, path), headers=headers)
    return json.loads(response.body)


async def state_of(server: Any, doc: str) -> tuple[int, bytes]:
    response = await AsyncHTTPClient().fetch(url(server, f"/api/documents/{doc}/state"))
    return int(response.headers["X-Collab-Seq"]), response.body


async def test_an_update_sent_over_http_reaches_a_connected_peer_with_the_seq_it_was_answered(
    server, raw
):
    peer = await raw()
    await peer.hello()
    await peer.subscribe("bot")
    first = text_update("from a person")
    editor = pycrdt.Doc()
    editor.apply_update(first)
    await post(server, "bot", first)
    before = editor.get_state()
    editor.get("text", type=pycrdt.Text).insert(0, "bot: ")
    update = editor.get_update(before)

    answer = json.loads((await post(server, "bot", update)).body)

    assert answer["doc"] == "bot"
    received = [await peer.recv_type("update"), await peer.recv_type("update")]
    assert [m["seq"] for m in received] == [1, answer["seq"]] == [1, 2]
    seen = pycrdt.Doc()
    for message in received:
        seen.apply_update(message["update"])
    assert str(seen.get("text", type=pycrdt.Text)) == "bot: from a person"
    history = await get_json(server, "/api/documents/bot/history")
    assert [u["seq"] for u in history["updates"]] == [1, 2]
    content = await get_json(server, "/api/documents/bot")
    assert content["content"]["text"] == "bot: from a person"


async def test_json_edits_change_text_maps_and_arrays_as_one_update(server):
    first = await post(
        server,
        "notes",
        {
            "edits": [
                {"op": "text.insert", "root": "title", "text": "héllo wörld"},
                {
                    "op": "text.format",
                    "root": "title",
                    "index": 0,
                    "length": 5,
                    "attributes": {"bold": True},
                },
                {"op": "map.set", "root": "meta", "key": "status", "value": "draft"},
                {"op": "map.set", "root": "meta", "key": "tags", "value": ["a", {"b": 1}]},
                {"op": "array.insert", "root": "items", "values": ["x", "y", "z"]},
            ]
        },
    )
    second = await post(
        server,
        "notes",
        {
            "edits": [
                {
                    "op": "text.replace",
                    "root": "title",
                    "index": 6,
                    "length": 5,
                    "text": "😀 there",
                    "attributes": {"italic": True},
                },
                {"op": "text.delete", "root": "title", "index": 0, "length": 1},
                {"op": "text.insert", "root": "title", "index": 0, "text": "H"},
                {"op": "map.delete", "root": "meta", "key": "status"},
                {"op": "array.delete", "root": "items", "index": 1, "length": 1},
                {"op": "array.insert", "root": "items", "index": 0, "values": [1]},
            ]
        },
    )

    assert [json.loads(r.body)["seq"] for r in (first, second)] == [1, 2]
    _, state = await state_of(server, "notes")
    doc = pycrdt.Doc()
    doc.apply_update(state)
    assert doc.get("title", type=pycrdt.Text).diff() == [
        ("H", None),
        ("éllo", {"bold": True}),
        (" ", None),
        ("😀 there", {"italic": True}),
    ]
    assert doc.get("meta", type=pycrdt.Map).to_py() == {"tags": ["a", {"b": 1.0}]}
    assert doc.get("items", type=pycrdt.Array).to_py() == [1.0, "x", "z"]


async def test_prosemirror_json_written_over_http_reads_back_equal(server):
    await post(server, "article", ARTICLE, query="?format=prosemirror")

    assert await get_json(server, "/api/documents/article?format=prosemirror") == ARTICLE
    # The XML a y-prosemirror editor binds to, as y-prosemirror writes it.
    content = await get_json(server, "/api/documents/article")
    assert content["content"]["default"] == (
        '<heading level="2">Plan</heading><paragraph>Ship <bold>bold</bold>'
        '<link href="https://example.com"> ideas ✓</link></paragraph>'
        "<bulletList><listItem><paragraph>one</paragraph></listItem>"
        "<listItem><paragraph>two</paragraph></listItem></bulletList>"
    )


async def test_a_range_of_top_level_nodes_is_replaced_with_prosemirror_json(server):
    await post(server, "ranges", ARTICLE, query="?format=prosemirror")
    note = {"type": "paragraph", "content": [{"type": "text", "text": "inserted"}]}

    await post(
        server,
        "ranges",
        {"edits": [{"op": "prosemirror.replace", "doc": [note], "from": 1, "to": 2}]},
    )

    read = await get_json(server, "/api/documents/ranges?format=prosemirror&root=default")
    assert read["content"] == [ARTICLE["content"][0], note, ARTICLE["content"][2]]


async def test_a_read_only_token_cannot_write_and_the_document_stays_unmade(settings, start_server):
    secured = await start_server(settings.replace(auth_secret=SECRET))
    reader = Authenticator(SECRET).issue("reader", {"*": "read"})

    body = await refused(403, post(secured, "guarded", text_update("no"), token=reader))
    assert "read-only" in body["error"]
    await refused(401, post(secured, "guarded", text_update("no")))
    assert await secured.store.get_document("guarded") is None


async def test_the_token_s_user_is_the_author_and_open_servers_take_a_name(
    settings, start_server, server
):
    secured = await start_server(settings.replace(auth_secret=SECRET, port=0))
    writer = Authenticator(SECRET).issue("agent-7", {"docs/*": "write"})
    await post(secured, "docs%2Fa", text_update("x"), token=writer)
    await refused(400, post(secured, "docs%2Fa", text_update("y"), token=writer, query="?author=x"))
    await post(server, "open", text_update("x"), query="?author=importer")

    secured_history = await get_json(secured, "/api/documents/docs%2Fa/history", writer)
    open_history = await get_json(server, "/api/documents/open/history")
    assert secured_history["updates"][0]["origin"]["user"] == "agent-7"
    assert open_history["updates"][0]["origin"]["user"] == "importer"
    assert open_history["updates"][0]["origin"]["client"].startswith("api:write:")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\x01\x01\x02", "the update was refused"),
        ({"edits": [{"op": "text.insert", "root": "text", "index": 99, "text": "!"}]}, "past"),
        ({"edits": [{"op": "map.set", "root": "text", "key": "k", "value": 1}]}, "is a text"),
        ({"edits": [{"op": "text.explode", "root": "text"}]}, "op must be one of"),
        (
            {"edits": [{"op": "prosemirror.replace", "doc": {"type": "doc", "content": [1]}}]},
            "a node is an object",
        ),
        ({"nothing": []}, '{"edits"'),
    ],
)
async def test_a_malformed_write_is_refused_and_leaves_the_document_as_it_was(
    server, body, message
):
    await post(server, "kept", text_update("intact"))
    before = await state_of(server, "kept")

    refusal = await refused(422, post(server, "kept", body))

    assert message in refusal["error"]
    assert await state_of(server, "kept") == before


async def test_a_body_that_is_not_json_or_an_update_is_refused_unread(server):
    with pytest.raises(HTTPClientError) as failed:
        await AsyncHTTPClient().fetch(
            url(server, "/api/documents/t/updates"),
            method="POST",
            body="hello",
            headers={"Content-Type": "text/plain"},
        )
    assert failed.value.code == 415
    too_large = server.settings.max_write_bytes + 1
    with pytest.raises(HTTPClientError) as failed:
        await AsyncHTTPClient().fetch(
            url(server, "/api/documents/t/updates"),
            method="POST",
            body=b"\0" * too_large,
            headers={"Content-Type": "application/octet-stream"},
        )
    assert failed.value.code == 413


async def test_the_same_idempotency_key_twice_makes_one_update_and_the_same_answer(server):
    edit = {"edits": [{"op": "text.insert", "root": "text", "text": "once "}]}
    first = await post(server, "idem", edit, key="k-1")
    again = await post(server, "idem", edit, key="k-1")
    together = await asyncio.gather(
        post(
            server,
            "idem",
            {"edits": [{"op": "text.insert", "root": "text", "text": "b"}]},
            key="k-2",
        ),
        post(
            server,
            "idem",
            {"edits": [{"op": "text.insert", "root": "text", "text": "b"}]},
            key="k-2",
        ),
    )

    assert first.body == again.body
    assert again.headers["Idempotent-Replayed"] == "true"
    assert together[0].body == together[1].body
    history = await get_json(server, "/api/documents/idem/history")
    assert len(history["updates"]) == 2
    assert (await get_json(server, "/api/documents/idem"))["content"]["text"] == "once b"
    other = await refused(
        422,
        post(
            server,
            "idem",
            {"edits": [{"op": "text.insert", "root": "text", "text": "x"}]},
            key="k-1",
        ),
    )
    assert "another request" in other["error"]


async def test_writes_past_the_rate_limit_get_429_with_retry_after(settings, start_server):
    limited = await start_server(settings.replace(rate_writes_per_s=0.01, rate_writes_burst=2))
    for _ in range(2):
        await post(limited, "busy", text_update("x"))

    with pytest.raises(HTTPClientError) as failed:
        await post(limited, "busy", text_update("y"))

    assert failed.value.code == 429
    assert failed.value.response is not None
    assert 1 <= int(failed.value.response.headers["Retry-After"]) <= 60
    assert "writes a second" in json.loads(failed.value.response.body)["error"]


async def test_the_python_client_writes_edits_and_prosemirror_and_reads_it_back(
    settings, start_server
):
    secured = await start_server(settings.replace(auth_secret=SECRET))
    token = Authenticator(SECRET).issue("bot", {"*": "write"})
    async with HttpWriter(url(secured, ""), token) as writer:
        seq = await writer.write_prosemirror("page", ARTICLE)
        assert await writer.read_prosemirror("page") == ARTICLE
        next_seq = await writer.edit(
            "page", [{"op": "map.set", "root": "meta", "key": "by", "value": "bot"}], key="once"
        )
        assert (
            await writer.edit(
                "page", [{"op": "map.set", "root": "meta", "key": "by", "value": "bot"}], key="once"
            )
            == next_seq
        )
        update_seq = await writer.write_update("page", text_update("raw"))
        assert (seq, next_seq, update_seq) == (1, 2, 3)
        with pytest.raises(WriteError) as failed:
            await writer.edit("page", [{"op": "text.insert", "root": "meta", "text": "x"}])
        assert failed.value.status == 422


async def test_collab_write_sends_a_file_of_prosemirror_json_edits_or_an_update(
    settings, start_server, tmp_path
):
    secured = await start_server(settings.replace(auth_secret=SECRET))
    token = Authenticator(SECRET).issue("cli", {"*": "write"})
    (tmp_path / "article.json").write_text(json.dumps(ARTICLE))
    (tmp_path / "edits.json").write_text(
        json.dumps({"edits": [{"op": "text.insert", "root": "text", "text": "cli"}]})
    )
    (tmp_path / "update.bin").write_bytes(text_update("raw"))

    async def write(*args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
        """``collab write``: from a file in-process, from stdin as ``python -m collab``
        in a process (tests/cli.py), whose stdin it is."""
        args = (*args, "--server", url(secured, ""), "--token", token)
        if stdin is None:
            return await collab_in_process("write", *args)
        command = [sys.executable, "-m", "collab", "write", *args]
        done = await asyncio.to_thread(
            subprocess.run, command, input=stdin, capture_output=True, cwd=ROOT, timeout=60
        )
        return done.returncode, done.stdout.decode(), done.stderr.decode()

    pm = await write("cli-doc", str(tmp_path / "article.json"))
    edits = await write("cli-doc", "-", stdin=(tmp_path / "edits.json").read_bytes())
    update = await write("other", str(tmp_path / "update.bin"))
    bad = await write("cli-doc", "-", stdin=b'{"edits": [{"op": "nope"}]}')

    assert [json.loads(out)["seq"] for _, out, _ in (pm, edits, update)] == [1, 2, 1], (
        pm[2],
        edits[2],
        update[2],
    )
    assert bad[0] == 1 and "422" in bad[2]
    async with HttpWriter(url(secured, ""), token) as reader:
        assert await reader.read_prosemirror("cli-doc") == ARTICLE


async def test_bytes_past_the_rate_are_refused_declared_or_chunked(settings, start_server):
    limited = await start_server(
        settings.replace(
            max_frame_bytes=1024, rate_bytes_per_s=1, rate_bytes_burst=1024, write_queue_bytes=4096
        )
    )
    large = text_update("x" * 1500)
    await refused(429, post(limited, "bytes", large))  # declared: refused unread

    async def chunks(write: Any) -> None:
        for start in range(0, len(large), 500):
            await write(large[start : start + 500])

    with pytest.raises(HTTPClientError) as failed:
        await AsyncHTTPClient().fetch(
            url(limited, "/api/documents/bytes/updates"),
            method="POST",
            body_producer=chunks,
            headers={"Content-Type": "application/octet-stream"},
        )
    assert failed.value.code == 429
    assert await limited.store.get_document("bytes") is None


async def test_an_emptied_text_stays_a_text_through_restores_and_writes(server):
    """A root whose items are all deleted no longer shows its kind in the document's
    state: a restore to the version where it was empty, and a text edit of it, still
    treat it as the text it is (not as an array)."""
    doc = pycrdt.Doc()
    text = doc.get("text", type=pycrdt.Text)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    text += "first words"
    del text[0 : len(text)]
    text += "héllo wörld\nand more"
    base = f"http://127.0.0.1:{server.port}/api/documents/emptied"
    for update in updates:
        await AsyncHTTPClient().fetch(
            f"{base}/updates?author=ann",
            method="POST",
            body=update,
            headers={"Content-Type": "application/octet-stream"},
        )
    restored = await AsyncHTTPClient().fetch(
        f"{base}/restore", method="POST", body=json.dumps({"seq": 2})
    )
    assert json.loads(restored.body)["seq"] == 4
    state = await AsyncHTTPClient().fetch(
        f"{base}/state", headers={"Accept": "application/octet-stream"}
    )
    now = pycrdt.Doc()
    now.apply_update(state.body)
    assert str(now.get("text", type=pycrdt.Text)) == ""
    edit = {"edits": [{"op": "text.insert", "root": "text", "index": 0, "text": "again"}]}
    await AsyncHTTPClient().fetch(
        f"{base}/updates?author=ann",
        method="POST",
        body=json.dumps(edit),
        headers={"Content-Type": "application/json"},
    )
    assert json.loads((await AsyncHTTPClient().fetch(base)).body)["content"] == {"text": "again"}


async def test_values_a_document_cannot_hold_and_odd_ranges_are_refused_not_hung(server):
    base = f"http://127.0.0.1:{server.port}/api/documents/hostile"
    json_type = {"Content-Type": "application/json"}
    for edit in (
        {"op": "map.set", "root": "m", "key": "k", "value": 99999999999999999999999},
        {"op": "array.insert", "root": "a", "index": 0, "values": [-(2**64)]},
        {"op": "text.insert", "root": "t", "index": 0, "text": "x", "attributes": {"n": 2**70}},
    ):
        answer = await AsyncHTTPClient().fetch(
            f"{base}/updates",
            method="POST",
            body=json.dumps({"edits": [edit]}),
            headers=json_type,
            raise_error=False,
            request_timeout=10,
        )
        assert answer.code == 422, (edit, answer.body)
    odd = await AsyncHTTPClient().fetch(
        f"{base}/updates?format=prosemirror&from=%C2%B2",
        method="POST",
        body=json.dumps({"type": "doc", "content": [{"type": "paragraph"}]}),
        headers=json_type,
        raise_error=False,
    )
    assert odd.code == 400
    assert (await AsyncHTTPClient().fetch(base, raise_error=False)).code == 404  # nothing made


async def test_json_edits_that_would_cut_a_long_list_too_often_are_refused_unmade(server):
    # Made in turn on a copy of the document, each deletion cut what was left of
    # the list: 1,000 in a list of 200,000 values took 1.1 s of pycrdt's time on a
    # thread, holding the GIL, for an update cheap to apply once made.
    await post(server, "long", long_values(200_000))
    before = await state_of(server, "long")
    deletions = [
        {"op": "array.delete", "root": "values", "index": 1 + i, "length": 1} for i in range(1000)
    ]

    refusal = await refused(422, post(server, "long", {"edits": deletions}))

    assert "max_cut_values" in refusal["error"]
    assert await state_of(server, "long") == before
    await post(server, "long", {"edits": deletions[:3]})
    assert (await state_of(server, "long"))[0] == before[0] + 1
