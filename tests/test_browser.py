"""The page and its browser client in a real browser (Debian's Chromium, headless,
driven by Playwright): several tabs and users editing one document, a cut network,
edits made offline in a tab that is then closed, presence across tabs, reload,
history and restore. Screenshots go to test-artifacts/screenshots/."""

from __future__ import annotations

import re
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser import (
    EDITOR_TEXT,
    POLL_MS,
    SCREENSHOTS,
    Backend,
    Console,
    browser_fixture,
    skip_unless_browser,
)

pytestmark = [skip_unless_browser(), pytest.mark.slow]  # a real browser: seconds a test

WITHIN_S = 1.0  # what a user in another tab or browser waits for an edit (page clocks)
# What a test waits for something that must arrive: generous, since two test workers
# share 2 cores; how fast an edit crosses is measured by the pages themselves.
ARRIVES_S = 15.0


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    backend = Backend(tmp_path_factory.mktemp("browser"))
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def open_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """A server without access tokens: everyone is a guest."""
    backend = Backend(tmp_path_factory.mktemp("open"), secret=None)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from browser_fixture()


@pytest.fixture
def console() -> Console:
    return Console()


@pytest.fixture
def contexts(browser: Any) -> Iterator[list[Any]]:
    """Browser contexts (one each per user: storage of their own), closed after."""
    opened: list[Any] = []
    yield opened
    for context in opened:
        context.close()


class User:
    """One person's browser: a context with a token, and its tabs."""

    def __init__(
        self,
        browser: Any,
        backend: Backend,
        console: Console,
        contexts: list[Any],
        name: str,
        docs: dict[str, str],
        *,
        through_proxy: bool = False,
        viewport: dict[str, int] | None = None,
    ) -> None:
        self.backend = backend
        self.console = console
        self.name = name
        self.token = backend.token(name, docs)
        self.through_proxy = through_proxy
        self.context = browser.new_context(viewport=viewport or {"width": 1100, "height": 700})
        self.context.set_default_timeout(10_000)
        contexts.append(self.context)

    def open(self, doc: str, *, wait_synced: bool = True) -> Any:
        page = self.console.watch(self.context.new_page())
        page.goto(
            self.backend.page_url(
                doc,
                self.token,
                through_proxy=self.through_proxy,
                name=None if self.token else self.name,  # a guest names themselves
            )
        )
        page.wait_for_selector("#editor .tiptap")
        if wait_synced:
            page.wait_for_selector('#connection[data-synced="true"]')
        return page


def text(page: Any) -> str:
    return page.evaluate(EDITOR_TEXT)


def wait_text(page: Any, predicate_js: str, arg: object, timeout_s: float = 10) -> None:
    page.wait_for_function(
        f"(arg) => {{ const text = ({EDITOR_TEXT})(); return text !== null && ({predicate_js}); }}",
        arg=arg,
        timeout=timeout_s * 1000,
        polling=POLL_MS,
    )


def wait_contains(page: Any, needle: str, timeout_s: float = 10) -> None:
    wait_text(page, "text.includes(arg)", needle, timeout_s)


# Whether the caret sits after the editor's last character (another user's caret, drawn
# in the text, aside), asked once the page has had its turn to take the key in.
CARET_AT_END = """async () => {
  for (let turn = 0; turn < 2; turn++) await new Promise((r) => setTimeout(r, 0));
  const selection = getSelection();
  const editor = document.querySelector('#editor .tiptap');
  if (!selection.isCollapsed || !editor?.contains(selection.focusNode)) return false;
  const rest = document.createRange();
  rest.setStart(selection.focusNode, selection.focusOffset);
  rest.setEndAfter(editor.lastChild);
  const after = rest.cloneContents();
  after.querySelectorAll('.collaboration-carets__caret').forEach((c) => c.remove());
  return after.textContent === '';
}"""


def caret_to_end(page: Any) -> None:
    page.locator("#editor .tiptap").focus()
    # The editor reads a caret moved by a key a moment later; a remote caret redrawing
    # the line before then puts the caret back where the editor last knew it. Press
    # again until the caret stays at the end.
    for _ in range(20):
        page.keyboard.press("Control+End")
        if page.evaluate(CARET_AT_END):
            break
    else:
        raise AssertionError("the caret did not stay at the end of the editor")


def type_at_end(page: Any, words: str) -> None:
    caret_to_end(page)
    page.keyboard.type(words)


def crossing_times(typist: Any, words: str, readers: list[Any]) -> list[float]:
    """Types `words` at the end of the typist's editor; for each reader, the seconds from
    the last keystroke to the words showing there, as the pages' clocks tell it (what
    the user sees, without the test's own round trips to a loaded browser)."""
    needle = words.strip()
    for reader in readers:
        reader.evaluate(
            f"""(needle) => {{
              window.arrivedAt = null;
              window.awaited = needle;
              if (window.watchingArrivals) return;
              window.watchingArrivals = true;
              const text = {EDITOR_TEXT};
              const seen = () => {{
                if (window.arrivedAt === null && (text() ?? '').includes(window.awaited)) {{
                  window.arrivedAt = Date.now();
                }}
              }};
              new MutationObserver(seen).observe(document.querySelector('#editor'),
                {{ subtree: true, childList: true, characterData: true }});
            }}""",
            needle,
        )
    typist.evaluate(
        "() => document.addEventListener('keydown', () => { window.keyAt = Date.now(); },"
        " { capture: true })"
    )
    type_at_end(typist, words)
    key_at = typist.evaluate("() => window.keyAt")
    times = []
    for reader in readers:
        wait_contains(reader, needle, ARRIVES_S)
        reader.wait_for_function("() => window.arrivedAt !== null", polling=POLL_MS)
        times.append((reader.evaluate("() => window.arrivedAt") - key_at) / 1000)
    return times


def wait_saved(page: Any, timeout_s: float = 10) -> None:
    page.wait_for_selector(
        '#connection[data-queued="0"][data-synced="true"]', timeout=timeout_s * 1000
    )


