"""Who wrote what and replay, in a real browser: two guests type, "Show authors"
colours each one's text with their name on hover, and the history panel replays
the document to its latest version and pauses. Screenshots go to
test-artifacts/screenshots/."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser import POLL_MS, Backend, Console, skip_unless_browser
from tests.test_browser import (  # noqa: F401  (fixtures used by name)
    ARRIVES_S,
    User,
    browser,
    console,
    contexts,
    open_backend,
    screenshot,
    type_at_end,
    wait_contains,
    wait_saved,
)

pytestmark = [skip_unless_browser(), pytest.mark.slow]


def test_authors_mode_colours_each_users_text_and_names_them_on_hover(
    browser: Any,  # noqa: F811
    open_backend: Backend,  # noqa: F811
    console: Console,  # noqa: F811
    contexts: list[Any],  # noqa: F811
) -> None:
    doc = "authors/two"
    ann = User(browser, open_backend, console, contexts, "Ann", {}).open(doc)
    bob = User(browser, open_backend, console, contexts, "Bob", {}).open(doc)
    type_at_end(ann, "Ann wrote this.")
    wait_contains(bob, "Ann wrote this.", ARRIVES_S)
    wait_saved(ann)
    type_at_end(bob, " Bob added that.")
    wait_contains(ann, "Bob added that.", ARRIVES_S)
    wait_saved(bob)

    ann.click("#authors-open")
    ann.wait_for_selector("#authors-view .by-author", timeout=ARRIVES_S * 1000)
    marks = ann.locator("#authors-view .by-author").evaluate_all(
        "spans => spans.map(s => [s.textContent, s.title, s.style.background])"
    )
    by_title = {}
    for text, title, colour in marks:
        by_title.setdefault(title, []).append((text, colour))
    assert set(by_title) == {"Written by Ann", "Written by Bob"}, marks
    assert "".join(t for t, _ in by_title["Written by Ann"]) == "Ann wrote this."
    assert "".join(t for t, _ in by_title["Written by Bob"]) == " Bob added that."
    colours = {title: {c for _, c in spans} for title, spans in by_title.items()}
    assert all(len(c) == 1 for c in colours.values()) and len(set().union(*colours.values())) == 2
    legend = ann.locator("#authors-legend li").all_text_contents()
    assert sorted(legend) == ["Ann", "Bob"]
    ann.locator("#authors-view .by-author", has_text="Bob").first.hover()
    screenshot(ann, "authors-mode.png")
    ann.click("#authors-open")  # back to editing
    ann.wait_for_selector("#editor .tiptap", state="visible")

    # The history slider's marks of Bob's change name him.
    ann.click("#history-open")
    ann.wait_for_selector("#version[data-authors='true'] .change-insert", timeout=ARRIVES_S * 1000)
    marked = ann.locator("#version .change-insert").evaluate_all(
        "spans => spans.map(s => [s.textContent, s.title])"
    )
    written: dict[str, str] = {}
    for text, title in marked:
        written[title] = written.get(title, "") + text
    # (Without tokens both guests' sittings may be one change: each part still
    # names its own writer.)
    assert written.get("Added by Bob") == " Bob added that.", marked
    assert set(written) <= {"Added by Ann", "Added by Bob"}, marked
    # Each writer's additions in a colour of their own, named in the panel.
    assert "added by Bob" in ann.locator("#history-authors li").all_text_contents()
    colours = ann.locator("#version .change-insert").evaluate_all(
        "spans => spans.map(s => [s.title, s.style.background])"
    )
    assert len({c for _, c in colours}) == len({t for t, _ in colours}), colours
    screenshot(ann, "history-marks-authors.png")
    assert console.problems() == []


def test_the_history_replays_to_the_latest_version_and_pauses(
    browser: Any,  # noqa: F811
    open_backend: Backend,  # noqa: F811
    console: Console,  # noqa: F811
    contexts: list[Any],  # noqa: F811
) -> None:
    doc = "authors/replay"
    ann = User(browser, open_backend, console, contexts, "Ann", {}).open(doc)
    for word in ("one", " two", " three"):
        type_at_end(ann, word)
    wait_saved(ann)
    ann.click("#history-open")
    ann.wait_for_selector("#version .tiptap", timeout=ARRIVES_S * 1000)
    head = int(ann.locator("#history-slider").get_attribute("max") or "0")
    assert head >= 3
    history: list[str] = []
    ann.on("request", lambda r: history.append(r.url) if "/history?" in r.url else None)
    ann.select_option("#history-speed", "64")
    ann.click("#history-play")  # from the start (the slider was at the latest version)
    ann.wait_for_function(
        "() => document.querySelector('#history-play').textContent === 'Play'"
        " && document.querySelector('.history-message').textContent.includes('latest')",
        timeout=ARRIVES_S * 1000,
        polling=POLL_MS,
    )
    assert ann.locator("#version").get_attribute("data-seq") == str(head)
    assert ann.locator("#version .tiptap").text_content() == "one two three"
    assert ann.locator("#history-slider").input_value() == str(head)
    assert history and all("include=update" in url and "limit=200" in url for url in history)
    screenshot(ann, "replay-end.png")

    # Played again from the start at 1x, and paused on the way.
    ann.locator("#history-slider").fill("0")
    ann.wait_for_function(
        "() => document.querySelector('#version').dataset.seq === '0'", polling=POLL_MS
    )
    ann.select_option("#history-speed", "1")
    ann.click("#history-play")
    ann.wait_for_function(
        "() => Number(document.querySelector('#version').dataset.seq) >= 2",
        timeout=ARRIVES_S * 1000,
        polling=POLL_MS,
    )
    ann.click("#history-play")  # pause
    ann.wait_for_function(
        "() => document.querySelector('.history-message').textContent.startsWith('Paused')",
        polling=POLL_MS,
    )
    paused = ann.locator("#version").get_attribute("data-seq")
    ann.wait_for_timeout(300)  # nothing moves while paused
    assert ann.locator("#version").get_attribute("data-seq") == paused
    assert int(paused or "0") < head or "latest" in ann.locator(".history-message").text_content()
    screenshot(ann, "replay-paused.png")
    assert console.problems() == []
