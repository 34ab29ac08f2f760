"""What the browser tests share: a collab server and a cutting proxy running on an
event loop of their own (Playwright's sync API drives the browser from the test's
thread), Debian's Chromium driven by Playwright, and helpers that read a page."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pycrdt
import pytest

from collab.app import CollabServer
from collab.auth import Authenticator
from collab.client import CollabClient
from collab.config import Settings
from tests.proxy import Proxy

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
# A test's wait on a check in a page runs the check every 50 ms, not at every
# animation frame (Playwright's default): the checks read the whole editor, sixty
# times a second in each waiting tab, and a tab behind another gets about one frame
# a second.
POLL_MS = 50
SECRET = "browser-tests-secret-of-at-least-32-bytes"
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"

T = TypeVar("T")


def skip_reason() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        return (
            "Debian's chromium is not installed: the BROWSER TESTS ARE SKIPPED "
            "(scripts/test installs it when it runs as root with apt-get)"
        )
    return None


class Backend:
    """A collab server (access tokens on, unless ``secret`` is None) and a proxy in
    front of it, on a loop in a thread of their own."""

    def __init__(self, tmp: Path, secret: str | None = SECRET) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="backend", daemon=True)
        self._thread.start()
        self.settings = Settings(
            host="127.0.0.1",
            port=0,
            store_url=f"sqlite:///{tmp}/collab.db",
            instance_id="browser",
            auth_secret=secret or "",
        )
        self.auth = Authenticator(secret) if secret else None
        self.server = CollabServer(self.settings)
        self.call(self.server.start())
        self.proxy = self.call(Proxy(self.server.port).start())
        self.admin = self.token("admin", {"*": "write"})

    def call(self, coroutine: Coroutine[Any, Any, T], timeout_s: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    def run(self, function: Callable[[], object]) -> None:
        """Calls ``function`` on the backend's loop (the proxy is not thread-safe)."""
        done = threading.Event()

        def call() -> None:
            try:
                function()
            finally:
                done.set()

        self.loop.call_soon_threadsafe(call)
        assert done.wait(10)

    def close(self) -> None:
        async def shut_down() -> None:
            await self.proxy.close()
            await self.server.stop()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            await asyncio.sleep(0.05)  # aborted transports close their sockets
            await self.loop.shutdown_asyncgens()

        self.call(shut_down())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy.port}"

    def token(self, user: str, docs: dict[str, str]) -> str | None:
        return self.auth.issue(user, docs) if self.auth is not None else None

    def page_url(
        self, doc: str, token: str | None, *, through_proxy: bool = False, name: str | None = None
    ) -> str:
        base = self.proxy_url if through_proxy else self.url
        query = {k: v for k, v in (("token", token), ("name", name)) if v}
        suffix = f"?{urllib.parse.urlencode(query)}" if query else ""
        return f"{base}/#/d/{urllib.parse.quote(doc, safe='')}{suffix}"

    def api(self, path: str, method: str = "GET", body: object = None) -> Any:
        request = urllib.request.Request(
            self.url + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.admin}"} if self.admin else {},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def write_text(self, doc: str, root: str, text: str) -> None:
        """Inserts ``text`` into the Text ``root`` of ``doc`` with the Python client,
        and returns once it is stored."""

        async def write() -> None:
            client = await CollabClient.connect(
                f"ws://127.0.0.1:{self.server.port}/ws", token=self.admin or None
            )
            try:
                remote = await client.subscribe(doc)
                remote.doc.get(root, type=pycrdt.Text).insert(0, text)
                await remote.flushed()
            finally:
                await client.close()

        self.call(write())

    def write_paragraphs(self, doc: str, lines: list[str]) -> None:
        """Appends ``lines`` as paragraphs of the page's editor (the XmlFragment
        "default") with the Python client, and returns once they are stored."""

        async def write() -> None:
            client = await CollabClient.connect(
                f"ws://127.0.0.1:{self.server.port}/ws", token=self.admin or None
            )
            try:
                remote = await client.subscribe(doc)
                fragment = remote.doc.get("default", type=pycrdt.XmlFragment)
                with remote.doc.transaction():
                    for line in lines:
                        fragment.children.append(
                            pycrdt.XmlElement("paragraph", {}, [pycrdt.XmlText(line)])
                        )
                await remote.flushed()
            finally:
                await client.close()

        self.call(write())

    def stored_text(self, doc: str) -> str:
        """The document's text as the server stores it: its paragraphs, one a line
        ("" when nothing was ever written to it: reading does not create it)."""
        try:
            content = self.api(f"/api/documents/{urllib.parse.quote(doc, safe='')}")["content"]
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return ""
            raise
        xml = content.get("default", "")
        if not isinstance(xml, str):
            return ""
        paragraphs = re.findall(r"<paragraph>(.*?)</paragraph>", xml, flags=re.S)
        return "\n".join(re.sub(r"<[^>]+>", "", p) for p in paragraphs)


# The editor's text without the remote carets' labels: its paragraphs, one a line.
EDITOR_TEXT = """() => {
  const root = document.querySelector('#editor .tiptap');
  if (!root) return null;
  const copy = root.cloneNode(true);
  copy.querySelectorAll('.collaboration-carets__caret').forEach((c) => c.remove());
  return [...copy.children].map((p) => p.textContent).join('\\n');
}"""

# Network failures the browser itself reports on the console while a test keeps it
# offline on purpose; nothing else may appear there.
NETWORK_NOISE = re.compile(
    r"WebSocket connection to .* failed|net::ERR_|Failed to load resource|Failed to fetch"
)


@dataclass
class Console:
    """Every console message and page error of the pages a test opens."""

    messages: list[tuple[str, str]] = field(default_factory=list)

    def watch(self, page: Any) -> Any:
        page.on("console", lambda m: self.messages.append((m.type, m.text)))
        page.on("pageerror", lambda e: self.messages.append(("pageerror", str(e))))
        return page

    def problems(self, *, offline: bool = False) -> list[tuple[str, str]]:
        bad = [(t, text) for t, text in self.messages if t in {"error", "warning", "pageerror"}]
        if offline:
            bad = [(t, text) for t, text in bad if not NETWORK_NOISE.search(text)]
        return bad


def launch(playwright: Any, *args: str) -> Any:
    """Chromium, with ``args`` besides the usual ones."""
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM if CHROMIUM.exists() else shutil.which("chromium")),
        args=[*CHROMIUM_ARGS, *args],
        headless=True,
    )


def browser_fixture() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            yield browser
        finally:
            browser.close()


def skip_unless_browser() -> pytest.MarkDecorator:
    reason = skip_reason()
    if reason is not None:
        print(f"\n*** {reason} ***")
    return pytest.mark.skipif(reason is not None, reason=reason or "")
