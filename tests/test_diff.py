"""The diff's attribution (collab.core.diff): for any edits by several clients,
the runs kept in blocks give exactly the spans the plain list of characters the
diff first kept gave (that one cost an update at position p O(p) steps), and a
diff past its budget of steps is refused while it works."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pycrdt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collab.core import diff
from collab.core.diff import EMBED, Attribution, Span
from collab.core.limits import BudgetExceeded, ReadBudget
from collab.store import Author, UpdateRecord
from tests.helpers import typing_updates_at

CLIENTS = 3


# -- the reference: the diff's first attribution, a list of characters --------------------


@dataclass(slots=True)
class _Char:
    text: str
    size: int
    kind: str
    by: Attribution | None = None


def reference(state: bytes, updates: list[UpdateRecord], root: str) -> list[Span]:
    doc = pycrdt.Doc()
    doc.apply_update(state)
    text = doc.get(root, type=pycrdt.Text)
    chars = [_Char(c, len(c.encode()), "equal") for c in str(text)]
    deltas: list[Any] = []
    subscription = text.observe(lambda event: deltas.append(event.delta))
    for record in updates:
        deltas.clear()
        doc.apply_update(record.data)
        by = Attribution(
            record.seq,
            record.author.user,
            record.author.client,
            record.author.instance,
            diff._yjs_clients(record.data),
        )
        for delta in deltas:
            _walk(chars, delta, by)
    text.unobserve(subscription)
    return _spans(chars)


def _walk(chars: list[_Char], delta: list[dict[str, Any]], by: Attribution) -> None:
    i = 0

    def visible() -> None:
        nonlocal i
        while i < len(chars) and chars[i].kind == "delete":
            i += 1

    for op in delta:
        if "retain" in op:
            left = op["retain"]
            while left > 0 and i < len(chars):
                visible()
                if i == len(chars):
                    break
                left -= chars[i].size
                i += 1
        elif "insert" in op:
            visible()
            value = op["insert"]
            new = (
                [_Char(c, len(c.encode()), "insert", by) for c in value]
                if isinstance(value, str)
                else [_Char(EMBED, 1, "insert", by)]
            )
            chars[i:i] = new
            i += len(new)
        elif "delete" in op:
            left = op["delete"]
            while left > 0:
                visible()
                if i == len(chars):
                    break
                char = chars[i]
                left -= char.size
                if char.kind == "insert":
                    del chars[i]
                else:
                    char.kind, char.by = "delete", by
                    i += 1


def _spans(chars: list[_Char]) -> list[Span]:
    runs = diff._Runs("")
    runs.blocks = [[diff._Run(c.text, c.size, c.kind, c.by) for c in chars]]
    return diff._spans(runs)


# -- edits ----------------------------------------------------------------------------------

positions = st.integers(min_value=0, max_value=200)
words = st.text(alphabet="ab é😀\n", min_size=1, max_size=6)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("insert"), st.integers(0, CLIENTS - 1), positions, words),
        st.tuples(st.just("embed"), st.integers(0, CLIENTS - 1), positions, st.none()),
        st.tuples(st.just("delete"), st.integers(0, CLIENTS - 1), positions, st.integers(1, 9)),
    ),
    max_size=40,
)


def history(initial: str, ops: list[tuple[str, int, int, Any]]) -> tuple[bytes, list[UpdateRecord]]:
    """The state with ``initial`` typed, and the updates of ``ops``, each by one of
    the clients (who see each other's edits at once)."""
    docs = [pycrdt.Doc(client_id=100 + n) for n in range(CLIENTS)]
    texts = [d.get("text", type=pycrdt.Text) for d in docs]
    texts[0] += initial
    for other in docs[1:]:
        other.apply_update(docs[0].get_update())
    state = docs[0].get_update()
    records = []
    # What every client sees, one entry per character or embed (None), for the
    # offsets pycrdt counts: a character's UTF-8 bytes, an embed's one.
    units: list[str | None] = list(initial)
    for kind, who, position, value in ops:
        text = texts[who]
        at = min(position, len(units))

        def offset(index: int) -> int:
            return sum(1 if unit is None else len(unit.encode()) for unit in units[:index])

        before = docs[who].get_state()
        if kind == "insert":
            text.insert(offset(at), value)
            units[at:at] = list(value)
        elif kind == "embed":
            text.insert_embed(offset(at), {"image": "x.png"})
            units.insert(at, None)
        elif at < len(units):
            end = min(len(units), at + value)
            del text[offset(at) : offset(end)]
            del units[at:end]
        else:
            continue  # nothing to delete there
        update = docs[who].get_update(before)
        for n, other in enumerate(docs):
            if n != who:
                other.apply_update(update)
        author = Author(f"user{who}", f"client{who}", "test")
        records.append(UpdateRecord("doc", len(records) + 1, update, time.time(), author))
    return state, records


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(initial=st.text(alphabet="xyé😀", max_size=30), ops=operations)
def test_the_runs_in_blocks_attribute_exactly_as_the_list_of_characters(
    initial: str, ops: list[tuple[str, int, int, Any]]
) -> None:
    state, updates = history(initial, ops)
    expected = reference(state, updates, "text")
    assert diff._attribute(state, updates, "text") == expected
    # Runs and blocks so short that every edit cuts runs and blocks split and go.
    saved = diff.RUN_CHARS, diff.BLOCK_RUNS
    diff.RUN_CHARS, diff.BLOCK_RUNS = 1, 1
    try:
        assert diff._attribute(state, updates, "text") == expected
    finally:
        diff.RUN_CHARS, diff.BLOCK_RUNS = saved


def typed(count: int) -> tuple[bytes, list[UpdateRecord]]:
    """A text typed one character per update, each in the middle of what is there
    (for a list of characters walked from its start, half the text an update)."""
    updates = typing_updates_at([(i // 2, "abcdefghij"[(i + 1) % 10]) for i in range(count)])
    records = [
        UpdateRecord("doc", seq, data, 0.0, Author("ann")) for seq, data in enumerate(updates, 1)
    ]
    return pycrdt.Doc().get_update(), records


def test_the_steps_of_attributing_grow_with_the_updates_not_with_their_square() -> None:
    state, updates = typed(8000)
    small = diff._attributed(state, updates[:2000], "text").steps
    large = diff._attributed(state, updates, "text").steps
    # A list of characters: 16 times the steps for 4 times the updates (55 million
    # here). Runs in blocks: about 4 times (a little more: the tree grows deeper).
    assert large < 6 * small


def test_a_diff_past_its_cpu_time_is_refused_while_it_works() -> None:
    state, updates = typed(20_000)
    budget = ReadBudget(updates=10**9, bytes_=10**12, cpu_s=0.05, hint="narrow the range")
    started = time.thread_time()
    with pytest.raises(BudgetExceeded) as refused:
        diff._attribute(state, updates, "text", budget.cpu("a diff"))
    assert "max_read_cpu_s" in refused.value.message and "narrow the range" in refused.value.message
    assert time.thread_time() - started < 1.0  # stopped near its limit, not at the end (~3 s)
