"""Named versions ("Sent to legal"): given and taken away over the HTTP API with
write access, listed with read access, in the WebSocket history pages, restorable
by name, and kept by snapshot thinning and by retention."""

from __future__ import annotations

import json

import pycrdt
import pytest
from tornado.httpclient import AsyncHTTPClient

from collab.auth import Authenticator
from collab.core.thinning import snapshots_to_drop
from tests.helpers import Clock
from tests.test_documents_api import SECRET, append, fails, get_json, post_json, url, written
from tests.test_retention import PAST_RETENTION_S, RETENTION_S, old_history


async def put_json(server, path: str, body: object, **kwargs: object) -> dict:
    response = await AsyncHTTPClient().fetch(
        url(server, path), method="PUT", body=json.dumps(body), **kwargs
    )
    return json.loads(response.body)


async def test_a_version_is_named_renamed_listed_and_unnamed(server, connect):
    await written(connect, "memo", append("one"), append(" two"), append(" three"))

    named = await put_json(server, "/api/documents/memo/versions/2/name", {"name": "Draft"})
    assert (named["doc"], named["seq"], named["name"], named["user"]) == ("memo", 2, "Draft", None)
    await post_json(server, "/api/documents/memo/versions/1/name", {"name": "  First\n cut "})
    await put_json(server, "/api/documents/memo/versions/2/name", {"name": "Sent to legal"})

    listed = await get_json(server, "/api/documents/memo/names")
    assert [(n["seq"], n["name"]) for n in listed["names"]] == [
        (1, "First cut"),
        (2, "Sent to legal"),
    ]
    assert all(n["time"] and n["time_s"] > 0 for n in listed["names"])
    one = await get_json(server, "/api/documents/memo/versions/2/name")
    assert one["name"] == "Sent to legal"

    response = await AsyncHTTPClient().fetch(
        url(server, "/api/documents/memo/versions/1/name"), method="DELETE"
    )
    assert json.loads(response.body) == {"doc": "memo", "seq": 1, "deleted": True}
    assert [n["seq"] for n in (await get_json(server, "/api/documents/memo/names"))["names"]] == [2]
    await fails(server, "/api/documents/memo/versions/1/name", 404)
    await fails(server, "/api/documents/memo/versions/1/name", 404, method="DELETE")


@pytest.mark.parametrize(
    ("seq", "body", "says"),
    [
        ("9", {"name": "Later"}, "past the document's latest version"),
        ("1", {"name": ""}, "must not be empty"),
        ("1", {"name": "x" * 101}, "at most 100 characters"),
        ("1", {"name": 7}, "must be a string"),
        ("1", {"title": "Draft"}, 'the body must be JSON: {"name": "..."}'),
        ("one", {"name": "Draft"}, "must be an integer"),
    ],
)
async def test_bad_names_and_versions_are_refused_with_reasons(server, connect, seq, body, says):
    await written(connect, "memo", append("one"))
    error = await fails(
        server, f"/api/documents/memo/versions/{seq}/name", 400, method="PUT", body=json.dumps(body)
    )
    assert says in error


async def test_naming_needs_write_access_and_reading_names_read_access(
    settings, start_server, connect
):
    secured = await start_server(settings.replace(auth_secret=SECRET))
    issue = Authenticator(SECRET).issue
    writer = await connect(secured, token=issue("w", {"*": "write"}))
    remote = await writer.subscribe("memo")
    append("x")(remote.doc)
    await remote.flushed()
    reader = {"Authorization": f"Bearer {issue('r', {'*': 'read'})}"}
    editor = {"Authorization": f"Bearer {issue('ann', {'*': 'write'})}"}
    path = "/api/documents/memo/versions/1/name"

    assert "read-only" in await fails(
        secured, path, 403, method="PUT", body='{"name": "A"}', headers=reader
    )
    named = await put_json(secured, path, {"name": "A"}, headers=editor)
    assert named["user"] == "ann"
    assert "read-only" in await fails(secured, path, 403, method="DELETE", headers=reader)
    listed = await get_json(secured, "/api/documents/memo/names", headers=reader)
    assert [n["name"] for n in listed["names"]] == ["A"]
    await fails(secured, "/api/documents/memo/names", 401)


