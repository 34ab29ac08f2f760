"""History over /ws: pages of a document's stored updates with seq and time,
cut to the client's frame limit, asked for one at a time, without subscribing.

In-process (tests/conftest.py, ``inprocess``): the rules of the protocol, no
socket; the first test runs over real sockets end to end."""

from __future__ import annotations

import pycrdt
import pytest

from collab.auth import Authenticator
from collab.client import ClientError

SECRET = "s3cret-s3cret-s3cret-s3cret-s3cret"

pytestmark = pytest.mark.inprocess


async def typed(connect, doc: str, count: int, *, size: int = 1) -> pycrdt.Doc:
    client = await connect()
    remote = await client.subscribe(doc)
    text = remote.doc.get("text", type=pycrdt.Text)
    for i in range(count):
        text.insert(len(text), f"{i % 10}" * size)
        if i % 50 == 49:
            await remote.flushed()
    await remote.flushed()
    return remote.doc


@pytest.mark.socket
async def test_pages_of_history_rebuild_the_document_seq_by_seq(server, connect):
    written = await typed(connect, "scrub", 120)
    reader = await connect()

    pages = [page async for page in reader.history_pages("scrub")]

    updates = [u for page in pages for u in page.updates]
    assert [u["seq"] for u in updates] == list(range(1, 121))
    assert all(page.head == 120 for page in pages)
    assert pages[-1].next_after is None
    stored = await server.store.read_updates("scrub")
    assert [(u["update"], u["time_s"], u["client"]) for u in updates] == [
        (r.data, r.time_s, r.author.client) for r in stored
    ]
    rebuilt = pycrdt.Doc()
    for update in updates:
        rebuilt.apply_update(update["update"])
    assert str(rebuilt.get("text", type=pycrdt.Text)) == str(written.get("text", type=pycrdt.Text))


async def test_a_page_holds_at_most_limit_updates_between_after_and_until(server, connect):
    await typed(connect, "ranged", 30)
    reader = await connect()

    page = await reader.history("ranged", after=10, until=20, limit=4)

    assert [u["seq"] for u in page.updates] == [11, 12, 13, 14]
    assert page.next_after == 14
    rest = await reader.history("ranged", after=14, until=20)
    assert [u["seq"] for u in rest.updates] == [15, 16, 17, 18, 19, 20]
    assert rest.next_after is None
    assert (await reader.history("ranged", after=30)).updates == []


async def test_pages_fit_the_frame_limit_the_client_announced(server, connect):
    await typed(connect, "big", 40, size=1000)
    reader = await connect(max_message_bytes=8 * 1024)

    pages = [page async for page in reader.history_pages("big")]

    assert len(pages) >= 5  # 40 updates of ~1 KB in frames of 8 KiB
    assert [u["seq"] for page in pages for u in page.updates] == list(range(1, 41))


async def test_unknown_and_forbidden_documents_are_refused_with_the_request_id(
    settings, start_server, connect
):
    secured = await start_server(settings.replace(auth_secret=SECRET))
    issue = Authenticator(SECRET).issue
    writer = await connect(secured, token=issue("w", {"*": "write"}))
    remote = await writer.subscribe("private/a")
    remote.doc.get("text", type=pycrdt.Text).insert(0, "secret")
    await remote.flushed()
    reader = await connect(secured, token=issue("r", {"public/*": "read"}))

    with pytest.raises(ClientError) as forbidden:
        await reader.history("private/a")
    assert forbidden.value.error is not None and forbidden.value.error.code == "forbidden"
    with pytest.raises(ClientError) as missing:
        await writer.history("nothing-here")
    assert missing.value.error is not None and missing.value.error.code == "not_found"
    # The writer's subscription is untouched by an error about a request.
    remote.doc.get("text", type=pycrdt.Text).insert(0, "still ")
    await remote.flushed()
    assert not remote.refused and remote.seq == 2


async def test_more_than_two_requests_at_once_are_refused(server, connect, raw):
    await typed(connect, "busy", 5)
    peer = await raw()
    await peer.hello()
    for request in range(1, 6):
        peer.send({"type": "history", "doc": "busy", "id": request})
    answers = [await peer.recv() for _ in range(5)]
    refused = [a for a in answers if a["type"] == "error"]
    served = [a for a in answers if a["type"] == "history"]
    assert refused and all(a["code"] == "overloaded" and "id" in a for a in refused)
    assert len(served) >= 2 and all(len(a["updates"]) == 5 for a in served)
    assert {a["id"] for a in answers} == {1, 2, 3, 4, 5}


async def test_a_seq_past_what_a_store_holds_is_refused_with_an_answer(server, connect, raw):
    await typed(connect, "bounds", 3)
    peer = await raw()
    await peer.hello()
    peer.send({"type": "history", "doc": "bounds", "id": 1, "after": 2**63})
    answer = await peer.recv()
    assert (answer["type"], answer["code"], answer["id"]) == ("error", "bad_message", 1)
    peer.send({"type": "history", "doc": "bounds", "id": 2, "after": 1})
    assert [u["seq"] for u in (await peer.recv())["updates"]] == [2, 3]
