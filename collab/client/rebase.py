"""Carrying unacknowledged edits over to a document that was recreated.

When the server's document has a new epoch (it was deleted and recreated, or
restored from a backup), the client's copy cannot simply be merged into it: its
items have ids the new document does not know, so a merge would add the old
content a second time, and its unacknowledged edits cannot be sent as they are
either (Yjs integrates a client's edits only after all its earlier ones, which
the new document lacks). So the client rebases: what its edits changed, from the
state the server had acknowledged (``base``) to its own copy (``mine``), is made
again, as new edits, on the server's document (``theirs``).

Root Text, Map and Array types are carried over (a three-way merge by value:
text by characters, arrays by elements, maps by key); formatting of text,
nested shared types inside map values and array elements (carried as plain
values), and XML fragments are not. Such roots are reported, not guessed.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from typing import Any

import pycrdt

from collab.wire.edits import made_on, splice_text
from collab.wire.yformat import ARRAY, MAP, TEXT, FormatError, root_types


def rebase(base: pycrdt.Doc, mine: pycrdt.Doc, theirs: pycrdt.Doc) -> list[str]:
    """Apply to ``theirs``, as one update, what changed from ``base`` to ``mine``.
    Returns the names of roots whose changes could not be carried.

    The changes are made on a copy of ``theirs``, with its client id, each a
    transaction of its own (collab.wire.edits.made_on: pycrdt merges the values
    one transaction inserts at a cost that grows with the square of their number),
    then applied to ``theirs`` at once."""
    try:
        kinds = root_types(mine.get_update())
    except FormatError:
        return ["(the whole document)"]
    work = pycrdt.Doc(client_id=theirs.client_id)
    work.apply_update(theirs.get_update())
    skipped: list[str] = []

    def carry() -> None:
        for name, kind in sorted(kinds.items()):
            if kind == TEXT:
                _text(base, mine, work, name)
            elif kind == MAP:
                _map(base, mine, work, name)
            elif kind == ARRAY:
                _array(base, mine, work, name)
            elif _changed(base, mine, name):
                skipped.append(name)

    update = made_on(work, carry)
    if update is not None:
        theirs.apply_update(update)
    return skipped


def _changed(base: pycrdt.Doc, mine: pycrdt.Doc, name: str) -> bool:
    """Whether an XML root differs (compared as XML text)."""
    before = str(base.get(name, type=pycrdt.XmlFragment))
    return before != str(mine.get(name, type=pycrdt.XmlFragment))


def _text(base: pycrdt.Doc, mine: pycrdt.Doc, theirs: pycrdt.Doc, name: str) -> None:
    old = str(base.get(name, type=pycrdt.Text))
    new = str(mine.get(name, type=pycrdt.Text))
    if old == new:
        return
    target = theirs.get(name, type=pycrdt.Text)
    current = str(target)
    for start, end, replacement in reversed(_changes(old, new, current)):
        # From the end: the text before ``start`` is still ``current``'s.
        splice_text(target, current, start, end, "".join(replacement))


def _array(base: pycrdt.Doc, mine: pycrdt.Doc, theirs: pycrdt.Doc, name: str) -> None:
    old = [_key(v) for v in base.get(name, type=pycrdt.Array).to_py() or []]
    values = list(mine.get(name, type=pycrdt.Array).to_py() or [])
    new = [_key(v) for v in values]
    if old == new:
        return
    target = theirs.get(name, type=pycrdt.Array)
    current = [_key(v) for v in target.to_py() or []]
    by_key = dict(zip(new, values, strict=True))
    for start, end, replacement in reversed(_changes(old, new, current)):
        for _ in range(end - start):
            del target[start]
        for offset, key in enumerate(replacement):
            target.insert(start + offset, by_key[key])


def _map(base: pycrdt.Doc, mine: pycrdt.Doc, theirs: pycrdt.Doc, name: str) -> None:
    old = base.get(name, type=pycrdt.Map).to_py() or {}
    new = mine.get(name, type=pycrdt.Map).to_py() or {}
    target = theirs.get(name, type=pycrdt.Map)
    for key, value in new.items():
        if key not in old or _key(old[key]) != _key(value):
            target[key] = value
    for key in old.keys() - new.keys():
        if key in target:
            del target[key]


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=repr)


def _changes(
    old: Sequence[Any], new: Sequence[Any], current: Sequence[Any]
) -> list[tuple[int, int, Sequence[Any]]]:
    """The edits that turn ``old`` into ``new``, as ``(start, end, replacement)``
    in ``current``'s positions (``current`` being ``old`` as others changed it),
    in increasing order. Where others changed the very span an edit replaces,
    the edit still applies at the span's mapped ends: both changes are kept."""
    mapping = _position_map(old, current)
    changes = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(
        None, old, new, autojunk=False
    ).get_opcodes():
        if tag == "equal":
            continue
        start, end = mapping(i1), mapping(i2)
        changes.append((start, max(start, end), new[j1:j2]))
    return changes


def _position_map(old: Sequence[Any], current: Sequence[Any]) -> Any:
    """A function from positions in ``old`` to positions in ``current``."""
    blocks = difflib.SequenceMatcher(None, old, current, autojunk=False).get_matching_blocks()

    def mapped(position: int) -> int:
        previous_end = 0  # in current, where the last matching block ended
        for a, b, size in blocks:
            if position < a:
                return previous_end  # in a span others replaced: where it starts
            if position <= a + size:
                return b + (position - a)
            previous_end = b + size
        return len(current)

    return mapped