async def test_a_document_has_at_most_max_version_names(settings, start_server, connect):
    server = await start_server(settings.replace(max_version_names=2))
    await written(connect, "memo", append("a"), append("b"), append("c"), target=server)
    for seq in (1, 2):
        await put_json(server, f"/api/documents/memo/versions/{seq}/name", {"name": f"v{seq}"})
    await put_json(server, "/api/documents/memo/versions/2/name", {"name": "renamed"})  # no more
    error = await fails(
        server, "/api/documents/memo/versions/3/name", 400, method="PUT", body='{"name": "v3"}'
    )
    assert "take a name away first" in error


async def test_a_named_version_is_restored_by_its_name(server, connect):
    _, remote = await written(connect, "memo", append("kept"), append(" dropped"))
    await put_json(server, "/api/documents/memo/versions/1/name", {"name": "Sent to legal"})

    restored = await post_json(server, "/api/documents/memo/restore", {"name": "Sent to legal"})

    assert (restored["restored_seq"], restored["changed"]) == (1, True)
    await remote.wait_for(lambda: str(remote.doc.get("text", type=pycrdt.Text)) == "kept")
    error = await fails(
        server, "/api/documents/memo/restore", 404, method="POST", body='{"name": "Nothing"}'
    )
    assert "is named" in error


async def test_history_pages_over_the_websocket_carry_the_names_of_their_versions(server, connect):
    client, _ = await written(connect, "memo", *(append(str(i)) for i in range(5)))
    await put_json(server, "/api/documents/memo/versions/2/name", {"name": "Two"})
    await put_json(server, "/api/documents/memo/versions/4/name", {"name": "Four"})

    first = await client.history("memo", limit=3)
    rest = await client.history("memo", after=first.next_after)
    plain = await client.history("memo", after=4)

    assert [(n["seq"], n["name"]) for n in first.names] == [(2, "Two")]
    assert [(n["seq"], n["name"]) for n in rest.names] == [(4, "Four")]
    assert plain.names is None


def test_thinning_keeps_the_snapshot_a_named_version_loads_from():
    seqs = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    plain = snapshots_to_drop(seqs, keep_recent=2)
    assert 30 in plain  # thinned away without a name
    assert 30 not in snapshots_to_drop(seqs, keep_recent=2, pinned=[35])
    assert set(snapshots_to_drop(seqs, keep_recent=2, pinned=[35])) == set(plain) - {30}
    assert snapshots_to_drop(seqs, keep_recent=2, pinned=[5]) == plain  # none before it


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def test_retention_keeps_the_history_of_a_named_version(
    settings, start_server, connect, clock
):
    server = await start_server(
        settings.replace(snapshot_every_updates=10**6, history_retention_s=RETENTION_S),
        clock=clock,
    )
    client = await connect(server)
    remote = await client.subscribe("kept")
    text = remote.doc.get("text", type=pycrdt.Text)
    await old_history(server, remote, 12)  # snapshots at 5 and 10
    await put_json(server, "/api/documents/kept/versions/7/name", {"name": "Seven"})
    clock.advance(PAST_RETENTION_S)
    text.insert(len(text), "new")
    await remote.flushed()

    assert await server.rooms.drop_old_history() == 1

    # Dropped down to the snapshot at 5 (before the named version), not at 10.
    assert (await get_json(server, "/api/documents/kept/history?limit=1"))["retained_from"] == 5
    version = await get_json(server, "/api/documents/kept/versions/7")
    assert version["content"]["text"] == "0,1,2,3,4,5,6,"
    restored = await post_json(server, "/api/documents/kept/restore", {"name": "Seven"})
    assert restored["changed"]
    # Without the name, the next pass drops the rest.
    await AsyncHTTPClient().fetch(
        url(server, "/api/documents/kept/versions/7/name"), method="DELETE"
    )
    assert await server.rooms.drop_old_history() == 1
    assert (await get_json(server, "/api/documents/kept/history?limit=1"))["retained_from"] == 10
