"""HTTP API: documents, history pages and the state at any seq."""

from __future__ import annotations

import json

import pycrdt
import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from collab.auth import Authenticator
from tests.helpers import text_of


async def get(server, path: str, **kwargs):
    return await AsyncHTTPClient().fetch(f"http://127.0.0.1:{server.port}{path}", **kwargs)


async def get_json(server, path: str, **kwargs):
    return json.loads((await get(server, path, **kwargs)).body)


async def write_words(connect, doc: str, words: list[str]) -> None:
    client = await connect(client_id="writer")
    remote = await client.subscribe(doc)
    text = remote.doc.get("text", type=pycrdt.Text)
    for word in words:
        text.insert(len(text), word)
    await remote.flushed()


async def test_history_lists_every_update_in_seq_order_with_its_origin(server, connect):
    await write_words(connect, "hist", ["a", "b", "c"])
    body = await get_json(server, "/api/documents/hist/history")
    assert [u["seq"] for u in body["updates"]] == [1, 2, 3]
    assert {u["origin"]["client"] for u in body["updates"]} == {"writer"}
    assert all(u["origin"]["instance"] == "test" and u["bytes"] > 0 for u in body["updates"])
    assert body["next_after"] is None


async def test_history_pages_with_after_and_limit(server, connect):
    await write_words(connect, "paged", [str(i) for i in range(7)])
    first = await get_json(server, "/api/documents/paged/history?limit=3")
    assert [u["seq"] for u in first["updates"]] == [1, 2, 3] and first["next_after"] == 3
    rest = await get_json(server, "/api/documents/paged/history?after=3&limit=10")
    assert [u["seq"] for u in rest["updates"]] == [4, 5, 6, 7] and rest["next_after"] is None


async def test_the_state_at_a_seq_replays_history_up_to_it(server, connect):
    await write_words(connect, "states", ["one ", "two ", "three"])
    for seq, expected in [(1, "one "), (2, "one two "), (3, "one two three")]:
        response = await get(server, f"/api/documents/states/state?seq={seq}")
        assert response.headers["X-Collab-Seq"] == str(seq)
        assert text_of(response.body) == expected
    latest = await get(server, "/api/documents/states/state")
    assert text_of(latest.body) == "one two three"


async def test_documents_are_listed_with_their_head_seq(server, connect):
    await write_words(connect, "listed", ["x", "y"])
    body = await get_json(server, "/api/documents")
    assert {"listed": 2}.items() <= {d["name"]: d["seq"] for d in body["documents"]}.items()


async def test_document_names_with_slashes_work_in_paths(server, connect):
    await write_words(connect, "team/notes", ["hi"])
    body = await get_json(server, "/api/documents/team%2Fnotes/history")
    assert body["doc"] == "team/notes" and len(body["updates"]) == 1


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/documents/never-written/history", 404),
        ("/api/documents/never-written/state", 404),
        ("/api/documents/x/history?limit=abc", 400),
        ("/api/documents/x/history?limit=0", 400),
        ("/api/documents/x/history?limit=1001", 400),
        ("/api/documents/x/state?seq=-1", 400),
    ],
)
async def test_bad_requests_get_clear_json_errors(server, path, status):
    with pytest.raises(HTTPClientError) as failed:
        await get(server, path)
    assert failed.value.code == status
    assert "error" in json.loads(failed.value.response.body)


async def test_with_auth_on_the_api_needs_a_token_and_filters_documents(
    settings, start_server, connect
):
    secret = "s3cret-s3cret-s3cret-s3cret-s3cret"
    secured = await start_server(settings.replace(auth_secret=secret))
    issue = Authenticator(secret).issue
    writer = await connect(secured, token=issue("w", {"*": "write"}))
    for name in ("public/a", "private/b"):
        remote = await writer.subscribe(name)
        remote.doc.get("text", type=pycrdt.Text).insert(0, name)
        await remote.flushed()

    with pytest.raises(HTTPClientError) as unauthorized:
        await get(secured, "/api/documents")
    assert unauthorized.value.code == 401

    reader = {"Authorization": f"Bearer {issue('r', {'public/*': 'read'})}"}
    listed = await get_json(secured, "/api/documents", headers=reader)
    assert [d["name"] for d in listed["documents"]] == ["public/a"]
    with pytest.raises(HTTPClientError) as forbidden:
        await get(secured, "/api/documents/private%2Fb/history", headers=reader)
    assert forbidden.value.code == 403


async def test_health_reports_the_server_state(server, connect):
    client = await connect()
    await client.subscribe("h")
    body = await get_json(server, "/healthz")
    assert body["status"] == "ok" and body["connections"] == 1 and body["rooms"] == 1


async def test_the_demo_page_is_served_at_the_root(server):
    page = await get(server, "/")
    assert b"<title>collab</title>" in page.body
