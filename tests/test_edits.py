"""Editing shared types by content (collab.wire.edits): a document made to say
what another says, for every root kind, with text outside ASCII; and a client's
text edits carried over a reset (collab.client.rebase) at the right places."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pycrdt
import pytest

from collab.client.rebase import rebase
from collab.core.render import content
from collab.wire import yformat
from collab.wire.edits import make_equal, splice_text


def copy(doc: pycrdt.Doc) -> pycrdt.Doc:
    other = pycrdt.Doc()
    other.apply_update(doc.get_update())
    return other


def old_version() -> pycrdt.Doc:
    doc = pycrdt.Doc()
    doc.get("text", type=pycrdt.Text).insert(0, "héllo 😀 wörld")
    doc.get("styled", type=pycrdt.Text).insert(0, "bold", {"bold": True})
    meta = doc.get("meta", type=pycrdt.Map)
    meta["title"] = "Plan"
    meta["nested"] = pycrdt.Map({"note": pycrdt.Text("inner ✓")})
    meta["list"] = pycrdt.Array([1, 2, 3])
    doc.get("items", type=pycrdt.Array).extend(["a", "b", pycrdt.Map({"k": "v"})])
    xml = doc.get("xml", type=pycrdt.XmlFragment)
    xml.children.append(pycrdt.XmlElement("p", {"class": "lead"}))
    paragraph = xml.children[0]
    paragraph.children.append(pycrdt.XmlText())
    paragraph.children[0].insert(0, "strong", {"bold": True})
    paragraph.children[0].insert(6, " é plain")
    return doc


def test_every_root_kind_comes_back_to_an_old_version() -> None:
    old = old_version()
    current = copy(old)
    text = current.get("text", type=pycrdt.Text)
    text.insert(len(text), " more ✓")
    del text[0:1]
    current.get("styled", type=pycrdt.Text).insert(0, "plain ")
    meta = current.get("meta", type=pycrdt.Map)
    meta["title"] = "Other"
    meta["added"] = True
    del meta["list"]
    items = current.get("items", type=pycrdt.Array)
    items.insert(1, "z")
    del items[0]
    current.get("xml", type=pycrdt.XmlFragment).children.append(pycrdt.XmlElement("h1"))
    current.get("later", type=pycrdt.Text).insert(0, "written after")
    state = current.get_state()
    kinds = {**yformat.root_types(current.get_update()), **yformat.root_types(old.get_update())}

    make_equal(current, old, kinds)

    _, restored = content(current.get_update())
    _, wanted = content(old.get_update())
    assert restored.pop("later") in ("", [])  # emptied: it did not exist then
    assert restored == wanted
    assert restored["xml"] == '<p class="lead"><bold>strong</bold> é plain</p>'
    # The change is one update that any replica of the current version can take.
    elsewhere = copy(old)
    elsewhere.apply_update(current.get_update(elsewhere.get_state()))
    assert content(elsewhere.get_update())[1] == content(current.get_update())[1]
    assert current.get_update(state)


def test_text_is_changed_where_it_differs_not_replaced() -> None:
    old = pycrdt.Doc()
    old.get("text", type=pycrdt.Text).insert(0, "ça va 😀 très bien")
    current = copy(old)
    current.get("text", type=pycrdt.Text).insert(0, "Oui, ")  # five ASCII characters
    state = current.get_state()

    make_equal(current, old, {"text": yformat.TEXT})

    assert str(current.get("text", type=pycrdt.Text)) == "ça va 😀 très bien"
    change = current.get_update(state)
    assert len(change) < 40  # a deletion of five characters, not the text again


def test_splice_counts_characters_not_bytes() -> None:
    doc = pycrdt.Doc()
    text = doc.get("text", type=pycrdt.Text)
    text.insert(0, "a😀é b")
    splice_text(text, str(text), 2, 3, "É")  # é -> É, after a four-byte character
    assert str(text) == "a😀É b"


def test_a_rebased_text_edit_lands_after_characters_outside_ascii() -> None:
    base = pycrdt.Doc()
    base.get("text", type=pycrdt.Text).insert(0, "héllo wörld")
    mine = copy(base)
    mine_text = mine.get("text", type=pycrdt.Text)
    mine_text.insert(len(mine_text), "!")  # at the end
    theirs = copy(base)
    theirs.get("text", type=pycrdt.Text).insert(0, "😀 ")

    assert rebase(base, mine, theirs) == []

    assert str(theirs.get("text", type=pycrdt.Text)) == "😀 héllo wörld!"


def test_numbers_json_cannot_hold_are_rendered_as_strings() -> None:
    doc = pycrdt.Doc()
    doc.get("values", type=pycrdt.Array).extend([float("nan"), float("inf"), 2.0, 2.5])
    _, rendered = content(doc.get_update())
    assert rendered["values"] == ["nan", "inf", 2, 2.5]


# What a write of many values, a restore of them, or a client's rebase of them runs:
# in a process of its own, so that its peak memory is its own. pycrdt merges the
# items one transaction appends at a cost that grows with the square of their
# number: 8,000 values in one took 1.3 s and 1.5 GB.
MANY_VALUES = """
import json, sys
import pycrdt
from collab.wire.edits import made_on
from collab.wire import edit_ops, edits, yformat

values = list(range(8000))
body = json.dumps({"edits": [{"op": "array.insert", "root": "a", "values": values}]})
work = pycrdt.Doc()
made = made_on(work, lambda: edit_ops.apply(work, edit_ops.parse(body.encode()), {}))
if sys.argv[1] == "restore":
    emptied = pycrdt.Doc()
    emptied.apply_update(work.get_update())
    emptied.get("a", type=pycrdt.Array).clear()
    kinds = yformat.root_types(work.get_update(), unknown_as=None)
    made = made_on(emptied, lambda: edits.make_equal(emptied, work, kinds))
    work = emptied
if sys.argv[1] == "rebase":  # a client's unacknowledged values, carried to a reset document
    from collab.client.rebase import rebase
    theirs = pycrdt.Doc()
    assert rebase(pycrdt.Doc(), work, theirs) == []
    work, made = theirs, theirs.get_update()
assert work.get("a", type=pycrdt.Array).to_py() == values
assert sum(map(len, yformat.check_update(made).groups)) <= 4  # a run: two items
# Its peak RSS (VmHWM, of this program: ru_maxrss keeps the peak of the process it
# was forked from, a test runner's worker).
status = open("/proc/self/status").read()
print(int(status.split("VmHWM:")[1].split()[0]) // 1024)
"""


@pytest.mark.parametrize("work", ["write", "restore", "rebase"])
def test_thousands_of_values_written_restored_or_rebased_cost_memory_in_proportion(work):
    ran = subprocess.run(
        [sys.executable, "-c", MANY_VALUES, work],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert int(ran.stdout) < 250  # MiB, at its peak: about 40 with the values
