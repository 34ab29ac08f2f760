"""Open mode is safe on a laptop: without access tokens, a page of another site
that the user visits cannot change a document or open a socket (Origin,
Sec-Fetch-Site), and a DNS-rebinding page cannot reach the server at all (Host).
Clients that are not browsers (no Origin) and the server's own pages are not
affected; ``allowed_origins`` and ``allowed_hosts`` widen it; with tokens, the
token is the access control."""

from __future__ import annotations

import json
import logging
import time

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from collab.auth import Authenticator
from collab.store import NewUpdate
from collab.web.sites import Sites, host_name
from tests.browser import Backend, launch, skip_reason
from tests.helpers import text_update

SECRET = "origins-test-secret-of-32-bytes-or-more"
EVIL = "https://evil.example"


async def http(
    server, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> int:
    try:
        response = await AsyncHTTPClient().fetch(
            f"http://127.0.0.1:{server.port}{path}",
            method=method,
            headers=headers or {},
            body=body if method == "POST" else None,
            allow_nonstandard_methods=True,
        )
    except HTTPClientError as exc:
        return exc.code
    return response.code


async def socket_status(server, path: str, headers: dict[str, str]) -> int:
    """101 when the WebSocket opens, else the status the handshake was refused with."""
    request = HTTPRequest(f"ws://127.0.0.1:{server.port}{path}", headers=headers)
    try:
        socket = await websocket_connect(request)
    except HTTPClientError as exc:
        return exc.code
    socket.close()
    return 101


async def a_document(server, doc: str = "kept") -> int:
    await server.store.append([NewUpdate(doc, text_update("precious"), time.time())])
    info = await server.store.get_document(doc)
    return info.head_seq


# -- the rules, without a server ---------------------------------------------------------


def test_host_names_are_read_without_their_port_or_brackets():
    assert host_name("Example.COM:8000") == "example.com"
    assert host_name("[::1]:8000") == "::1"
    assert host_name("localhost.") == "localhost"
    for bad in ("", "a b", "user@evil.example", "x:notaport", "evil/x"):
        assert host_name(bad) is None, bad


def test_open_mode_answers_addresses_and_localhost_and_refuses_other_names():
    sites = Sites.of(host="127.0.0.1", allowed_hosts="", allowed_origins="", tokens_required=False)
    for host in ("127.0.0.1:8000", "[::1]:8000", "192.168.1.5", "localhost:8000", "a.localhost"):
        assert sites.host_allowed(host), host
    for host in ("evil.example:8000", "localhost.evil.example", "127.0.0.1.nip.io"):
        assert not sites.host_allowed(host), host
    assert not sites.origin_trusted("http://localhost:3000")  # another port: another origin
    listening = Sites.of(
        host="collab.lan", allowed_hosts="", allowed_origins="", tokens_required=False
    )
    assert listening.host_allowed("collab.lan:8000")  # the name it was told to listen on
    anywhere = Sites.of(host="0.0.0.0", allowed_hosts="", allowed_origins="", tokens_required=False)
    assert anywhere.host_allowed("10.0.0.7:8000") and not anywhere.host_allowed("box.lan")


def test_the_lists_widen_it_and_tokens_let_anything_through_unless_they_are_set():
    listed = Sites.of(
        host="127.0.0.1",
        allowed_hosts="collab.example.com",
        allowed_origins="https://app.example.com/",
        tokens_required=False,
    )
    assert listed.host_allowed("Collab.Example.com:443")
    assert listed.origin_trusted("https://APP.example.com")
    assert not listed.origin_trusted(EVIL) and not listed.host_allowed("evil.example")
    star = Sites.of(host="127.0.0.1", allowed_hosts="*", allowed_origins="*", tokens_required=False)
    assert star.host_allowed("evil.example") and star.origin_trusted(EVIL)
    tokens = Sites.of(host="127.0.0.1", allowed_hosts="", allowed_origins="", tokens_required=True)
    assert tokens.host_allowed("evil.example") and tokens.origin_trusted(EVIL)
    narrowed = Sites.of(
        host="127.0.0.1",
        allowed_hosts="collab.example.com",
        allowed_origins="https://app.example.com",
        tokens_required=True,
    )
    assert not narrowed.host_allowed("evil.example") and not narrowed.origin_trusted(EVIL)


# -- open mode, against a server ---------------------------------------------------------


async def test_in_open_mode_a_page_of_another_site_cannot_change_a_document(server):
    seq = await a_document(server)
    export = b""  # refused before the body matters
    own = f"http://127.0.0.1:{server.port}"
    attempts = [
        ("POST", "/api/documents/kept/restore?seq=0", {"Origin": EVIL}),  # a "simple" request
        ("POST", "/api/documents/copy/import", {"Origin": EVIL}),
        ("DELETE", "/api/documents/kept", {"Origin": EVIL}),
        ("POST", "/api/documents/kept/restore?seq=0", {"Origin": "null"}),  # a sandboxed page
        # Browsers that send Sec-Fetch-Site: another port of localhost is the same
        # site, and still another origin.
        (
            "POST",
            "/api/documents/kept/restore?seq=0",
            {"Origin": "http://localhost:3000", "Sec-Fetch-Site": "same-site"},
        ),
    ]
    for method, path, headers in attempts:
        assert await http(server, method, path, headers, export) == 403, (method, headers)
    assert (await server.store.get_document("kept")).head_seq == seq
    assert await server.store.get_document("copy") is None
    # The server's own page, and clients that are not browsers (no Origin), may.
    restore = "/api/documents/kept/restore?seq=1"
    assert await http(server, "POST", restore, {"Origin": own}) == 200
    assert await http(server, "POST", restore, {"Sec-Fetch-Site": "same-origin"}) == 200
    assert await http(server, "POST", restore) == 200
    assert await http(server, "DELETE", "/api/documents/kept") == 200


async def test_in_open_mode_a_page_of_another_site_cannot_open_a_socket(server):
    own = f"http://127.0.0.1:{server.port}"
    for path in ("/ws", "/yjs/kept"):
        assert await socket_status(server, path, {"Origin": EVIL}) == 403
        assert await socket_status(server, path, {"Origin": "http://localhost:3000"}) == 403
        assert await socket_status(server, path, {"Origin": own}) == 101
        assert await socket_status(server, path, {}) == 101  # not a browser
    assert await server.store.get_document("kept") is None


async def test_in_open_mode_a_dns_rebinding_name_is_not_answered(server):
    await a_document(server)
    rebound = {"Host": f"evil.example:{server.port}"}
    for path in ("/", "/api/documents", "/api/documents/kept", "/api/documents/kept/events"):
        assert await http(server, "GET", path, rebound) == 403, path
    assert await http(server, "POST", "/api/documents/kept/restore?seq=0", rebound) == 403
    for path in ("/ws", "/yjs/kept"):
        # The page is its own origin as far as the browser knows.
        headers = {**rebound, "Origin": f"http://evil.example:{server.port}"}
        assert await socket_status(server, path, headers) == 403
    assert (await server.store.get_document("kept")).head_seq == 1
    for host in ("localhost", "LOCALHOST", "tab.localhost", "127.0.0.1", "[::1]", "10.1.2.3"):
        assert await http(server, "GET", "/api/documents", {"Host": f"{host}:{server.port}"}) == 200
    with pytest.raises(HTTPClientError) as refused:
        await AsyncHTTPClient().fetch(f"http://127.0.0.1:{server.port}/", headers=rebound)
    assert refused.value.response is not None
    error = json.loads(refused.value.response.body)["error"]
    assert error.startswith(f"this server does not answer to 'evil.example:{server.port}'")
    assert "--allowed-hosts" in error


async def test_allowed_hosts_and_origins_widen_what_open_mode_answers(settings, start_server):
    server = await start_server(
        settings.replace(allowed_hosts="collab.lan", allowed_origins="https://app.example.com")
    )
    await a_document(server)
    app = {"Origin": "https://app.example.com"}
    assert await http(server, "GET", "/api/documents", {"Host": "collab.lan:8000"}) == 200
    assert await http(server, "GET", "/api/documents", {"Host": "evil.example"}) == 403
    assert await http(server, "POST", "/api/documents/kept/restore?seq=1", app) == 200
    assert await http(server, "POST", "/api/documents/kept/restore?seq=1", {"Origin": EVIL}) == 403
    assert await socket_status(server, "/yjs/kept", app) == 101
    assert await socket_status(server, "/yjs/kept", {"Origin": EVIL}) == 403
    anything = await start_server(settings.replace(allowed_hosts="*", allowed_origins="*"))
    headers = {"Host": "evil.example", "Origin": EVIL}
    assert await http(anything, "GET", "/api/documents", headers) == 200
    assert await socket_status(anything, "/yjs/kept", headers) == 101


async def test_with_tokens_other_sites_and_names_reach_the_token_check(settings, start_server):
    server = await start_server(settings.replace(auth_secret=SECRET))
    await a_document(server)
    editor = Authenticator(SECRET).issue("ed", {"*": "write"})
    elsewhere = {"Host": "collab.example.com", "Origin": "https://editor.example.com"}
    with_token = {**elsewhere, "Authorization": f"Bearer {editor}"}
    assert await http(server, "POST", "/api/documents/kept/restore?seq=1", elsewhere) == 401
    assert await http(server, "POST", "/api/documents/kept/restore?seq=1", with_token) == 200
    assert await socket_status(server, f"/yjs/kept?token={editor}", elsewhere) == 101
    narrowed = await start_server(
        settings.replace(auth_secret=SECRET, allowed_hosts="collab.example.com")
    )
    assert await http(narrowed, "GET", "/healthz", {"Host": "collab.example.com"}) == 200
    assert await http(narrowed, "GET", "/healthz", {"Host": "evil.example"}) == 403


# -- a real browser ---------------------------------------------------------------------


@pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")
def test_a_real_browser_on_another_site_or_a_rebound_name_changes_nothing(tmp_path, caplog):
    """Chromium, with evil.example resolving to the server (a DNS rebinding done by
    the browser's resolver): the rebound page is not answered, and a page of another
    origin (localhost, where the server is 127.0.0.1) can neither restore nor open
    a socket, where the server's own page can."""
    from playwright.sync_api import sync_playwright

    caplog.set_level(logging.INFO, logger="collab.access")
    backend = Backend(tmp_path, secret=None)
    try:
        backend.write_text("kept", "text", "precious")
        port = backend.server.port
        server = f"http://127.0.0.1:{port}"
        attack = f"""async () => {{
            const restore = await fetch('{server}/api/documents/kept/restore?seq=0',
                {{method: 'POST', mode: 'no-cors'}}).then(() => 'sent', () => 'failed');
            const socket = await new Promise((resolve) => {{
                const ws = new WebSocket('ws://127.0.0.1:{port}/yjs/kept');
                ws.onopen = () => {{ ws.close(); resolve('open'); }};
                ws.onerror = () => resolve('refused');
            }});
            return [restore, socket];
        }}"""
        with sync_playwright() as playwright:
            # Chromium's own Local Network Access checks would stop the rebound
            # page's requests before they reach the server; other browsers have
            # none, and the server must not count on them.
            browser = launch(
                playwright,
                "--host-resolver-rules=MAP evil.example 127.0.0.1",
                "--disable-features=LocalNetworkAccessChecks,BlockInsecurePrivateNetworkRequests",
            )
            try:
                page = browser.new_page()
                # The rebound name: the page itself, its API calls and its sockets.
                assert page.goto(f"http://evil.example:{port}/").status == 403
                page.route(
                    f"http://evil.example:{port}/attack",
                    lambda route: route.fulfill(body="<p>hi</p>", content_type="text/html"),
                )
                page.goto(f"http://evil.example:{port}/attack")  # served by the "attacker"
                statuses = page.evaluate(
                    """async () => [
                        (await fetch('/api/documents/kept')).status,
                        (await fetch('/api/documents/kept/restore?seq=0', {method: 'POST'})).status,
                    ]"""
                )
                assert statuses == [403, 403]
                # Another origin: the same server, named localhost.
                page.goto(f"http://localhost:{port}/")
                assert page.evaluate(attack) == ["sent", "refused"]
                assert backend.api("/api/documents/kept")["seq"] == 1
                # The server's own page may.
                page.goto(f"{server}/")
                assert page.evaluate(attack) == ["sent", "open"]
                assert backend.api("/api/documents/kept")["seq"] == 2
            finally:
                browser.close()
    finally:
        backend.close()
    refusals = [r.getMessage() for r in caplog.records if r.name == "collab.access"]
    assert any(m.startswith("403 POST /api/documents/kept/restore") for m in refusals)
