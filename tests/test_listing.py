"""The document list with a token: only the names its grants can match are read,
through the store's index (a pattern's literal prefix is a range of names); a
pattern without one is a scan bounded by max_list_rows per request, going on
from a sealed cursor that names nothing the token does not see."""

from __future__ import annotations

import json
import time
import urllib.parse

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from collab.auth import Authenticator, Identity, Role, literal_prefix
from collab.core.listing import SEALED
from collab.store import NewUpdate

SECRET = "listing-test-secret-of-32-bytes-or-more"
BULK = 20_000


def token(user: str, docs: dict[str, str]) -> str:
    return Authenticator(SECRET).issue(user, docs)


async def listed(server, token_: str, **query: object) -> tuple[int, dict]:
    path = "/api/documents?" + urllib.parse.urlencode(query)
    try:
        response = await AsyncHTTPClient().fetch(
            f"http://127.0.0.1:{server.port}{path}",
            headers={"Authorization": f"Bearer {token_}"},
        )
    except HTTPClientError as exc:
        assert exc.response is not None
        return exc.code, json.loads(exc.response.body)
    return response.code, json.loads(response.body)


async def every_page(server, token_: str, max_rows: int, **query: object) -> list[str]:
    """Every name listed, following next_after; each request reads at most
    ``max_rows`` names of the store's list."""
    names: list[str] = []
    after = None
    while True:
        before = server.store.stats.document_rows_read
        status, body = await listed(
            server, token_, **query, **({"after": after} if after is not None else {})
        )
        assert status == 200
        assert server.store.stats.document_rows_read - before <= max_rows
        names += [d["name"] for d in body["documents"]]
        after = body["next_after"]
        if after is None:
            return names


async def store_documents(server, names: list[str]) -> None:
    """Documents made through the store, thousands a transaction."""
    now = time.time()
    for start in range(0, len(names), 5000):
        await server.store.append(
            [NewUpdate(name, b"\x00\x00", now) for name in names[start : start + 5000]]
        )


@pytest.fixture
def secured(io_loop, settings, start_server):
    return io_loop.run_sync(
        lambda: start_server(settings.replace(auth_secret=SECRET, max_list_rows=2000))
    )


def test_a_patterns_literal_prefix_ends_at_its_first_wildcard():
    assert [literal_prefix(p) for p in ("notes/*", "a?c", "x[ab]", "plain", "*")] == [
        "notes/",
        "a",
        "x",
        "plain",
        "",
    ]


def test_the_prefixes_of_a_token_are_the_fewest_that_cover_its_grants_within_a_prefix():
    identity = Identity(
        "ann",
        (
            ("team/*", Role.WRITE),
            ("team/notes/*", Role.READ),
            ("handbook", Role.READ),
            ("b?g", Role.READ),
            ("other/x", Role.READ),
        ),
    )
    assert identity.name_prefixes() == ["b", "handbook", "other/x", "team/"]
    assert identity.name_prefixes("team/notes") == ["team/notes"]
    assert identity.name_prefixes("hand") == ["handbook"]
    assert identity.name_prefixes("zzz") == []
    assert Identity("bob", (("*/public", Role.READ),)).name_prefixes("x/") == ["x/"]


async def test_a_narrow_tokens_list_reads_only_the_names_its_grants_can_match(secured):
    bulk = [f"bulk/{i:05}" for i in range(BULK)]
    await store_documents(secured, [*bulk, "team/a", "team/b", "handbook", "zzz"])
    narrow = token("ann", {"team/*": "write", "handbook": "read", "teams": "read"})

    before = secured.store.stats.document_rows_read
    status, body = await listed(secured, narrow)

    assert status == 200
    assert [d["name"] for d in body["documents"]] == ["handbook", "team/a", "team/b"]
    assert body["next_after"] is None
    # Three names, not the 20,004 the old list read (and tested one by one).
    assert secured.store.stats.document_rows_read - before == 3
    # Pages still follow on, across the prefixes' ranges.
    first = (await listed(secured, narrow, limit=2))[1]
    assert [d["name"] for d in first["documents"]] == ["handbook", "team/a"]
    rest = (await listed(secured, narrow, limit=2, after=first["next_after"]))[1]
    assert [d["name"] for d in rest["documents"]] == ["team/b"] and rest["next_after"] is None
    under = (await listed(secured, narrow, prefix="team/b"))[1]
    assert [d["name"] for d in under["documents"]] == ["team/b"]


async def test_a_token_granting_documents_one_by_one_reads_just_those(secured):
    bulk = [f"bulk/{i:05}" for i in range(BULK)]
    await store_documents(secured, bulk)
    shared = bulk[::100]  # 200 documents shared one by one
    reader = token("sam", dict.fromkeys(shared, "read"))

    before = secured.store.stats.document_rows_read
    assert await every_page(secured, reader, 2000, limit=1000) == shared
    assert secured.store.stats.document_rows_read - before == len(shared)


async def test_a_pattern_without_a_prefix_is_a_bounded_scan_that_goes_on_from_a_sealed_cursor(
    secured,
):
    names = [f"{i:05}/draft" for i in range(9000)]
    public = [f"{i:05}/public" for i in range(0, 9000, 1500)]
    await store_documents(secured, [*names, *public, "secret/plans"])
    reader = token("pat", {"*/public": "read"})

    status, first = await listed(secured, reader)
    assert status == 200
    # 2,000 names read: what was found in them, and a cursor past them that
    # names no document (the scan stopped at a draft the token does not see).
    assert len(first["documents"]) < len(public)
    assert first["next_after"].startswith(SEALED)
    assert "draft" not in first["next_after"]

    assert await every_page(secured, reader, 2000) == public
    assert await every_page(secured, reader, 2000, limit=1) == public
    # Each name is tested against every pattern that could match it: with four
    # such patterns, a request reads a quarter as many names.
    four = token("pat", {"*/public": "read", "*/p1": "read", "*/p2": "read", "*/p3": "read"})
    assert await every_page(secured, four, 500) == public


async def test_a_cursor_this_server_did_not_seal_is_refused(secured):
    await store_documents(secured, ["a/public"])
    reader = token("pat", {"*/public": "read"})
    forged = SEALED + "bm90LWEtY3Vyc29y"
    status, body = await listed(secured, reader, after=forged)
    assert status == 400 and "cursor" in body["error"]


async def test_open_access_lists_everything_a_page_at_a_time(server):
    await store_documents(server, [f"doc/{i:04}" for i in range(2500)])
    names = await every_page(server, "", 10_000, limit=1000)
    assert names == [f"doc/{i:04}" for i in range(2500)]