def wait_stored(backend: Backend, doc: str, expected: str, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while (stored := backend.stored_text(doc)) != expected:
        assert time.monotonic() < deadline, f"stored {stored!r}, expected {expected!r}"
        time.sleep(0.05)


def screenshot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


def test_typing_shows_in_another_tab_and_another_browser_within_a_second(
    browser: Any, backend: Backend, console: Console, contexts: list[Any]
) -> None:
    doc = "browser/typing"
    ann = User(browser, backend, console, contexts, "ann", {"browser/*": "write"})
    bob = User(browser, backend, console, contexts, "bob", {"browser/*": "write"})
    # Counts the edits each of Ann's tabs passes on to her other tabs.
    ann.context.add_init_script(
        "(() => { const post = BroadcastChannel.prototype.postMessage; window.relayed = 0;"
        " BroadcastChannel.prototype.postMessage = function (m) {"
        " if (m && m.type === 'update') window.relayed++; return post.call(this, m); }; })();"
    )
    ann1, ann2 = ann.open(doc), ann.open(doc)
    bob1 = bob.open(doc)

    # another tab of the same browser, and another browser
    times = crossing_times(ann1, "Hello from Ann.", [ann2, bob1])
    assert max(times) < WITHIN_S, times
    for page in (ann1, ann2):
        page.evaluate("() => { window.relayed = 0; }")
    times = crossing_times(bob1, " Bob here.", [ann1, ann2])
    assert max(times) < WITHIN_S, times
    # Bob's edits reach each of Ann's tabs from the server; one tab alone passes them
    # on to the others (for a tab offline or behind), not every tab.
    assert sorted(p.evaluate("() => window.relayed") for p in (ann1, ann2))[0] == 0
    times = crossing_times(ann2, " And Ann's second tab.", [ann1, bob1])
    assert max(times) < WITHIN_S, times

    for page in (ann1, ann2, bob1):
        wait_saved(page)
    expected = "Hello from Ann. Bob here. And Ann's second tab."
    assert [text(p) for p in (ann1, ann2, bob1)] == [expected] * 3
    wait_stored(backend, doc, expected)
    # The indicator shows the round trip of the heartbeat.
    ann1.wait_for_function(
        "() => /\\d+ ms/.test(document.querySelector('#connection').textContent)", polling=POLL_MS
    )
    bob1.locator("#editor .tiptap").focus()
    ann1.wait_for_selector("#editor .collaboration-carets__caret")
    screenshot(ann1, "editor-two-users.png")
    assert console.problems() == []


def test_a_browser_cut_off_and_back_converges_with_nothing_lost_or_doubled(
    browser: Any, backend: Backend, console: Console, contexts: list[Any]
) -> None:
    doc = "browser/cut"
    ann = User(browser, backend, console, contexts, "ann", {"browser/*": "write"})
    bob = User(
        browser, backend, console, contexts, "bob", {"browser/*": "write"}, through_proxy=True
    )
    ann1, bob1 = ann.open(doc), bob.open(doc)
    type_at_end(ann1, "Start.")
    wait_contains(bob1, "Start.")

    backend.run(backend.proxy.refuse)
    backend.run(backend.proxy.cut)
    bob.context.set_offline(True)
    bob1.wait_for_selector('#connection:not([data-state="online"]):not([data-state="syncing"])')
    type_at_end(ann1, " Ann online.")
    type_at_end(bob1, " Bob offline.")
    bob1.wait_for_selector('#connection:not([data-queued="0"])')
    time.sleep(0.3)  # Ann's edit must not reach Bob while he is cut off
    assert "Ann online." not in text(bob1)
    assert "Bob offline." not in text(ann1)

    backend.run(backend.proxy.accept)
    bob.context.set_offline(False)
    for page in (ann1, bob1):
        wait_text(page, "text.includes('Ann online.') && text.includes('Bob offline.')", None)
        wait_saved(page)
    final = text(ann1)
    assert text(bob1) == final
    assert final.count("Ann online.") == 1 and final.count("Bob offline.") == 1
    assert final.count("Start.") == 1
    wait_stored(backend, doc, final)
    assert console.problems(offline=True) == []


def test_a_connection_that_goes_silent_is_found_by_the_heartbeat_and_replaced(
    browser: Any, backend: Backend, console: Console, contexts: list[Any]
) -> None:
    doc = "browser/silent"
    nia = User(
        browser, backend, console, contexts, "nia", {"browser/*": "write"}, through_proxy=True
    )
    page = nia.open(doc)
    page.wait_for_selector('#connection[data-state="online"]')
    # A timeout of 2 s, not the page's 8: the same heartbeat, found out sooner.
    page.evaluate("() => { collab.client.options.heartbeatTimeoutMs = 2000; }")
    backend.run(backend.proxy.stall)  # bytes held, sockets open: a sleeping network
    try:
        type_at_end(page, "Said into the void.")
        # No pong within the heartbeat timeout: dropped, and reconnecting.
        page.wait_for_selector('#connection[data-state="reconnecting"]', timeout=12_000)
        assert page.get_attribute("#connection", "data-queued") != "0"
    finally:
        backend.run(backend.proxy.resume)
    wait_saved(page, timeout_s=15)
    wait_stored(backend, doc, "Said into the void.")
    assert console.problems(offline=True) == []


def test_a_late_heartbeat_timer_does_not_drop_a_healthy_connection(
    browser: Any, backend: Backend, console: Console, contexts: list[Any]
) -> None:
    page = User(browser, backend, console, contexts, "rex", {"browser/*": "write"}).open(
        "browser/heartbeat"
    )
    # Timers firing past the timeout, as in a throttled background tab.
    page.evaluate(
        "() => { const options = {heartbeatMs: 1200, heartbeatTimeoutMs: 1000};"
        " Object.assign(collab.client.options, options); collab.client._startHeartbeat(); }"
    )
    connections = page.evaluate("() => collab.client.connections")
    time.sleep(2.7)  # real time: two heartbeats fire, each past the timeout; none drops it
    assert page.evaluate("() => [collab.client.connections, collab.client.lastError]") == [
        connections,
        None,
    ]
    assert console.problems() == []


def test_edits_past_the_servers_frame_limit_are_sent_apart_or_refused_without_reconnecting(
    browser: Any, backend: Backend, console: Console, contexts: list[Any]
) -> None:
    doc = "browser/oversized"
    ola = User(browser, backend, console, contexts, "ola", {"browser/*": "write"})
    page = ola.open(doc)
    mib = 1024 * 1024
    # Three edits of 3 MiB made offline: together past the server's 8 MiB, each within.
    ola.context.set_offline(True)
    page.wait_for_selector('#connection[data-state="offline"]')
    page.evaluate(
        "mib => { const t = collab.provider.doc.getText('blob');"
        " for (const c of 'abc') t.insert(t.length, c.repeat(3 * mib)); }",
        mib,
    )
    ola.context.set_offline(False)
    wait_saved(page, timeout_s=30)
    stored = backend.api(f"/api/documents/{urllib.parse.quote(doc, safe='')}")["content"]
    assert stored["blob"] == "a" * 3 * mib + "b" * 3 * mib + "c" * 3 * mib
    connections = page.evaluate("() => collab.client.connections")

    # One edit of 9 MiB: refused here and undone; the connection stays.
    page.evaluate("mib => collab.provider.doc.getText('big').insert(0, 'x'.repeat(9 * mib))", mib)
    page.wait_for_selector("#banner:not([hidden])")
    assert "larger than the server accepts" in page.inner_text("#banner")
    page.wait_for_function("() => collab.provider.doc.getText('big').length === 0", polling=POLL_MS)
    type_at_end(page, "Still here.")
    wait_saved(page)
    wait_stored(backend, doc, "Still here.")
    assert page.evaluate("() => collab.client.connections") == connections
    assert console.problems(offline=True) == []


def test_edits_of_a_tab_closed_while_its_connection_was_down_are_sent_by_another_tab(
    browser: Any, backend: Backend, console: Console, contexts: list[Any]
) -> None:
    doc = "browser/closed-tab"
    sam = User(browser, backend, console, contexts, "sam", {"browser/*": "write"})
    gone, online = sam.open(doc), sam.open(doc)
    # The tab's connection drops; its next attempt is a minute away.
    gone.evaluate(
        "() => { Object.assign(collab.client.options, {backoffMinMs: 60000, backoffMaxMs: 60000});"
        " collab.client._drop('network blip'); }"
    )
    gone.wait_for_selector('#connection[data-state="reconnecting"]')
    type_at_end(gone, "Typed, then closed.")
    wait_contains(online, "Typed, then closed.", ARRIVES_S)
    gone.evaluate("() => collab.provider.whenPersisted()")
    gone.close()
    wait_stored(backend, doc, "Typed, then closed.", timeout_s=5)
    wait_saved(online)
    assert console.problems() == []


OUTBOX_ENTRIES = """doc => new Promise((resolve, reject) => {
  const open = indexedDB.open('collab-outbox');
  open.onerror = () => reject(open.error);
  open.onsuccess = () => {
    const all = open.result.transaction('entries').objectStore('entries').getAll();
    all.onsuccess = () => {
      resolve(all.result.filter((e) => e.doc === doc).length);
      open.result.close();
    };
  };
})"""


def test_edits_acknowledged_after_leaving_the_document_leave_the_outbox(
    browser: Any, backend: Backend, console: Console, contexts: list[Any]
) -> None:
    doc = "browser/left"
    tom = User(
        browser, backend, console, contexts, "tom", {"browser/*": "write"}, through_proxy=True
    )
    page = tom.open(doc)
    backend.run(backend.proxy.stall)  # the acks are held back
    try:
        type_at_end(page, "Typed, then left.")
        page.evaluate("() => collab.provider.whenPersisted()")
        page.click("a.back")  # (the list itself waits for the network)
        page.wait_for_function("() => document.title.startsWith('Documents')", polling=POLL_MS)
        assert page.evaluate(OUTBOX_ENTRIES, doc) > 0
    finally:
        backend.run(backend.proxy.resume)
    wait_stored(backend, doc, "Typed, then left.")
    deadline = time.monotonic() + 10
    while page.evaluate(OUTBOX_ENTRIES, doc) > 0:  # the acks that came after leaving
        assert time.monotonic() < deadline, "the outbox kept acknowledged edits"
        time.sleep(0.05)
    assert console.problems() == []


def test_edits_made_offline_reach_the_server_after_the_tab_was_closed_and_reopened(
    browser: Any, backend: Backend, console: Console, contexts: list[Any]
) -> None:
    doc = "browser/offline"
    cid = User(
        browser, backend, console, contexts, "cid", {"browser/*": "write"}, through_proxy=True
    )
    page = cid.open(doc)
    type_at_end(page, "Online first.")
    wait_saved(page)
    page.evaluate("() => navigator.serviceWorker.ready.then(() => true)")

    backend.run(backend.proxy.refuse)
    backend.run(backend.proxy.cut)
    cid.context.set_offline(True)
    type_at_end(page, " Written offline.")
    page.wait_for_selector('#connection:not([data-queued="0"])')
    # Left and opened again in the same tab: the edit is still counted as not saved.
    page.click("a.back")
    page.wait_for_selector("#list-status")
    page.go_back()
    wait_contains(page, "Written offline.")
    page.wait_for_selector('#connection:not([data-queued="0"])')
    page.evaluate("() => collab.provider.whenPersisted()")
    page.close()

    # Reopened without a network: the page comes from the service worker, the
    # document and the edit not yet saved from IndexedDB.
    page = cid.open(doc, wait_synced=False)
    wait_contains(page, "Online first. Written offline.")
    page.wait_for_selector('#connection:not([data-queued="0"])')
    assert page.get_attribute("#connection", "data-state") in {"offline", "reconnecting"}
    assert backend.stored_text(doc) == "Online first."

    backend.run(backend.proxy.accept)
    cid.context.set_offline(False)
    wait_saved(page)
    wait_stored(backend, doc, "Online first. Written offline.")
    assert console.problems(offline=True) == []


def test_tabs_of_one_browser_share_edits_and_cursors_while_offline(
    browser: Any, backend: Backend, console: Console, contexts: list[Any]
) -> None:
    doc = "browser/tabs-offline"
    max_ = User(
        browser, backend, console, contexts, "max", {"browser/*": "write"}, through_proxy=True
    )
    one, two = max_.open(doc), max_.open(doc)
    backend.run(backend.proxy.refuse)
    backend.run(backend.proxy.cut)
    max_.context.set_offline(True)
    for page in (one, two):
        page.wait_for_selector('#connection[data-state="offline"]')

    type_at_end(one, "Typed in tab one.")
    wait_contains(two, "Typed in tab one.", ARRIVES_S)
    # Tab two made no edit, but the document is not saved in this browser.
    two.wait_for_selector('#connection:not([data-queued="0"])', timeout=ARRIVES_S * 1000)
    assert "not saved yet" in two.inner_text("#connection")
    # Tab one's cursor shows in tab two where tab one left it, after its last word.
    two.wait_for_function(
        """() => {
          const label = [...document.querySelectorAll('#editor .collaboration-carets__label')]
            .find((l) => l.textContent === 'max');
          const caret = label?.closest('.collaboration-carets__caret');
          if (!caret) return false;
          const before = document.createRange();
          before.setStart(caret.parentElement, 0);
          before.setEndBefore(caret);
          const after = document.createRange();
          after.setStartAfter(caret);
          after.setEndAfter(caret.parentElement.lastChild);
          return before.toString() === 'Typed in tab one.' && after.toString() === '';
        }""",
        timeout=ARRIVES_S * 1000,
        polling=POLL_MS,
    )
    type_at_end(two, " And in tab two.")
    wait_contains(one, "And in tab two.", ARRIVES_S)

    backend.run(backend.proxy.accept)
    max_.context.set_offline(False)
    for page in (one, two):
        wait_saved(page)
    wait_stored(backend, doc, "Typed in tab one. And in tab two.")
    assert console.problems(offline=True) == []


def test_one_user_in_three_tabs_is_one_person_with_three_cursors(
    browser: Any, backend: Backend, console: Console, contexts: list[Any]
) -> None:
    doc = "browser/presence"
    dee = User(browser, backend, console, contexts, "dee", {"browser/*": "write"})
    eve = User(browser, backend, console, contexts, "eve", {"browser/*": "write"})
    viewer = eve.open(doc)
    type_at_end(viewer, "One two three four five six seven eight nine ten.")
    tabs = [dee.open(doc) for _ in range(3)]
    for i, tab in enumerate(tabs):
        wait_contains(tab, "ten.")
        tab.locator("#editor .tiptap").focus()
        tab.keyboard.press("Control+Home")
        for _ in range(4 + 8 * i):
            tab.keyboard.press("ArrowRight")

    people = viewer.locator("#presence li")
    dee_entry = viewer.locator('#presence li[data-user-id="dee"]')
    carets = viewer.locator("#editor .collaboration-carets__caret")
    viewer.wait_for_function(
        "() => document.querySelectorAll('#editor .collaboration-carets__caret').length === 3",
        polling=POLL_MS,
    )
    assert people.count() == 2  # eve and dee
    assert dee_entry.get_attribute("data-tabs") == "3"
    labels = carets.locator(".collaboration-carets__label").all_inner_texts()
    assert labels == ["dee"] * 3
    colours = {carets.nth(i).evaluate("c => c.style.borderColor") for i in range(3)}
    assert len(colours) == 1

    tabs[1].close()
    viewer.wait_for_function(
        "() => document.querySelectorAll('#editor .collaboration-carets__caret').length === 2",
        timeout=ARRIVES_S * 1000,
        polling=POLL_MS,
    )
    viewer.wait_for_selector(
        '#presence li[data-user-id="dee"][data-tabs="2"]', timeout=ARRIVES_S * 1000
    )
    # The other tabs of the same browser see their sibling's cursor go too: one of
    # dee's cursors is left there (and eve's).
    tabs[0].wait_for_function(
        "() => [...document.querySelectorAll('#editor .collaboration-carets__label')]"
        ".filter((l) => l.textContent === 'dee').length === 1",
        timeout=ARRIVES_S * 1000,
        polling=POLL_MS,
    )
    # Offline, only the tab itself can tell its siblings that it is gone (pagehide).
    dee.context.set_offline(True)
    tabs[0].wait_for_selector('#connection[data-state="offline"]')
    tabs[0].wait_for_function(
        "() => document.querySelectorAll('#editor .collaboration-carets__caret').length === 1",
        polling=POLL_MS,
    )
    tabs[2].close()
    tabs[0].wait_for_function(
        "() => document.querySelectorAll('#editor .collaboration-carets__caret').length === 0",
        timeout=ARRIVES_S * 1000,
        polling=POLL_MS,
    )
    dee.context.set_offline(False)
    assert console.problems(offline=True) == []


def test_reload_history_and_restore(
    browser: Any, backend: Backend, console: Console, contexts: list[Any]
) -> None:
    doc = "browser/history"
    fay = User(browser, backend, console, contexts, "fay", {"browser/*": "write"})
    gus = User(browser, backend, console, contexts, "gus", {"browser/*": "write"})
    fay1, fay2 = fay.open(doc), fay.open(doc)
    gus1 = gus.open(doc)
    type_at_end(fay1, "The first draft.")
    wait_saved(fay1)
    wait_contains(gus1, "The first draft.")
    type_at_end(gus1, " A second thought.")
    wait_saved(gus1)
    wait_contains(fay1, "second thought.")

    fay1.reload()
    fay1.wait_for_selector('#connection[data-synced="true"]')
    assert text(fay1) == "The first draft. A second thought."

    fay1.click("#history-open")
    fay1.wait_for_selector("#version .tiptap")
    slider = fay1.locator("#history-slider")
    head = int(slider.get_attribute("max"))
    assert slider.get_attribute("min") == "0"  # the empty document
    assert slider.input_value() == str(head)
    version = fay1.locator("#version .tiptap")
    # The newest version marks what its change (gus's sitting) did.
    fay1.wait_for_selector("#version .change-insert")
    assert "A second thought." in fay1.locator("#version .change-insert").all_inner_texts()[0]
    timeline = fay1.locator("#history-list li")
    assert timeline.count() == 3  # gus's change, fay's change, the start
    assert timeline.nth(0).inner_text().startswith("gus")
    # The slider goes through every version: one step back is one update back.
    slider.focus()
    fay1.keyboard.press("ArrowLeft")
    fay1.wait_for_function(
        "seq => document.querySelector('#version')?.dataset.seq === String(seq)",
        arg=head - 1,
        polling=POLL_MS,
    )
    assert version.inner_text().strip() == "The first draft. A second thought"
    # The timeline jumps to the end of fay's change.
    timeline.nth(1).locator("button").click()
    fay1.wait_for_function(
        "() => !document.querySelector('#version .tiptap').textContent.includes('second')",
        polling=POLL_MS,
    )
    assert version.inner_text().strip() == "The first draft."
    assert version.get_attribute("contenteditable") == "false"
    assert "fay" in fay1.inner_text("#history-label")
    screenshot(fay1, "history-panel.png")

    fay1.click("#history-restore")
    fay1.click("#history-restore-confirm")
    fay1.wait_for_selector("#editor .tiptap", state="visible")
    for page in (fay1, fay2, gus1):
        wait_text(page, "text === arg", "The first draft.")
    wait_stored(backend, doc, "The first draft.")

    # The restore is the newest version; what it took away shows struck through.
    fay1.click("#history-open")
    fay1.wait_for_selector("#version .change-delete")
    assert int(fay1.locator("#history-slider").get_attribute("max")) == head + 1
    assert "A second thought." in fay1.inner_text("#version .change-delete")
    fay1.keyboard.press("Escape")  # back to editing
    fay1.wait_for_selector("#editor .tiptap", state="visible")
    assert fay1.locator("#history").is_hidden()
    assert console.problems() == []


def test_guests_without_tokens_edit_see_each_other_and_go_back_in_history(
    browser: Any, open_backend: Backend, console: Console, contexts: list[Any]
) -> None:
    doc = "guests/notes"
    ann = User(browser, open_backend, console, contexts, "Ann", {})
    bob = User(browser, open_backend, console, contexts, "Bob", {})
    ann1, ann2, bob1 = ann.open(doc), ann.open(doc), bob.open(doc)
    type_at_end(ann1, "Guest text.")
    wait_contains(bob1, "Guest text.", ARRIVES_S)
    wait_saved(ann1)
    type_at_end(bob1, " More.")
    wait_contains(ann2, "More.", ARRIVES_S)
    wait_saved(bob1)
    bob1.wait_for_function(
        "() => document.querySelectorAll('#presence li').length === 2", polling=POLL_MS
    )
    names = bob1.locator("#presence li").evaluate_all("items => items.map(i => i.textContent)")
    assert sorted(names) == ["Ann \u00d72", "Bob (you)"]  # Ann, in two tabs
    assert ann1.locator("#user-name").input_value() == "Ann"
    # A new name reaches Ann's other tab, and Bob's view of both her carets.
    ann1.fill("#user-name", "Annabel")
    ann1.keyboard.press("Enter")
    ann2.wait_for_function(
        "() => document.querySelector('#user-name').value === 'Annabel'", polling=POLL_MS
    )
    ann2.locator("#editor .tiptap").focus()
    ann1.locator("#editor .tiptap").focus()
    bob1.wait_for_function(
        "() => { const labels = [...document.querySelectorAll("
        "'#editor .collaboration-carets__label')].map((l) => l.textContent);"
        " return labels.length === 2 && labels.every((l) => l === 'Annabel'); }",
        polling=POLL_MS,
    )

    # Every update is a version: the slider reaches the text before Bob typed.
    ann1.click("#history-open")
    ann1.wait_for_selector("#version .tiptap")
    states: list[str] = []
    ann1.on("request", lambda r: states.append(r.url) if "/state?" in r.url else None)
    slider = ann1.locator("#history-slider")
    slider.focus()
    for _ in range(len(" More.")):
        ann1.keyboard.press("ArrowLeft")
    ann1.wait_for_function(
        "() => document.querySelector('#version .tiptap').textContent === 'Guest text.'",
        polling=POLL_MS,
    )
    # Key presses in a row ask for the version the slider stops at, not each one.
    assert len(states) <= 2, states
    ann1.click("#history-restore")
    ann1.click("#history-restore-confirm")
    for page in (ann1, ann2, bob1):
        wait_text(page, "text === arg", "Guest text.")
    wait_stored(open_backend, doc, "Guest text.")
    assert console.problems() == []


def test_a_read_only_grant_shows_the_document_read_only(
    browser: Any, backend: Backend, console: Console, contexts: list[Any]
) -> None:
    doc = "browser/handbook"
    writer = User(browser, backend, console, contexts, "hal", {doc: "write"}).open(doc)
    type_at_end(writer, "Read me.")
    wait_saved(writer)
    reader = User(browser, backend, console, contexts, "ida", {doc: "read"}).open(doc)
    wait_contains(reader, "Read me.")
    editor = reader.locator("#editor .tiptap")
    assert editor.get_attribute("contenteditable") == "false"
    assert "read-only" in reader.inner_text("#connection")
    assert reader.locator("#role-note").is_visible()
    editor.click()
    reader.keyboard.type("not allowed")
    time.sleep(0.2)  # no ping to wait on in the page: time for a wrongly sent edit to land
    assert text(reader) == "Read me."
    assert backend.stored_text(doc) == "Read me."
    assert console.problems() == []


def test_edits_the_server_refuses_are_shown_refused_and_undone(
    browser: Any, backend: Backend, console: Console, contexts: list[Any]
) -> None:
    doc = "browser/revoked"
    pia = User(browser, backend, console, contexts, "pia", {doc: "write"})
    page = pia.open(doc)
    type_at_end(page, "Saved.")
    wait_saved(page)
    pia.context.set_offline(True)
    page.wait_for_selector('#connection[data-state="offline"]')
    type_at_end(page, " Written while I could.")
    # Meanwhile the grant became read-only: the edit is refused, not saved.
    page.evaluate(
        "token => { location.hash = `#/d/browser%2Frevoked?token=${token}`; }",
        backend.token("pia", {doc: "read"}),
    )
    pia.context.set_offline(False)
    page.wait_for_selector("#banner:not([hidden])")
    assert "not saved" in page.inner_text("#banner")
    # The copy is taken afresh from the server: the refused edit is gone from it.
    wait_text(page, "text === arg", "Saved.")
    wait_saved(page)
    page.reload()
    page.wait_for_selector('#connection[data-synced="true"]')
    assert text(page) == "Saved."
    assert backend.stored_text(doc) == "Saved."
    assert console.problems(offline=True) == []


def test_typing_faster_than_presence_may_be_sent_keeps_the_document_open_and_saved(
    browser: Any, backend: Backend, console: Console, contexts: list[Any]
) -> None:
    # Every keystroke moves the caret: hundreds a second, past the server's 30
    # presence updates a second, must neither close the document nor lose an edit.
    doc = "browser/fast-typist"
    ann = User(browser, backend, console, contexts, "ann", {"browser/*": "write"})
    bob = User(browser, backend, console, contexts, "bob", {"browser/*": "write"})
    typist, reader = ann.open(doc), bob.open(doc)
    words = " ".join(f"word{i}" for i in range(80))  # about 500 keystrokes
    type_at_end(typist, words)
    wait_saved(typist, ARRIVES_S)
    wait_contains(reader, "word79", ARRIVES_S)
    assert typist.get_attribute("#connection", "data-state") != "refused"
    wait_stored(backend, doc, words)
    # Presence still crosses: the typist's caret shows at the reader's.
    reader.wait_for_selector("#editor .collaboration-carets__caret", timeout=ARRIVES_S * 1000)
    assert console.problems() == []


def test_the_skip_link_the_quiet_indicator_and_a_link_with_another_users_token(
    browser: Any, backend: Backend, console: Console, contexts: list[Any]
) -> None:
    doc = "browser/a11y"
    uma = User(browser, backend, console, contexts, "uma", {"browser/*": "write"})
    page = uma.open(doc)
    # The skip link moves the focus to the content; it does not leave the document.
    page.focus("a.skip")
    page.keyboard.press("Enter")
    assert page.evaluate("() => document.activeElement.id") == "main"
    assert page.evaluate("() => collab.provider.destroyed") is False
    assert "#/d/" in page.url
    # Typing is not announced, edit by edit: the indicator is no live region, and the
    # announcements region only hears of changes of state.
    assert page.get_attribute("#connection", "aria-live") is None
    page.evaluate(
        "() => { window.announced = 0; new MutationObserver(() => window.announced++)"
        ".observe(document.querySelector('#announce'), {childList: true, characterData: true,"
        " subtree: true}); }"
    )
    type_at_end(page, "Quiet typing.")
    wait_saved(page)
    assert page.evaluate("() => window.announced") == 0
    # A link carrying another user's token asks before switching; declined, nothing
    # changes.
    asked: list[str] = []
    page.on("dialog", lambda d: (asked.append(d.message), d.dismiss()))
    other = backend.token("mallory", {"*": "write"})
    page.evaluate(
        "token => { location.hash = `#/d/browser%2Fa11y?token=${token}`; }",
        other,
    )
    page.wait_for_function("() => !location.hash.includes('token=')", polling=POLL_MS)
    assert len(asked) == 1 and "mallory" in asked[0]
    assert page.evaluate("() => localStorage.getItem('collab.token')") == uma.token
    assert page.evaluate("() => collab.client.user") == "uma"
    # A document the token does not open says so (it stayed at "Syncing…").
    page.evaluate("() => { location.hash = '#/d/secret%2Fplans'; }")
    page.wait_for_selector('#connection[data-state="refused"]')
    page.wait_for_selector("#token-dialog[open]")
    assert console.problems() == []


def test_a_document_deleted_on_the_server_starts_afresh_in_the_open_page(
    browser: Any, backend: Backend, console: Console, contexts: list[Any]
) -> None:
    doc = "browser/reset"
    kim = User(browser, backend, console, contexts, "kim", {"browser/*": "write"})
    page, other = kim.open(doc), kim.open(doc)  # two tabs: both move to the new generation
    type_at_end(page, "Old life.")
    wait_saved(page)
    wait_contains(other, "Old life.")
    epoch = page.evaluate("() => collab.provider.epoch")
    kim.context.set_offline(True)
    page.wait_for_selector('#connection[data-state="offline"]')
    type_at_end(page, " Unsaved.")

    backend.api(f"/api/documents/{urllib.parse.quote(doc, safe='')}", "DELETE")
    kim.context.set_offline(False)
    # A new generation: the copy is dropped, not merged into it.
    for tab in (page, other):
        tab.wait_for_function(
            "epoch => collab.provider.epoch !== epoch", arg=epoch, polling=POLL_MS
        )
        wait_text(tab, "text === ''", None)
    # The tab that held unsaved edits says so, and gives the old copy back.
    page.wait_for_selector("#recover:not([hidden])")
    assert re.search(r"Your \d+ unsaved edits? (is|are) not in it", page.inner_text("#recover"))
    with page.expect_download() as download:
        page.click("#recover-download")
    assert Path(download.value.path()).read_text() == "Old life. Unsaved."
    page.click("#recover-dismiss")
    page.wait_for_selector("#recover", state="hidden")
    type_at_end(page, "New life.")
    wait_saved(page)
    wait_contains(other, "New life.")
    type_at_end(other, " Both tabs.")
    wait_saved(other)
    wait_stored(backend, doc, "New life. Both tabs.")
    # What the browser keeps was replaced too.
    for tab in (page, other):
        tab.reload()
        tab.wait_for_selector('#connection[data-synced="true"]')
        assert text(tab) == "New life. Both tabs."
    assert console.problems(offline=True) == []


def test_a_document_named_like_another_documents_database_starts_empty(
    browser: Any, backend: Backend, console: Console, contexts: list[Any]
) -> None:
    doc = "browser/notes"
    mia = User(browser, backend, console, contexts, "mia", {"browser/*": "write"})
    page = mia.open(doc)
    type_at_end(page, "Private notes.")
    wait_saved(page)
    epoch = page.evaluate("() => collab.provider.epoch")
    # The local copy of "notes" at its epoch is not the copy of "notes@<epoch>".
    twin = f"{doc}@{epoch}"
    page.goto(backend.page_url(twin, mia.token))
    page.wait_for_selector('#connection[data-synced="true"]')
    wait_saved(page)
    assert text(page) == ""
    assert backend.stored_text(twin) == ""
    assert console.problems() == []


def test_a_large_document_arrives_in_parts(
    browser: Any, backend: Backend, console: Console, contexts: list[Any]
) -> None:
    doc = "browser/large"
    size = 3 * 1024 * 1024  # the server sends syncs past 1 MiB in parts
    backend.write_text(doc, "notes", "x" * size)
    page = User(browser, backend, console, contexts, "lea", {"browser/*": "write"}).open(doc)
    assert page.evaluate("() => collab.provider.syncParts") >= 3
    assert page.evaluate("() => collab.provider.doc.getText('notes').length") == size
    assert console.problems() == []


def test_without_a_token_the_page_asks_for_one(
    browser: Any, backend: Backend, console: Console, contexts: list[Any]
) -> None:
    kai = User(browser, backend, console, contexts, "kai", {"prompt/*": "write"})
    page = console.watch(kai.context.new_page())
    page.goto(backend.url + "/")
    page.wait_for_selector("#token-dialog[open]")
    assert page.evaluate("() => document.activeElement.id") == "token-input"
    # Modal: the page behind it cannot be reached.
    assert page.evaluate("() => document.querySelector('#token-dialog').matches(':modal')")
    page.keyboard.type(kai.token)
    page.keyboard.press("Enter")
    page.wait_for_selector("#token-dialog", state="hidden")
    page.wait_for_selector("#list-status:text('No documents yet')")
    # The one refusal the browser reports is the list asked for without a token.
    assert [text for _, text in console.problems()] == [
        "Failed to load resource: the server responded with a status of 401 (Unauthorized)"
    ]


def test_the_document_list_creates_opens_and_searches_on_a_phone(
    browser: Any, backend: Backend, console: Console, contexts: list[Any]
) -> None:
    jo = User(
        browser,
        backend,
        console,
        contexts,
        "jo",
        {"list/*": "write"},
        viewport={"width": 390, "height": 740},
    )
    page = console.watch(jo.context.new_page())
    page.goto(f"{backend.url}/#token={jo.token}")
    assert "token=" not in page.url  # taken out of the address bar
    page.wait_for_selector("#list-status")
    for name in ("list/alpha", "list/beta"):
        page.fill("#new-name", name)
        page.keyboard.press("Enter")  # keyboard only
        page.wait_for_selector('#connection[data-synced="true"]')
        type_at_end(page, f"Text of {name}.")
        wait_saved(page)
        page.click("a.back")
        page.wait_for_selector(f'#documents li[data-name="{name}"]')
    names = page.locator("#documents li").evaluate_all("items => items.map(i => i.dataset.name)")
    assert names == ["list/beta", "list/alpha"]  # recently changed first
    page.fill("#search", "alp")
    assert page.locator("#documents li").evaluate_all(
        "items => items.map(i => i.dataset.name)"
    ) == ["list/alpha"]
    page.click('#documents a:text("list/alpha")')
    wait_contains(page, "Text of list/alpha.")
    # Leaving a document and coming straight back subscribes it again.
    page.go_back()
    page.go_forward()
    page.wait_for_selector('#connection[data-synced="true"]')
    wait_contains(page, "Text of list/alpha.")
    type_at_end(page, " Again.")
    wait_saved(page)
    wait_stored(backend, "list/alpha", "Text of list/alpha. Again.")
    # Nothing wider than the phone's screen.
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    # The history, too: the version shown takes the screen's width, the panel below it.
    page.click("#history-open")
    page.wait_for_selector("#version .tiptap")
    assert page.evaluate(
        "() => document.querySelector('.editor-area').getBoundingClientRect().width"
        " >= 0.95 * document.querySelector('.doc-body').getBoundingClientRect().width"
    )
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    page.click("#history-close")
    assert console.problems() == []
    assert re.search(r"list/alpha", page.title())


# -- issue 28: the page as people use it ---------------------------------------------


def timeline_entries(page: Any) -> list[str]:
    return page.locator("#history-list li").evaluate_all(
        "items => items.map(i => i.querySelector('button').textContent)"
    )


def rect(page: Any, selector: str) -> dict[str, float]:
    return page.evaluate(
        "s => { const r = document.querySelector(s).getBoundingClientRect();"
        " return {top: r.top, bottom: r.bottom, left: r.left, right: r.right}; }",
        selector,
    )


def test_history_without_tokens_splits_per_guest_under_the_name_they_had(
    browser: Any, open_backend: Backend, console: Console, contexts: list[Any]
) -> None:
    doc = "guests/split"
    ann = User(browser, open_backend, console, contexts, "Ann", {})
    bob = User(browser, open_backend, console, contexts, "Bob", {})
    ann1, bob1 = ann.open(doc), bob.open(doc)
    type_at_end(ann1, "Ann wrote.")
    wait_saved(ann1)
    wait_contains(bob1, "Ann wrote.", ARRIVES_S)
    type_at_end(bob1, " Bob wrote.")
    wait_saved(bob1)
    wait_contains(ann1, "Bob wrote.", ARRIVES_S)
    # Ann renames herself: her next edits are Annabel's.
    ann1.fill("#user-name", "Annabel")
    ann1.keyboard.press("Enter")
    wait_saved(ann1)
    type_at_end(ann1, " Annabel wrote.")
    wait_saved(ann1)

    ann1.click("#history-open")
    ann1.wait_for_selector("#version .tiptap")
    ann1.wait_for_function(
        "() => document.querySelectorAll('#history-list li').length === 4", polling=POLL_MS
    )
    assert timeline_entries(ann1) == ["Annabel", "Bob", "Ann", "Start"]
    # Each version's label names who made that update, and no one else.
    label = ann1.inner_text("#history-label")
    assert "Annabel" in label and "Bob" not in label, label
    ann1.locator("#history-list li").nth(1).locator("button").click()
    ann1.wait_for_function(
        "() => document.querySelector('#history-label').textContent.includes('Bob')",
        polling=POLL_MS,
    )
    label = ann1.inner_text("#history-label")
    assert "Ann" not in label, label
    screenshot(ann1, "history-per-guest.png")
    assert console.problems() == []


def test_restore_is_asked_first_and_shown_to_who_restored_and_to_the_others(
    browser: Any, backend: Backend, console: Console, contexts: list[Any]
) -> None:
    doc = "browser/restore-asks"
    fay = User(browser, backend, console, contexts, "fay", {"browser/*": "write"})
    gus = User(browser, backend, console, contexts, "gus", {"browser/*": "write"})
    fay1, gus1 = fay.open(doc), gus.open(doc)
    type_at_end(fay1, "Keep this.")
    wait_saved(fay1)
    type_at_end(fay1, " Drop this.")
    wait_saved(fay1)
    wait_contains(gus1, "Drop this.", ARRIVES_S)

    fay1.click("#history-open")
    fay1.wait_for_selector("#version .tiptap")
    slider = fay1.locator("#history-slider")
    slider.focus()
    for _ in range(len(" Drop this.")):
        fay1.keyboard.press("ArrowLeft")
    fay1.wait_for_function(
        "() => document.querySelector('#version .tiptap')?.textContent === 'Keep this.'",
        polling=POLL_MS,
    )
    seq = int(slider.input_value())
    fay1.click("#history-restore")
    # Asked first: nothing changed yet, and cancelling changes nothing.
    fay1.wait_for_selector("#history-confirm", state="visible")
    assert f"version {seq}" in fay1.inner_text("#history-confirm-text")
    screenshot(fay1, "restore-confirm.png")
    fay1.click("#history-restore-cancel")
    assert fay1.locator("#history-confirm").is_hidden()
    assert backend.stored_text(doc) == "Keep this. Drop this."

    fay1.click("#history-restore")
    fay1.click("#history-restore-confirm")
    fay1.wait_for_selector("#editor .tiptap", state="visible")
    wait_stored(backend, doc, "Keep this.")
    # Fay sees what she did; Gus sees that she did it.
    fay1.wait_for_selector("#notice", state="visible")
    assert f"You restored version {seq}" in fay1.inner_text("#notice")
    gus1.wait_for_selector("#notice", state="visible", timeout=ARRIVES_S * 1000)
    assert f"fay restored version {seq}" in gus1.inner_text("#notice")
    wait_text(gus1, "text === arg", "Keep this.")
    screenshot(fay1, "restore-done.png")
    screenshot(gus1, "restore-seen-by-another.png")
    assert console.problems() == []


def test_the_formatting_toolbar_formats_and_says_what_applies(
    browser: Any, backend: Backend, console: Console, contexts: list[Any]
) -> None:
    doc = "browser/toolbar"
    hal = User(browser, backend, console, contexts, "hal", {"browser/*": "write"})
    page = hal.open(doc)
    toolbar = page.locator('[role="toolbar"][aria-label="Formatting"]')
    labels = toolbar.locator("button").evaluate_all(
        "bs => bs.map(b => [b.getAttribute('aria-label'), b.getAttribute('aria-pressed')])"
    )
    assert labels == [
        [name, "false"]
        for name in (
            "Bold",
            "Italic",
            "Heading 1",
            "Heading 2",
            "Bulleted list",
            "Numbered list",
            "Link",
            "Code",
        )
    ]
    type_at_end(page, "Title")
    page.click('button[aria-label="Heading 1"]')
    assert page.get_attribute('button[aria-label="Heading 1"]', "aria-pressed") == "true"
    page.keyboard.press("End")
    page.keyboard.press("Enter")
    page.click('button[aria-label="Bold"]')
    page.keyboard.type("strong")
    assert page.get_attribute('button[aria-label="Bold"]', "aria-pressed") == "true"
    page.click('button[aria-label="Bold"]')
    page.keyboard.press("Enter")
    page.click('button[aria-label="Bulleted list"]')
    page.keyboard.type("item")
    assert page.get_attribute('button[aria-label="Bulleted list"]', "aria-pressed") == "true"
    page.keyboard.press("Enter")
    page.keyboard.press("Enter")  # out of the list
    page.click('button[aria-label="Code"]')
    page.keyboard.type("x = 1")
    page.click('button[aria-label="Code"]')
    page.keyboard.press("Enter")
    page.once("dialog", lambda dialog: dialog.accept("https://example.com/"))
    page.click('button[aria-label="Link"]')
    page.wait_for_selector('#editor a[href="https://example.com/"]')
    wait_saved(page)
    editor = page.inner_html("#editor .tiptap")
    assert "<h1>Title</h1>" in editor
    assert "<strong>strong</strong>" in editor
    assert re.search(r"<ul><li><p>item</p></li></ul>", editor), editor
    assert "<code>x = 1</code>" in editor
    stored = backend.api(f"/api/documents/{urllib.parse.quote(doc, safe='')}")["content"]
    xml = stored["default"]
    for piece in ('<heading level="1">Title</heading>', "<bold>strong</bold>", "<bulletList>"):
        assert piece in xml, xml
    # One tab stop: the arrow keys go from button to button.
    page.focus('button[aria-label="Bold"]')
    page.keyboard.press("ArrowRight")
    assert page.evaluate("() => document.activeElement.getAttribute('aria-label')") == "Italic"
    screenshot(page, "toolbar.png")
    assert console.problems() == []


def colour_distance(a: str, b: str) -> float:
    rgb = [[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in (a, b)]
    return sum((x - y) ** 2 for x, y in zip(*rgb, strict=True)) ** 0.5


def test_presence_colours_stay_apart_and_labels_of_close_carets_do_not_overlap(
    browser: Any, backend: Backend, console: Console, contexts: list[Any]
) -> None:
    doc = "browser/colours"
    # Three users whose names hashed to near hues (magentas 340-346 degrees).
    users = [
        User(browser, backend, console, contexts, name, {"browser/*": "write"})
        for name in ("cid", "eve", "yan")
    ]
    cid, eve, yan = (u.open(doc) for u in users)
    type_at_end(cid, "abcdef")
    wait_saved(cid)
    for page, offset in ((eve, 1), (yan, 2)):
        wait_contains(page, "abcdef", ARRIVES_S)
        caret_to_end(page)
        for _ in range(offset):
            page.keyboard.press("ArrowLeft")
    # Cid sees eve's and yan's carets one and two letters before the end of her text.
    cid.wait_for_function(
        "() => document.querySelectorAll('#editor .collaboration-carets__label').length === 2",
        timeout=ARRIVES_S * 1000,
        polling=POLL_MS,
    )
    cid.wait_for_function(
        "() => document.querySelectorAll('#presence li').length === 3", polling=POLL_MS
    )
    # Found and read in one task of the page (a locator's evaluate_all finds, then
    # reads a step later, when a presence update may have drawn the list anew).
    dots = cid.evaluate(
        "() => [...document.querySelectorAll('#presence .dot')].map(d => {"
        " const [r, g, b] = getComputedStyle(d).backgroundColor"
        ".match(/\\d+/g).map(Number); return '#' + [r, g, b].map(v => v.toString(16)"
        ".padStart(2, '0')).join(''); })"
    )
    assert len(set(dots)) == 3
    assert min(colour_distance(a, b) for i, a in enumerate(dots) for b in dots[i + 1 :]) > 120, dots
    # Everyone gives each person the same colour.
    seen = [
        dict(
            p.locator("#presence li").evaluate_all(
                "ls => ls.map(l => [l.dataset.userId, l.querySelector('.dot').style.background])"
            )
        )
        for p in (cid, eve, yan)
    ]
    assert seen[0] == seen[1] == seen[2]
    cid.wait_for_timeout(100)  # the labels are spread at the next frame
    boxes = cid.evaluate(
        "() => [...document.querySelectorAll('#editor .collaboration-carets__label')]"
        ".map(l => { const r = l.getBoundingClientRect();"
        " return [r.left, r.top, r.right, r.bottom]; })"
    )
    (l1, t1, r1, b1), (l2, t2, r2, b2) = boxes
    assert not (l1 < r2 and l2 < r1 and t1 < b2 and t2 < b1), boxes
    screenshot(cid, "presence-colours.png")
    assert console.problems() == []


def test_on_a_phone_history_is_at_hand_with_restore_and_the_timeline_on_screen(
    browser: Any, backend: Backend, console: Console, contexts: list[Any]
) -> None:
    doc = "browser/phone-history"
    jo = User(
        browser,
        backend,
        console,
        contexts,
        "jo",
        {"browser/*": "write"},
        viewport={"width": 390, "height": 844},
    )
    backend.write_paragraphs(doc, [f"Line {i} of a long document." for i in range(40)])
    page = jo.open(doc)
    type_at_end(page, "The end.")
    wait_saved(page)
    # At the end of a tall document, History is on the screen.
    assert page.evaluate("() => window.scrollY") > 0
    history = rect(page, "#history-open")
    assert history["top"] >= 0 and history["bottom"] <= 844, history
    page.click("#history-open")
    page.wait_for_selector("#version .tiptap")
    page.locator("#history-list li").first.locator("button").wait_for()
    page.locator("#history-slider").focus()
    page.keyboard.press("ArrowLeft")
    page.wait_for_selector("#history-restore:not([disabled])")
    for selector in ("#history-slider", "#history-restore", "#history-list li"):
        box = rect(page, selector)
        assert box["top"] >= 0 and box["bottom"] <= 844, (selector, box)
    screenshot(page, "phone-history.png")
    page.screenshot(path=str(SCREENSHOTS / "phone-history-screen.png"))
    assert console.problems() == []


def test_the_token_dialog_says_why_each_time_and_closes_on_a_granted_document(
    browser: Any, backend: Backend, console: Console, contexts: list[Any]
) -> None:
    lea = User(browser, backend, console, contexts, "lea", {"granted/*": "write"})
    page = console.watch(lea.context.new_page())
    page.goto(backend.url + "/")
    page.wait_for_selector("#token-dialog[open]")
    first = page.inner_text("#token-reason")
    page.keyboard.type("not-a-token")
    page.keyboard.press("Enter")
    page.wait_for_function(
        "first => { const d = document.querySelector('#token-dialog');"
        " return d.open && document.querySelector('#token-reason').textContent !== first; }",
        arg=first,
        polling=POLL_MS,
    )
    assert "refused" in page.inner_text("#token-reason")
    assert page.locator("#token-input").input_value() == ""
    screenshot(page, "token-refused.png")
    page.keyboard.type(lea.token)
    page.keyboard.press("Enter")
    page.wait_for_selector("#token-dialog", state="hidden")
    page.wait_for_selector("#list-status")
    # A document the token does not open asks; going to one it does closes the dialog.
    page.evaluate("() => { location.hash = '#/d/secret%2Fplans'; }")
    page.wait_for_selector("#token-dialog[open]")
    assert "does not open" in page.inner_text("#token-reason")
    page.evaluate("() => { location.hash = '#/d/granted%2Fnotes'; }")
    page.wait_for_selector("#token-dialog", state="hidden")
    page.wait_for_selector('#connection[data-synced="true"]')
    assert [t for _, t in console.problems() if "401" not in t] == []


def test_a_tab_reloaded_offline_says_offline_like_the_other(
    browser: Any, backend: Backend, console: Console, contexts: list[Any]
) -> None:
    doc = "browser/offline-words"
    ivy = User(
        browser, backend, console, contexts, "ivy", {"browser/*": "write"}, through_proxy=True
    )
    one, two = ivy.open(doc), ivy.open(doc)
    type_at_end(one, "Saved.")
    wait_saved(one)
    one.evaluate("() => navigator.serviceWorker.ready.then(() => true)")
    backend.run(backend.proxy.refuse)
    backend.run(backend.proxy.cut)
    ivy.context.set_offline(True)
    two.wait_for_selector('#connection[data-state="offline"]')
    one.reload()
    one.wait_for_selector("#editor .tiptap")
    wait_contains(one, "Saved.")
    one.wait_for_selector('#connection[data-state="offline"]', timeout=ARRIVES_S * 1000)
    assert one.inner_text("#connection").startswith("Offline")
    assert two.inner_text("#connection").startswith("Offline")
    screenshot(one, "offline-reloaded.png")
    backend.run(backend.proxy.accept)
    ivy.context.set_offline(False)
    for page in (one, two):
        page.wait_for_selector('#connection[data-state="online"]', timeout=ARRIVES_S * 1000)
    assert console.problems(offline=True) == []


def test_a_named_version_is_listed_first_and_restored_by_another_user(
    browser: Any, backend: Backend, console: Console, contexts: list[Any]
) -> None:
    doc = "browser/named"
    kim = User(browser, backend, console, contexts, "kim", {"browser/*": "write"})
    lou = User(browser, backend, console, contexts, "lou", {"browser/*": "write"})
    kim1 = kim.open(doc)
    type_at_end(kim1, "The version sent.")
    wait_saved(kim1)
    kim1.click("#history-open")
    kim1.wait_for_selector("#version .tiptap")
    head = int(kim1.locator("#history-slider").get_attribute("max"))
    kim1.click("#history-name")
    kim1.fill("#history-name-input", "Sent to legal")
    kim1.keyboard.press("Enter")
    kim1.wait_for_selector("#history-list li.named")
    assert timeline_entries(kim1)[0] == "\u2605 Sent to legal"
    assert "Sent to legal" in kim1.inner_text("#history-label")
    kim1.wait_for_selector("#history-name-form", state="hidden")
    screenshot(kim1, "named-version.png")
    kim1.click("#history-close")
    type_at_end(kim1, " Later edits.")
    wait_saved(kim1)

    lou1 = lou.open(doc)
    lou1.click("#history-open")
    lou1.wait_for_selector("#history-list li.named")
    assert timeline_entries(lou1)[0] == "\u2605 Sent to legal"
    lou1.locator("#history-list li.named button").click()
    lou1.wait_for_function(
        "() => document.querySelector('#version .tiptap')?.textContent === 'The version sent.'",
        polling=POLL_MS,
    )
    assert lou1.locator("#history-slider").input_value() == str(head)
    lou1.click("#history-restore")
    lou1.click("#history-restore-confirm")
    for page in (kim1, lou1):
        wait_text(page, "text === arg", "The version sent.")
    wait_stored(backend, doc, "The version sent.")
    names = backend.api(f"/api/documents/{urllib.parse.quote(doc, safe='')}/names")["names"]
    assert [(n["seq"], n["name"], n["user"]) for n in names] == [(head, "Sent to legal", "kim")]
    assert console.problems() == []
