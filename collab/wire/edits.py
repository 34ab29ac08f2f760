"""Editing pycrdt shared types by content: make one document's roots say what
another's say, with as few changes as the content allows.

Used to restore an old version (a new edit that brings its content back) and to
carry a client's edits over to a reset document; :func:`made_on` records such
changes as one update, each a transaction of its own. Positions in text are Python
string positions (code points) here; pycrdt counts UTF-8 bytes, and a position
inside a character makes it edit elsewhere, so every text position is converted.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Sequence
from typing import Any, cast

import pycrdt

from collab.errors import InvalidUpdate
from collab.wire import crdt, yformat
from collab.wire.long_items import CutMeter
from collab.wire.replica import EMPTY_UPDATE
from collab.wire.ysplit import squash_runs

ROOT_CLASSES: dict[str, type[Any]] = {
    yformat.TEXT: pycrdt.Text,
    yformat.MAP: pycrdt.Map,
    yformat.ARRAY: pycrdt.Array,
    yformat.XML: pycrdt.XmlFragment,
}
CLOSE_COMPARISON_MAX = 4000  # characters or items compared closely (difflib) at most


def made_on(
    work: pycrdt.Doc, make: Callable[[], None], meter: CutMeter | None = None
) -> bytes | None:
    """What ``make`` changes on ``work``, as one update (None: nothing). Each of its
    pycrdt calls is a transaction of its own, their updates merged: pycrdt merges
    the items one transaction appends at a cost that grows with the square of
    their number (5,000 array values: 0.4 s and 600 MiB; 20,000: several GiB).
    The runs of items they make are written as two items each (squash_runs).
    ``meter``: what the transactions cost pycrdt in cuts is counted as they are
    made, and ``make`` is stopped with InvalidUpdate (``too_large``) past its
    budget: each transaction is made whole before it can be costed (``work`` is
    then left half changed)."""
    made: list[bytes] = []

    def record(event: pycrdt.TransactionEvent) -> None:
        made.append(event.update)
        if meter is not None:
            meter.add(event.update)  # raised once the transaction is made, by pycrdt

    subscription = work.observe(record)
    try:
        make()
    except* InvalidUpdate as refused:  # pycrdt groups what its observers raise
        raise _first(refused) from None
    finally:
        work.unobserve(subscription)
    made = [update for update in made if update != EMPTY_UPDATE]
    if not made:
        return None
    if len(made) == 1:
        return made[0]
    merged = crdt.merge(made)
    # Two items for each run of values, not one per value: what a server takes is
    # bounded in items (max_update_structs), not in values.
    return squash_runs(merged, yformat.check_update(merged)) or merged


def _first(group: BaseExceptionGroup[InvalidUpdate]) -> InvalidUpdate:
    """The first error of a group (groups nest; ``except*`` leaves only those)."""
    first: BaseException = group
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return cast(InvalidUpdate, first)


def utf8_offset(text: str, index: int) -> int:
    """pycrdt's position of ``text[index:]``."""
    return len(text[:index].encode("utf-8"))


def splice_text(target: pycrdt.Text, current: str, start: int, end: int, insert: str) -> None:
    """Replace ``current[start:end]`` (``current`` is what ``target`` says) with
    ``insert``; positions in code points."""
    at = utf8_offset(current, start)
    length = len(current[start:end].encode("utf-8"))
    if length:
        del target[at : at + length]
    if insert:
        target.insert(at, insert)


def key(value: Any) -> str:
    """A value's content as a comparable string (shared types by their content)."""
    return json.dumps(plain(value), sort_keys=True, default=repr)


def plain(value: Any) -> Any:
    """A shared type's content as plain Python values (formatting included)."""
    if isinstance(value, (pycrdt.Text, pycrdt.XmlText)):
        return {"text": value.diff()}
    if isinstance(value, (pycrdt.XmlFragment, pycrdt.XmlElement)):
        return {"xml": str(value)}
    if isinstance(value, pycrdt.Array):
        return [plain(item) for item in value]
    if isinstance(value, pycrdt.Map):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, bytearray):
        return bytes(value)
    return value


def shell(value: Any) -> Any:
    """What to insert for a copy of ``value``: an empty shared type of its kind
    (filled by :func:`fill` once it is in the document), or the plain value."""
    if isinstance(value, pycrdt.Text):
        return pycrdt.Text()
    if isinstance(value, pycrdt.XmlText):
        return pycrdt.XmlText()
    if isinstance(value, pycrdt.XmlElement):
        return pycrdt.XmlElement(value.tag, dict(value.attributes))
    if isinstance(value, pycrdt.Array):
        return pycrdt.Array()
    if isinstance(value, pycrdt.Map):
        return pycrdt.Map()
    if isinstance(value, bytearray):
        return bytes(value)
    return value


