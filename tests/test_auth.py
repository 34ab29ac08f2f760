"""Access tokens on /ws: who may connect, which documents, read or write.

In-process (tests/conftest.py, ``inprocess``): the rules of access, no socket; the
token in a URL's query string over a real socket."""

from __future__ import annotations

import pycrdt
import pytest

from collab.auth import Authenticator
from collab.client import ClientError
from collab.errors import CloseCode

SECRET = "test-secret-with-at-least-32-bytes!"

pytestmark = pytest.mark.inprocess


@pytest.fixture
def secured(io_loop, settings, start_server):
    return io_loop.run_sync(lambda: start_server(settings.replace(auth_secret=SECRET)))


def token(user: str, docs: dict[str, str], **kwargs) -> str:
    return Authenticator(SECRET).issue(user, docs, **kwargs)


async def test_a_connection_without_a_token_is_closed_with_4401(secured, raw):
    peer = await raw(target=secured)
    peer.send({"type": "hello", "version": 1})
    error = await peer.recv()
    assert error["code"] == "unauthorized"
    assert (await peer.closed())[0] == CloseCode.UNAUTHORIZED


@pytest.mark.parametrize(
    "bad",
    [
        "not-a-jwt",
        Authenticator("another-secret-another-secret-32bytes").issue("mallory", {"*": "write"}),
        Authenticator(SECRET).issue("late", {"*": "write"}, expires_in_s=-10),
    ],
    ids=["garbage", "wrong-secret", "expired"],
)
async def test_an_invalid_or_expired_token_is_closed_with_4401(secured, raw, bad):
    peer = await raw(target=secured)
    peer.send({"type": "hello", "version": 1, "token": bad})
    assert (await peer.recv())["code"] == "unauthorized"
    assert (await peer.closed())[0] == CloseCode.UNAUTHORIZED


@pytest.mark.socket
async def test_the_token_can_travel_in_the_query_string(secured, raw):
    peer = await raw(path=f"/ws?token={token('ann', {'*': 'write'})}", target=secured)
    welcome = await peer.hello()
    assert (welcome["type"], welcome["user"]) == ("welcome", "ann")


async def test_a_document_outside_the_grants_is_forbidden_without_closing(secured, connect):
    client = await connect(secured, token=token("bob", {"team/*": "write"}))
    with pytest.raises(ClientError) as refused:
        await client.subscribe("private/plans")
    assert refused.value.error.code == "forbidden"
    allowed = await client.subscribe("team/notes")
    assert allowed.role == "write"


async def test_a_read_only_peer_reads_and_shares_awareness_but_cannot_edit(secured, connect, raw):
    writer = await connect(secured, token=token("w", {"doc": "write"}))
    w = await writer.subscribe("doc")
    w.doc.get("text", type=pycrdt.Text).insert(0, "by the writer")
    await w.flushed()

    reader = await connect(secured, token=token("r", {"*": "read"}))
    r = await reader.subscribe("doc")
    assert r.role == "read"
    assert str(r.doc.get("text", type=pycrdt.Text)) == "by the writer"

    peer = await raw(target=secured)
    await peer.hello(token=token("r2", {"doc": "read"}))
    await peer.subscribe("doc")
    peer.send({"type": "update", "doc": "doc", "ref": 1, "update": w.doc.get_update()})
    error = await peer.recv_type("error")
    assert (error["code"], error["ref"]) == ("read_only", 1)

    r.set_awareness({"user": "r"})
    await w.wait_for(lambda: r.awareness.client_id in w.awareness.states)
    w.doc.get("text", type=pycrdt.Text).insert(0, ">> ")
    await r.wait_for(lambda: str(r.doc.get("text", type=pycrdt.Text)) == ">> by the writer")
    await w.flushed()
    assert len(await secured.store.read_updates("doc")) == 2


async def test_the_strongest_matching_grant_wins(secured, connect):
    owner = await connect(secured, token=token("o", {"*": "write"}))
    theirs = await owner.subscribe("theirs")
    theirs.doc.get("text", type=pycrdt.Text).insert(0, "exists")
    await theirs.flushed()  # a document that does not exist has nothing to read
    client = await connect(secured, token=token("c", {"*": "read", "mine/*": "write"}))
    assert (await client.subscribe("mine/a")).role == "write"
    assert (await client.subscribe("theirs")).role == "read"
