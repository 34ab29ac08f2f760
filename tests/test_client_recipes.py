"""The editor recipes of docs/CLIENT.md ("Binding an editor": Tiptap, ProseMirror with
y-prosemirror, CodeMirror with y-codemirror.next), taken from the markdown as written,
bundled with esbuild against the packed @collab/client, served by a real collab server
(its static folder) and driven in Debian's Chromium: two browsers edit one document
live, and the server stores what both typed."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import tarfile
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from collab.config import Settings
from tests.browser import POLL_MS, Backend, Console, browser_fixture, skip_unless_browser

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "CLIENT.md"
NODE_MODULES = ROOT / "scripts" / "frontend" / "node_modules"

pytestmark = [
    pytest.mark.slow,
    skip_unless_browser(),
    pytest.mark.skipif(
        not (NODE_MODULES / "y-codemirror.next").exists(),
        reason="scripts/frontend/node_modules is not installed (scripts/test installs it)",
    ),
]

WITHIN_S = 15.0  # what the other browser waits for an edit (two test workers share 2 cores)

# The recipe's heading in docs/CLIENT.md, the editor's editable element, and where the
# document keeps its content (the root's name in the server's JSON of it).
RECIPES = {
    "Tiptap": (".tiptap", "default"),
    "ProseMirror": (".ProseMirror", "prosemirror"),
    "CodeMirror": (".cm-content", "codemirror"),
}


def section(markdown: str, heading: str) -> str:
    """The text under the first heading that starts with `heading`, up to the next one."""
    match = re.search(rf"^(#+) {re.escape(heading)}.*$", markdown, flags=re.M)
    assert match, f"no heading {heading!r} in {DOCS.name}"
    rest = markdown[match.end() :]
    end = re.search(rf"^#{{1,{len(match.group(1))}}} ", rest, flags=re.M)
    return rest[: end.start()] if end else rest


def code_block(text: str, language: str) -> str:
    match = re.search(rf"^```{language}\n(.*?)^```$", text, flags=re.M | re.S)
    assert match, f"no {language} block"
    return match.group(1)


def recipe_code(name: str) -> str:
    """The recipe's main.js, as docs/CLIENT.md has it."""
    return code_block(section(DOCS.read_text(encoding="utf-8"), name), "js")


def recipe_page(name: str) -> str:
    """The recipe's index.html: its own, or the one "Installing it" shows."""
    markdown = DOCS.read_text(encoding="utf-8")
    for where in (name, "Installing it"):
        if "```html" in section(markdown, where):
            return code_block(section(markdown, where), "html")
    raise AssertionError("no page in the docs")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the server serves: each recipe's page in recipe/NAME/ (index.html and
    the bundle, main.js)."""
    work = tmp_path_factory.mktemp("recipes")
    out = subprocess.run(
        [str(ROOT / "scripts" / "build-static"), "--pack-client", str(work / "dist")],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    # Installed as npm installs it; the other packages (the editors, yjs, one copy of
    # each) come from scripts/frontend/node_modules through NODE_PATH.
    package = work / "node_modules" / "@collab" / "client"
    package.mkdir(parents=True)
    with tarfile.open(out.strip().splitlines()[-1]) as archive:
        for member in archive.getmembers():
            member.name = member.name.removeprefix("package/")
            archive.extract(member, package, filter="data")

    site = work / "site"
    (site / "recipe").mkdir(parents=True)
    for name in RECIPES:
        folder = work / name
        folder.mkdir()
        (folder / "main.js").write_text(recipe_code(name), encoding="utf-8")
        # The docs' command: npx esbuild main.js --bundle --format=esm --outfile=dist/main.js
        subprocess.run(
            [
                str(NODE_MODULES / ".bin" / "esbuild"),
                "main.js",
                "--bundle",
                "--format=esm",
                "--log-level=warning",
                "--outfile=dist/main.js",
            ],
            cwd=folder,
            check=True,
            timeout=120,
            env={**os.environ, "NODE_PATH": str(NODE_MODULES)},
        )
        (folder / "dist" / "index.html").write_text(recipe_page(name), encoding="utf-8")
        (folder / "dist").rename(site / "recipe" / name)
    return site


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory, site: Path) -> Iterator[Backend]:
    """A server without access tokens, as the recipes connect, serving `site`: the page
    and its /ws share a host (Chromium refuses a page that is not served from this
    machine a connection to it)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("tests.browser.Settings", functools.partial(Settings, static_dir=str(site)))
        backend = Backend(tmp_path_factory.mktemp("server"), secret=None)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from browser_fixture()


def open_recipe(browser: Any, backend: Backend, recipe: str, console: Console) -> Any:
    """The recipe's page in a browser of its own (its own IndexedDB)."""
    context = browser.new_context()
    context.set_default_timeout(30_000)  # two test workers share 2 cores
    page = console.watch(context.new_page())
    page.goto(f"{backend.url}/recipe/{recipe}/")
    return page


def stored(backend: Backend, doc: str, root: str) -> str:
    try:
        content = backend.api(f"/api/documents/{urllib.parse.quote(doc, safe='')}")["content"]
    except Exception:  # not stored yet: 404
        return ""
    return json.dumps(content.get(root, ""))


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_two_browsers_edit_one_document_live_through_the_recipe(
    recipe: str, site: Path, backend: Backend, browser: Any
) -> None:
    editable, root = RECIPES[recipe]
    doc = re.search(r'new DocumentProvider\(client, "([^"]+)"', recipe_code(recipe))
    assert doc, "the recipe names its document"
    console = Console()
    pages = [open_recipe(browser, backend, recipe, console) for _ in range(2)]
    try:
        for page in pages:
            page.wait_for_selector(f"#editor {editable}[contenteditable=true]")
        for n, (typist, reader) in enumerate((pages, pages[::-1])):
            words = f"typed in browser {n + 1} with {recipe}"
            typist.click(f"#editor {editable}")
            typist.wait_for_function(
                "(sel) => document.activeElement?.closest(sel) !== null",
                arg=editable,
                polling=POLL_MS,
            )
            typist.keyboard.press("End")
            typist.keyboard.type(f" {words}")
            try:
                reader.wait_for_function(
                    "(words) => document.querySelector('#editor').innerText.includes(words)",
                    arg=words,
                    timeout=WITHIN_S * 1000,
                    polling=POLL_MS,
                )
            except Exception as error:
                texts = [
                    p.evaluate("() => document.querySelector('#editor').innerText") for p in pages
                ]
                raise AssertionError(
                    f"{words!r} did not cross: pages {texts!r}, stored"
                    f" {stored(backend, doc.group(1), root)}, console {console.problems()}"
                ) from error
        deadline = time.monotonic() + 10
        while not all(
            f"browser {n} with {recipe}" in stored(backend, doc.group(1), root) for n in (1, 2)
        ):
            assert time.monotonic() < deadline, stored(backend, doc.group(1), root)
            time.sleep(0.1)
        assert console.problems() == []
    finally:
        for page in pages:
            page.context.close()
