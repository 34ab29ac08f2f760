"""Property: for any edits by several clients on a Text, a Map and an Array, the
state the API gives at every seq equals a fresh document built from updates
1..seq of the log; across snapshots (taken every few updates and thinned) and a
server restart in the middle."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from unittest import mock

import pycrdt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tornado.httpclient import AsyncHTTPClient

from collab.app import CollabServer
from collab.client import CollabClient
from collab.config import Settings
from collab.core.render import content
from collab.web.budget import ExpensiveReads
from collab.wire.edits import splice_text
from collab.wire.yformat import decode_state_vector

DOC = "property"
CLIENTS = 3

positions = st.integers(min_value=0, max_value=1000)
words = st.text(alphabet="ab é😀\n", min_size=1, max_size=4)
values = st.one_of(
    st.integers(-5, 5), st.text(alphabet="xyz", max_size=3), st.none(), st.booleans()
)
clients = st.integers(0, CLIENTS - 1)
operations = st.one_of(
    st.tuples(st.just("text_insert"), clients, positions, words),
    st.tuples(st.just("text_delete"), clients, positions, st.integers(1, 3)),
    st.tuples(st.just("map_set"), clients, st.sampled_from("abc"), values),
    st.tuples(st.just("map_delete"), clients, st.sampled_from("abc"), st.none()),
    st.tuples(st.just("array_insert"), clients, positions, values),
    st.tuples(st.just("array_delete"), clients, positions, st.none()),
)


def apply(doc: pycrdt.Doc, operation: tuple[Any, ...]) -> None:
    kind, _, where, what = operation
    text = doc.get("text", type=pycrdt.Text)
    items = doc.get("items", type=pycrdt.Array)
    meta = doc.get("meta", type=pycrdt.Map)
    current = str(text)
    if kind == "text_insert":
        at = where % (len(current) + 1)
        splice_text(text, current, at, at, what)
    elif kind == "text_delete" and current:
        at = where % len(current)
        splice_text(text, current, at, min(len(current), at + what), "")
    elif kind == "map_set":
        meta[where] = what
    elif kind == "map_delete" and where in meta:
        del meta[where]
    elif kind == "array_insert":
        items.insert(where % (len(items) + 1), what)
    elif kind == "array_delete" and len(items):
        del items[where % len(items)]


async def edit(server: CollabServer, batch: list[tuple[Any, ...]]) -> None:
    url = f"ws://127.0.0.1:{server.port}/ws"
    editors = [await CollabClient.connect(url) for _ in range(CLIENTS)]
    try:
        remotes = [await editor.subscribe(DOC) for editor in editors]
        for operation in batch:
            remote = remotes[operation[1]]
            apply(remote.doc, operation)
            await remote.flushed()
            head = remote.seq
            for other in remotes:  # each edit seen by all before the next: a real history
                await other.wait_for(lambda o=other, h=head: o.seq >= h)
    finally:
        for editor in editors:
            await editor.close()


async def scenario(folder: Path, batch: list[Any], restart_at: int, every: int, keep: int) -> None:
    configured = Settings(
        host="127.0.0.1",
        port=0,
        store_url=f"sqlite:///{folder}/collab.db",
        instance_id="property",
        snapshot_every_updates=every,
        snapshot_keep_recent=keep,
    )
    first = CollabServer(configured)
    await first.start()
    try:
        await edit(first, batch[:restart_at])
    finally:
        await first.stop()
    server = CollabServer(configured)
    await server.start()
    try:
        await edit(server, batch[restart_at:])
        await server.rooms.writer.wait_idle(10)
        log = await server.store.read_updates(DOC)
        assert [r.seq for r in log] == list(range(1, len(log) + 1))
        if not log:  # nothing changed anything: no document was created
            assert await server.store.get_document(DOC) is None
            return
        http = AsyncHTTPClient()
        fresh = pycrdt.Doc()
        base = f"http://127.0.0.1:{server.port}/api/documents/{DOC}"
        for seq in range(len(log) + 1):
            if seq:
                fresh.apply_update(log[seq - 1].data)
            expected = content(fresh.get_update())[1]
            state = (await http.fetch(f"{base}/state?seq={seq}")).body
            rebuilt = pycrdt.Doc()
            rebuilt.apply_update(state)
            # Encoded state vectors list clients in no fixed order: compare them decoded.
            assert decode_state_vector(rebuilt.get_state()) == decode_state_vector(
                fresh.get_state()
            ), f"seq {seq}"
            assert content(state)[1] == expected, f"seq {seq}"
            version = json.loads((await http.fetch(f"{base}/versions/{seq}")).body)
            assert (version["seq"], version["content"]) == (seq, expected), f"seq {seq}"
    finally:
        await server.stop()


@pytest.mark.slow  # 40 examples, each on two servers started in turn
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    batch=st.lists(operations, min_size=1, max_size=30),
    restart=st.floats(0, 1),
    every=st.integers(2, 6),
    keep=st.integers(1, 3),
)
def test_the_state_at_every_seq_equals_replaying_the_log(
    tmp_path_factory, batch, restart, every, keep
):
    folder = tmp_path_factory.mktemp("property")
    # A loop of its own, left out of the thread's current loop (asyncio.run would
    # reset that, and drop the test runner's).
    loop = asyncio.new_event_loop()
    # The versions are rebuilt by the same functions on the loop's threads, not in
    # worker processes: each of the some 800 reads waited 15 ms or more on a worker
    # (niced, so longer on a busy machine), 70% of the test's time; the workers are
    # what tests/test_history_api.py and tests/test_read_budgets.py read through.
    on_threads = mock.patch.object(ExpensiveReads, "executor", property(lambda _: None))
    try:
        with on_threads:
            loop.run_until_complete(scenario(folder, batch, int(len(batch) * restart), every, keep))
    finally:
        loop.close()
