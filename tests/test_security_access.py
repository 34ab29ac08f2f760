"""Who may do what, tried as an attacker would, on every entry point (/ws, /yjs/,
the HTTP API, SSE): every denial gets its documented error, returns no data and
stores nothing; a token's expiry and a revocation reach open connections;
subscribing never creates a document; names are normalised."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import unicodedata
import urllib.parse

import jwt
import pycrdt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pycrdt import create_sync_message, create_update_message
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from collab.auth import Authenticator
from collab.core import archive
from collab.errors import CloseCode
from tests.helpers import RawPeer, text_update

SECRET = "security-test-secret-of-32-bytes-or-more"
OTHER_SECRET = "another-secret-that-is-32-bytes-long!!"
# A token that expires during a test: time to connect and subscribe first (each
# test checks that it did), then the test waits for the expiry.
BRIEF_S = 1.0
ORIGIN = "https://app.example.com"


def token(user: str, docs: dict[str, str], secret: str = SECRET, **kwargs) -> str:
    return Authenticator(secret).issue(user, docs, **kwargs)


@pytest.fixture
def secured(io_loop, settings, start_server):
    return io_loop.run_sync(
        lambda: start_server(
            settings.replace(auth_secret=SECRET, allowed_origins=ORIGIN, reauth_timeout_s=5.0)
        )
    )


async def stored(server, doc: str) -> bool:
    return await server.store.get_document(doc) is not None


class Sockets:
    """The WebSockets a test opens, closed after it."""

    def __init__(self) -> None:
        self.opened: list[RawPeer] = []

    async def native(self, server, token_: str | None, origin: str = ORIGIN) -> RawPeer:
        request = HTTPRequest(f"ws://127.0.0.1:{server.port}/ws", headers={"Origin": origin})
        peer = RawPeer(await websocket_connect(request))
        self.opened.append(peer)
        fields = {"token": token_} if token_ else {}
        peer.send({"type": "hello", "version": 1, **fields})
        return peer

    async def yjs(self, server, doc: str, token_: str | None, origin: str = ORIGIN) -> RawPeer:
        query = f"?token={token_}" if token_ else ""
        request = HTTPRequest(
            f"ws://127.0.0.1:{server.port}/yjs/{urllib.parse.quote(doc)}{query}",
            headers={"Origin": origin},
        )
        peer = RawPeer(await websocket_connect(request))
        self.opened.append(peer)
        return peer


@pytest.fixture
def sockets():
    opened = Sockets()
    yield opened
    for peer in opened.opened:
        peer.close()


async def http(
    server, method: str, path: str, token_: str | None = None, body: bytes | None = None
) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token_}"} if token_ else {}
    try:
        response = await AsyncHTTPClient().fetch(
            f"http://127.0.0.1:{server.port}{path}",
            method=method,
            headers=headers,
            body=body,
            allow_nonstandard_methods=True,
        )
    except HTTPClientError as exc:
        assert exc.response is not None
        return exc.code, exc.response.body
    return response.code, response.body


async def write_text(sockets: Sockets, server, doc: str, content: str) -> None:
    peer = await sockets.native(server, token("owner", {"*": "write"}))
    assert (await peer.recv())["type"] == "welcome"
    await peer.subscribe(doc)
    peer.send({"type": "update", "doc": doc, "ref": 1, "update": text_update(content)})
    assert (await peer.recv_type("ack"))["ref"] == 1
    peer.close()


def rsa_pem() -> tuple[rsa.RSAPrivateKey, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, public


def hs256_signed(claims: dict, secret: bytes, headers: dict) -> str:
    """An HS256 JWT made by hand (PyJWT refuses a PEM key as an HMAC secret, as a
    server must: the classic algorithm-confusion attack)."""

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", **headers}).encode())
    body = b64(json.dumps(claims).encode())
    signature = b64(hmac.new(secret, head + b"." + body, hashlib.sha256).digest())
    return (head + b"." + body + b"." + signature).decode()


# -- denials, on every entry point ---------------------------------------------------------

BAD_TOKENS = {
    "no token": None,
    "bad signature": "SIGNED-WRONG",
    "wrong key": "WRONG-KEY",
    "expired at connect": "EXPIRED",
    "expiry as a string": "STRING-EXP",  # PyJWT takes it; the session could not end
    # Validly signed times no issuer would sign: PyJWT takes them, and an exp of
    # 1e300 made a welcome msgpack cannot encode (the client got 'internal').
    "expiry in the year 1e292": "EXP-1E300",
    "expiry as a 400-digit integer": "EXP-HUGE-INT",
    "issued before 1970": "IAT-NEGATIVE",
    "not valid before the year 1e292": "NBF-1E300",
    "not yet valid": "NBF-FUTURE",
    "garbage": "not-a-jwt",
}


def bad_token(kind: str | None) -> str | None:
    if kind == "SIGNED-WRONG":
        good = token("mallory", {"*": "write"})
        head, body, _ = good.split(".")
        forged = jwt.utils.base64url_encode(b"\x00" * 32).decode()
        return f"{head}.{body}.{forged}"
    if kind == "WRONG-KEY":
        return token("mallory", {"*": "write"}, secret=OTHER_SECRET)
    if kind == "EXPIRED":
        return token("mallory", {"*": "write"}, expires_in_s=-5)
    if kind == "STRING-EXP":
        claims = {"sub": "mallory", "docs": {"*": "write"}, "exp": str(int(time.time()) + 3600)}
        return jwt.encode(claims, SECRET, algorithm="HS256")
    if kind in TIME_CLAIMS:
        claims = {"sub": "mallory", "docs": {"*": "write"}, **TIME_CLAIMS[kind]}
        return jwt.encode(claims, SECRET, algorithm="HS256")
    return kind


TIME_CLAIMS = {
    "EXP-1E300": {"exp": 1e300},
    "EXP-HUGE-INT": {"exp": 10**400},
    "IAT-NEGATIVE": {"iat": -1},
    "NBF-1E300": {"nbf": 1e300},
    "NBF-FUTURE": {"nbf": int(time.time()) + 3600},
}


@pytest.mark.parametrize("kind", list(BAD_TOKENS.values()), ids=list(BAD_TOKENS))
async def test_a_bad_token_is_refused_everywhere_and_nothing_is_stored(sockets, secured, kind):
    await write_text(sockets, secured, "secret", "classified")
    bad = bad_token(kind)
    peer = await sockets.native(secured, bad)
    assert (await peer.recv())["code"] == "unauthorized"
    assert (await peer.closed())[0] == CloseCode.UNAUTHORIZED

    peer = await sockets.yjs(secured, "secret", bad)
    assert await peer.recv_bytes() is None  # not even sync step 1
    assert peer.ws.close_code == CloseCode.UNAUTHORIZED
    peer = await sockets.yjs(secured, "new-by-yjs", bad)
    await peer.closed()

    for path in ("/api/documents/secret", "/api/documents/secret/events?after=0"):
        status, body = await http(secured, "GET", path, bad)
        assert status == 401 and b"classified" not in body
        if bad is not None:  # the token in the query string, as an EventSource sends it
            query = ("&" if "?" in path else "?") + urllib.parse.urlencode({"token": bad})
            status, body = await http(secured, "GET", path + query)
            assert status == 401 and b"classified" not in body
    status, _ = await http(secured, "POST", "/api/documents/secret/restore?seq=0", bad, b"")
    assert status == 401
    assert not await stored(secured, "new-by-yjs")
    assert (await secured.store.get_document("secret")).head_seq == 1


async def test_a_document_outside_the_grants_is_refused_everywhere(sockets, secured):
    await write_text(sockets, secured, "secret", "classified")
    mallory = token("mallory", {"public/*": "write"})
    peer = await sockets.native(secured, mallory)
    await peer.recv()
    peer.send({"type": "subscribe", "doc": "secret"})
    assert (await peer.recv())["code"] == "forbidden"
    peer.send({"type": "update", "doc": "secret", "ref": 1, "update": text_update("x")})
    assert (await peer.recv())["code"] == "not_subscribed"
    peer.send({"type": "history", "doc": "secret", "id": 1})
    assert (await peer.recv())["code"] == "forbidden"

    yjs = await sockets.yjs(secured, "secret", mallory)
    assert await yjs.recv_bytes() is None
    assert yjs.ws.close_code == CloseCode.FORBIDDEN
    for path in ("/api/documents/secret", "/api/documents/secret/history"):
        status, body = await http(secured, "GET", path, mallory)
        assert status == 403 and b"classified" not in body
    status, body = await http(secured, "GET", "/api/documents", mallory)
    assert status == 200 and json.loads(body)["documents"] == []
    assert (await http(secured, "GET", "/api/documents/secret/events", mallory))[0] == 403
    assert (await secured.store.get_document("secret")).head_seq == 1


async def test_a_read_only_grant_cannot_write_anywhere(sockets, secured):
    await write_text(sockets, secured, "handbook", "rules")
    reader = token("reader", {"handbook": "read"})
    peer = await sockets.native(secured, reader)
    await peer.recv()
    assert (await peer.subscribe("handbook"))["role"] == "read"
    peer.send({"type": "update", "doc": "handbook", "ref": 7, "update": text_update("graffiti")})
    error = await peer.recv_type("error")
    assert (error["code"], error["ref"]) == ("read_only", 7)

    yjs = await sockets.yjs(secured, "handbook", reader)
    await yjs.recv_bytes()  # sync step 1
    yjs.send_bytes(create_update_message(text_update("graffiti")))
    denied = await yjs.recv_bytes()
    while denied is not None and denied[0] != 2:  # y-protocols auth: permission denied
        denied = await yjs.recv_bytes()
    assert denied is not None
    status, _ = await http(secured, "POST", "/api/documents/handbook/restore?seq=0", reader, b"")
    assert status == 403
    status, _ = await http(secured, "DELETE", "/api/documents/handbook", reader)
    assert status == 403
    assert (await secured.store.get_document("handbook")).head_seq == 1


async def test_a_page_of_another_origin_cannot_open_a_socket(secured):
    good = token("ann", {"*": "write"})
    for path in ("/ws", "/yjs/notes"):
        request = HTTPRequest(
            f"ws://127.0.0.1:{secured.port}{path}?token={good}",
            headers={"Origin": "https://evil.example"},
        )
        with pytest.raises(HTTPClientError) as refused:
            await websocket_connect(request)
        assert refused.value.code == 403
    assert not await stored(secured, "notes")


# -- subscribing does not create -------------------------------------------------------------


async def test_subscribing_reading_and_following_create_no_document(sockets, secured):
    writer = token("w", {"*": "write"})
    reader = token("r", {"*": "read"})
    peer = await sockets.native(secured, writer)
    await peer.recv()
    sync = await peer.subscribe("draft")
    assert sync["seq"] == 0
    peer.send({"type": "awareness", "doc": "draft", "update": b"\x00"})

    ro = await sockets.native(secured, reader)
    await ro.recv()
    ro.send({"type": "subscribe", "doc": "draft"})
    error = await ro.recv_type("error")
    assert (error["code"], error["doc"]) == ("not_found", "draft")
    ro.send({"type": "history", "doc": "draft", "id": 3})
    assert (await ro.recv_type("error"))["code"] == "not_found"

    yjs_ro = await sockets.yjs(secured, "draft", reader)
    assert await yjs_ro.recv_bytes() is None
    assert yjs_ro.ws.close_code == CloseCode.NOT_FOUND
    yjs_rw = await sockets.yjs(secured, "other", writer)
    await yjs_rw.recv_bytes()  # sync step 1: the (empty) document
    yjs_rw.send_bytes(create_sync_message(pycrdt.Doc()))  # a provider's step 1
    assert await yjs_rw.recv_bytes() is not None  # step 2: nothing
    for path in ("draft", "draft/history", "draft/events", "draft/state", "draft/versions/0"):
        assert (await http(secured, "GET", f"/api/documents/{path}", reader))[0] == 404
    status, _ = await http(secured, "POST", "/api/documents/draft/restore?seq=0", writer, b"")
    assert status == 404
    assert not await stored(secured, "draft") and not await stored(secured, "other")

    # The first write creates it, under the epoch its subscribers were given.
    peer.send({"type": "update", "doc": "draft", "ref": 1, "update": text_update("hi")})
    assert (await peer.recv_type("ack"))["seq"] == 1
    info = await secured.store.get_document("draft")
    assert info is not None and info.epoch == sync["epoch"]
    assert (await ro.subscribe("draft"))["seq"] == 1


# -- names ---------------------------------------------------------------------------------


async def test_names_that_look_the_same_are_the_same_document(sockets, secured):
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    assert unicodedata.normalize("NFC", decomposed) == composed
    await write_text(sockets, secured, decomposed, "one document")
    everyone = token("e", {"*": "write"})
    peer = await sockets.native(secured, everyone)
    await peer.recv()
    sync = await peer.subscribe(composed)
    assert sync["seq"] == 1 and sync["doc"] == composed
    status, body = await http(
        secured, "GET", f"/api/documents/{urllib.parse.quote(decomposed)}", everyone
    )
    assert status == 200 and json.loads(body)["doc"] == composed
    names = [d.name for d in await secured.store.list_documents()]
    assert names == [composed]


@pytest.mark.parametrize(
    "name",
    [
        "evil\u202eexe.txt",
        "zero\u200bwidth",
        "join\u200dme",
        "bom\ufeff",
        "tab\tname",
        "plan\u034f",
        "plan\ufe0f",
        "plan\u3164",
        "plan\u2800",
        "plan\u00a0b",
        "plan\U000e0100",
    ],
    ids=[
        "bidi-override",
        "zero-width-space",
        "zero-width-joiner",
        "bom",
        "control",
        "grapheme-joiner",
        "variation-selector",
        "hangul-filler",
        "braille-blank",
        "no-break-space",
        "tag-selector",
    ],
)
async def test_names_with_invisible_characters_are_refused_everywhere(sockets, secured, name):
    everyone = token("e", {"*": "write"})
    peer = await sockets.native(secured, everyone)
    await peer.recv()
    peer.send({"type": "subscribe", "doc": name})
    assert (await peer.recv())["code"] == "invalid_document_name"
    yjs = await sockets.yjs(secured, name, everyone)
    assert (await yjs.closed())[0] == CloseCode.PROTOCOL_ERROR
    quoted = urllib.parse.quote(name)
    for path in (quoted, f"{quoted}/history", f"{quoted}/events"):
        assert (await http(secured, "GET", f"/api/documents/{path}", everyone))[0] == 400
    assert await secured.store.list_documents() == []


# -- expiry, reauth, revocation --------------------------------------------------------------


async def test_an_expired_native_session_accepts_nothing_until_reauth(sockets, secured):
    await write_text(sockets, secured, "notes", "before")
    peer = await sockets.native(secured, token("ann", {"notes": "write"}, expires_in_s=BRIEF_S))
    welcome = await peer.recv()
    assert welcome["expires_s"] <= time.time() + BRIEF_S
    await peer.subscribe("notes")
    expired = await peer.recv_type("error", timeout_s=5)
    assert expired["code"] == "expired"

    peer.send({"type": "update", "doc": "notes", "ref": 5, "update": text_update("late")})
    refused = await peer.recv_type("error")
    assert (refused["code"], refused["ref"]) == ("expired", 5)
    peer.send({"type": "subscribe", "doc": "notes"})
    assert (await peer.recv_type("error"))["code"] == "expired"
    peer.send({"type": "reauth", "token": token("eve", {"*": "write"})})  # another user
    assert (await peer.recv_type("error"))["code"] == "unauthorized"
    assert (await secured.store.get_document("notes")).head_seq == 1

    peer.send({"type": "reauth", "token": token("ann", {"notes": "write"}, expires_in_s=60)})
    reauthed = await peer.recv_type("reauthed")
    assert reauthed["user"] == "ann"
    sync = await peer.subscribe("notes")
    peer.send({"type": "update", "doc": "notes", "ref": 6, "update": text_update("fresh")})
    assert (await peer.recv_type("ack"))["seq"] == sync["seq"] + 1


@pytest.mark.parametrize("kind", list(TIME_CLAIMS))
async def test_a_reauth_whose_token_claims_an_impossible_time_closes_with_4401(
    sockets, secured, kind
):
    peer = await sockets.native(secured, token("mallory", {"*": "write"}))
    assert (await peer.recv())["type"] == "welcome"
    peer.send({"type": "reauth", "token": bad_token(kind)})
    assert (await peer.recv())["code"] == "unauthorized"
    assert (await peer.closed())[0] == CloseCode.UNAUTHORIZED


async def test_an_expired_native_session_without_reauth_is_closed(
    sockets, io_loop, settings, start_server
):
    server = await start_server(settings.replace(auth_secret=SECRET, reauth_timeout_s=0.3))
    peer = await sockets.native(server, token("ann", {"*": "write"}, expires_in_s=BRIEF_S))
    await peer.recv()
    assert (await peer.recv_type("error", timeout_s=5))["code"] == "expired"
    assert (await peer.closed())[0] == CloseCode.UNAUTHORIZED


async def test_an_expired_yjs_socket_is_closed_with_a_code_the_provider_reconnects_on(
    sockets, secured
):
    peer = await sockets.yjs(secured, "notes", token("ann", {"*": "write"}, expires_in_s=BRIEF_S))
    code, reason = await peer.closed()
    assert code == CloseCode.TOKEN_EXPIRED and not 4400 <= code < 4500
    assert "expired" in (reason or "")


async def test_an_event_stream_ends_when_its_token_expires(sockets, secured):
    await write_text(sockets, secured, "notes", "x")
    short = token("ann", {"*": "read"}, expires_in_s=BRIEF_S)
    chunks: list[bytes] = []
    await AsyncHTTPClient().fetch(
        f"http://127.0.0.1:{secured.port}/api/documents/notes/events?after=0",
        headers={"Authorization": f"Bearer {short}"},
        streaming_callback=chunks.append,
        request_timeout=10,
    )
    body = b"".join(chunks)
    assert b"id: 1\n" in body and body.rstrip().split(b"\n")[-2] == b"event: expired"


async def test_revoking_a_user_ends_their_sockets_and_tokens(sockets, secured):
    alice = token("alice", {"*": "write"})
    peer = await sockets.native(secured, alice)
    await peer.recv()
    await peer.subscribe("notes")
    yjs = await sockets.yjs(secured, "notes", alice)
    await yjs.recv_bytes()

    assert (await http(secured, "POST", "/api/admin/revoke", alice, b'{"user":"alice"}'))[0] == 403
    admin = token("root", {}, admin=True)
    status, _ = await http(secured, "POST", "/api/admin/revoke", admin, b'{"user":"alice"}')
    assert status == 200
    assert (await peer.recv_type("error"))["code"] == "revoked"
    assert (await peer.closed())[0] == CloseCode.UNAUTHORIZED
    assert (await yjs.closed())[0] == CloseCode.UNAUTHORIZED

    again = await sockets.native(secured, alice)
    assert (await again.recv())["code"] == "unauthorized"
    assert (await http(secured, "GET", "/api/documents", alice))[0] == 401
    await asyncio.sleep(0.01)  # a token issued after the revocation is good
    fresh = await sockets.native(secured, token("alice", {"*": "write"}))
    assert (await fresh.recv())["type"] == "welcome"


# -- identity providers' keys ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["RS256", "ES256", "jwks"])
async def test_tokens_signed_by_an_identity_provider_s_key(
    sockets, io_loop, settings, start_server, tmp_path, kind
):
    if kind == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        algorithm = "ES256"
    else:
        key, pem = rsa_pem()
        algorithm = "RS256"
    headers = {}
    if kind == "jwks":
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        jwks = {"keys": [{**jwk, "kid": "k1", "alg": "RS256", "use": "sig"}]}
        (tmp_path / "jwks.json").write_text(json.dumps(jwks))
        server = await start_server(settings.replace(auth_jwks_file=str(tmp_path / "jwks.json")))
        headers = {"kid": "k1"}
    else:
        (tmp_path / "key.pem").write_bytes(pem)
        server = await start_server(
            settings.replace(auth_public_key_file=str(tmp_path / "key.pem"))
        )
    claims = {"sub": "ann", "name": "Ann", "docs": {"*": "write"}, "exp": time.time() + 60}
    good = jwt.encode(claims, key, algorithm=algorithm, headers=headers)
    peer = await sockets.native(server, good)
    assert (await peer.recv())["user"] == "ann"

    other, _ = rsa_pem()
    forged = [
        jwt.encode(claims, other, algorithm="RS256", headers=headers),  # another key
        hs256_signed(claims, pem, headers),  # the public key as an HMAC secret
        jwt.encode({**claims, "exp": time.time() - 5}, key, algorithm=algorithm, headers=headers),
    ]
    for bad in forged:
        peer = await sockets.native(server, bad)
        assert (await peer.recv())["code"] == "unauthorized"
        assert (await peer.closed())[0] == CloseCode.UNAUTHORIZED


async def test_an_import_counts_as_a_creation_and_says_who_imported_it(
    sockets, settings, start_server
):
    server = await start_server(
        settings.replace(auth_secret=SECRET, max_documents_created_per_minute=2)
    )
    await write_text(sockets, server, "original", "by owner")
    export = b"".join([line async for line in archive.export_document(server.store, "original")])
    mallory = token("mallory", {"copy-*": "write"})
    statuses = [
        (await http(server, "POST", f"/api/documents/copy-{i}/import", mallory, export))[0]
        for i in range(3)
    ]
    assert statuses == [201, 201, 429]  # the per-user creation cap
    assert await server.store.get_document("copy-2") is None
    (record,) = await server.store.read_updates("copy-0")
    # The file's author is kept, and so is who put it there.
    assert (record.author.user, record.author.instance) == ("owner", "import:by:mallory")