def fill(target: Any, source: Any) -> None:
    """Copy ``source``'s content into ``target``, an empty shared type of its kind
    that is part of a document."""
    if isinstance(source, (pycrdt.Text, pycrdt.XmlText)):
        at = 0
        for content, attrs in source.diff():
            if isinstance(content, str):
                target.insert(at, content, attrs)
                at += len(content.encode("utf-8"))
            else:
                target.insert_embed(at, content, attrs)
                at += 1
    elif isinstance(source, (pycrdt.XmlElement, pycrdt.XmlFragment)):
        for child in source.children:
            target.children.append(shell(child))
            fill(target.children[len(target.children) - 1], child)
    elif isinstance(source, pycrdt.Array):
        for item in source:
            target.append(shell(item))
            fill(target[len(target) - 1], item)
    elif isinstance(source, pycrdt.Map):
        for k, v in source.items():
            target[k] = shell(v)
            fill(target[k], v)


def make_equal(target: pycrdt.Doc, source: pycrdt.Doc, kinds: dict[str, str]) -> None:
    """Edit ``target``'s roots named in ``kinds`` until each says what ``source``'s
    says (a root ``source`` lacks is emptied)."""
    for name, kind in sorted(kinds.items()):
        cls = ROOT_CLASSES[kind]
        edit = _EDITORS[kind]
        edit(target.get(name, type=cls), source.get(name, type=cls))


def _text(target: pycrdt.Text, source: pycrdt.Text) -> None:
    wanted = source.diff()
    if target.diff() == wanted:
        return
    formatted = any(attrs or not isinstance(content, str) for content, attrs in wanted)
    formatted = formatted or any(
        attrs or not isinstance(content, str) for content, attrs in target.diff()
    )
    if formatted:  # formats and embeds come back whole: replace the text
        del target[0 : len(target)]
        fill(target, source)
        return
    current, new = str(target), str(source)
    for i1, i2, j1, j2 in reversed(_differences(current, new)):  # from the end: earlier
        splice_text(target, current, i1, i2, new[j1:j2])  # positions still hold


def _differences(old: Sequence[Any], new: Sequence[Any]) -> list[tuple[int, int, int, int]]:
    """Where ``old`` and ``new`` differ, as ``(i1, i2, j1, j2)``: ``old[i1:i2]``
    becomes ``new[j1:j2]``, in increasing order. Linear past the common prefix and
    suffix; what lies between is compared closely only while it is short (the
    close comparison takes quadratic time), else replaced whole."""
    start = 0
    limit = min(len(old), len(new))
    while start < limit and old[start] == new[start]:
        start += 1
    end_old, end_new = len(old), len(new)
    while end_old > start and end_new > start and old[end_old - 1] == new[end_new - 1]:
        end_old -= 1
        end_new -= 1
    if start == end_old and start == end_new:
        return []
    if max(end_old - start, end_new - start) > CLOSE_COMPARISON_MAX:
        return [(start, end_old, start, end_new)]
    matcher = difflib.SequenceMatcher(None, old[start:end_old], new[start:end_new], autojunk=False)
    return [
        (start + i1, start + i2, start + j1, start + j2)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes()
        if tag != "equal"
    ]


def _array(target: pycrdt.Array, source: pycrdt.Array) -> None:
    current = [key(item) for item in target]
    wanted = [key(item) for item in source]
    if current == wanted:
        return
    items = list(source)
    for i1, i2, j1, j2 in reversed(_differences(current, wanted)):
        if i2 > i1:
            del target[i1:i2]
        for offset, item in enumerate(items[j1:j2]):
            target.insert(i1 + offset, shell(item))
            fill(target[i1 + offset], item)


def _map(target: pycrdt.Map, source: pycrdt.Map) -> None:
    wanted = dict(source.items())
    for k in [k for k in target if k not in wanted]:
        del target[k]
    for k, v in wanted.items():
        if k not in target or key(target[k]) != key(v):
            target[k] = shell(v)
            fill(target[k], v)


def _xml(target: pycrdt.XmlFragment, source: pycrdt.XmlFragment) -> None:
    if str(target) == str(source):
        return
    count = len(target.children)
    if count:
        del target.children[0:count]
    fill(target, source)


_EDITORS: dict[str, Any] = {
    yformat.TEXT: _text,
    yformat.ARRAY: _array,
    yformat.MAP: _map,
    yformat.XML: _xml,
}
