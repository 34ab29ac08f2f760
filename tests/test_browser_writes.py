"""ProseMirror JSON written over HTTP shows in the page's Tiptap editor, open in
a real browser (Debian's Chromium) while it is written: a heading, bold, a link
and a list, as y-prosemirror maps them; and it reads back equal afterwards (the
editor rewrote nothing)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser import Backend, Console, browser_fixture, skip_unless_browser
from tests.test_http_writes import ARTICLE

pytestmark = [skip_unless_browser(), pytest.mark.slow]

# Ending with a paragraph: Tiptap's StarterKit (its TrailingNode) adds an empty one
# after a document that ends with a list, an edit of the editor's own.
WRITTEN = {
    **ARTICLE,
    "content": [
        *ARTICLE["content"],
        {"type": "paragraph", "content": [{"type": "text", "text": "The end."}]},
    ],
}


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    backend = Backend(tmp_path_factory.mktemp("writes"))
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from browser_fixture()


def request(backend: Backend, path: str, body: object = None) -> Any:
    headers = {"Authorization": f"Bearer {backend.admin}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    call = urllib.request.Request(
        backend.url + path,
        method="GET" if body is None else "POST",
        data=None if body is None else json.dumps(body).encode(),
        headers=headers,
    )
    with urllib.request.urlopen(call, timeout=10) as response:
        return json.load(response)


def test_prosemirror_json_written_over_http_shows_in_the_open_tiptap_editor(
    browser: Any, backend: Backend
) -> None:
    doc = "browser/written"
    console = Console()
    context = browser.new_context(viewport={"width": 1100, "height": 700})
    context.set_default_timeout(15_000)
    try:
        page = console.watch(context.new_page())
        token = backend.token("reader", {doc: "write"})
        page.goto(backend.page_url(doc, token))
        page.wait_for_selector('#connection[data-synced="true"]')

        answer = request(
            backend, f"/api/documents/{doc.replace('/', '%2F')}/updates?format=prosemirror", WRITTEN
        )

        editor = page.locator("#editor .tiptap")
        page.wait_for_selector("#editor .tiptap ul li >> nth=1")
        assert editor.locator("h2").inner_text() == "Plan"
        assert editor.locator("p strong").inner_text() == "bold"
        assert editor.locator("p a").get_attribute("href") == "https://example.com"
        assert editor.locator("ul li").all_inner_texts() == ["one", "two"]
        page.wait_for_selector('#connection[data-queued="0"][data-synced="true"]')
        read = request(backend, f"/api/documents/{doc.replace('/', '%2F')}?format=prosemirror")
        assert read == WRITTEN
        history = request(backend, f"/api/documents/{doc.replace('/', '%2F')}/history")
        assert [u["seq"] for u in history["updates"]] == [answer["seq"]]
        assert console.problems() == []
    finally:
        context.close()


def test_a_bot_writing_over_http_while_a_person_types_loses_neither(
    browser: Any, backend: Backend
) -> None:
    doc = "browser/together"
    path = f"/api/documents/{doc.replace('/', '%2F')}"
    console = Console()
    context = browser.new_context(viewport={"width": 1100, "height": 700})
    context.set_default_timeout(15_000)
    try:
        page = console.watch(context.new_page())
        page.goto(backend.page_url(doc, backend.token("writer", {doc: "write"})))
        page.wait_for_selector('#connection[data-synced="true"]')
        editor = page.locator("#editor .tiptap")
        editor.focus()
        page.keyboard.type("Typed by a person.")
        for n in range(3):  # each appended after the person's paragraph, while typing goes on
            line = {"type": "paragraph", "content": [{"type": "text", "text": f"Bot line {n}."}]}
            request(
                backend,
                f"{path}/updates",
                {
                    "edits": [
                        {"op": "prosemirror.replace", "doc": [line], "from": n + 1, "to": n + 1}
                    ]
                },
            )
            page.keyboard.type(f" More {n}.")

        page.wait_for_selector("#editor .tiptap p >> text=Bot line 2.")
        page.wait_for_selector('#connection[data-queued="0"][data-synced="true"]')
        shown = editor.locator("p").all_inner_texts()
        assert shown == [
            "Typed by a person. More 0. More 1. More 2.",
            "Bot line 0.",
            "Bot line 1.",
            "Bot line 2.",
        ]
        stored = request(backend, f"{path}?format=prosemirror")["content"]
        assert [p["content"][0]["text"] for p in stored] == shown
        assert console.problems() == []
    finally:
        context.close()
