"""Property: for random edits of a text by several authors and restores of earlier
versions, with snapshots taken
every few updates and thinned, and the history before the last snapshot dropped
(retention), GET .../authors at every version kept gives the same runs as
replaying every update from scratch and attributing each insertion to its
update's author."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pycrdt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tornado.httpclient import AsyncHTTPClient

from collab.app import CollabServer
from collab.client import CollabClient
from collab.config import Settings
from collab.store import UpdateRecord
from collab.wire.edits import splice_text

DOC = "authored"
AUTHORS = ("ann", "bob", "cem")

operations = st.one_of(
    st.tuples(
        st.just("insert"),
        st.integers(0, len(AUTHORS) - 1),
        st.integers(0, 1000),
        st.text(alphabet="ab é\n", min_size=1, max_size=4),
    ),
    st.tuples(
        st.just("delete"), st.integers(0, len(AUTHORS) - 1), st.integers(0, 1000), st.integers(1, 3)
    ),
    # A restore of an earlier version over HTTP: what it brings back is the restorer's.
    st.tuples(st.just("restore"), st.just(0), st.integers(0, 1000), st.none()),
)


def replayed(log: list[UpdateRecord]) -> list[list[tuple[str, str | None]]]:
    """The runs at every seq, from scratch: each update applied in turn to a fresh
    document, the characters each inserts attributed to its author."""
    doc = pycrdt.Doc()
    text = doc.get("text", type=pycrdt.Text)
    chars: list[tuple[str, str | None]] = []
    author: list[str | None] = [None]

    def after(at: int, count: int) -> int:
        """The index ``count`` bytes of UTF-8 on from ``at`` (pycrdt's deltas count
        bytes)."""
        while count > 0:
            count -= len(chars[at][0].encode())
            at += 1
        return at

    def observe(event: Any) -> None:
        at = 0
        for step in event.delta:
            if "retain" in step:
                at = after(at, step["retain"])
            elif "insert" in step:
                chars[at:at] = [(c, author[0]) for c in step["insert"]]
                at += len(step["insert"])
            elif "delete" in step:
                del chars[at : after(at, step["delete"])]

    text.observe(observe)
    versions = [[]]
    for record in log:
        author[0] = record.author.client
        doc.apply_update(record.data)
        runs: list[tuple[str, str | None]] = []
        for char, who in chars:
            if runs and runs[-1][1] == who:
                runs[-1] = (runs[-1][0] + char, who)
            else:
                runs.append((char, who))
        versions.append(runs)
    return versions


async def scenario(folder: Path, batch: list[Any], every: int, keep: int) -> None:
    configured = Settings(
        host="127.0.0.1",
        port=0,
        store_url=f"sqlite:///{folder}/collab.db",
        instance_id="property",
        snapshot_every_updates=every,
        snapshot_keep_recent=keep,
    )
    server = CollabServer(configured)
    await server.start()
    url = f"ws://127.0.0.1:{server.port}/ws"
    editors = [await CollabClient.connect(url, client_id=name) for name in AUTHORS]
    try:
        remotes = [await editor.subscribe(DOC) for editor in editors]
        http = AsyncHTTPClient()
        api = f"http://127.0.0.1:{server.port}/api/documents/{DOC}"
        for kind, who, where, what in batch:
            remote = remotes[who]
            if kind == "restore":
                if remote.seq <= 0:
                    continue
                response = await http.fetch(
                    f"{api}/restore",
                    method="POST",
                    body=json.dumps({"seq": where % (remote.seq + 1)}),
                )
                made = json.loads(response.body)["seq"]
                for other in remotes:
                    await other.wait_for(lambda o=other, h=made or 0: o.seq >= h)
                continue
            text = remote.doc.get("text", type=pycrdt.Text)
            current = str(text)
            if kind == "insert":
                at = where % (len(current) + 1)
                splice_text(text, current, at, at, what)
            elif current:
                at = where % len(current)
                splice_text(text, current, at, min(len(current), at + what), "")
            await remote.flushed()
            for other in remotes:  # each edit seen by all before the next
                await other.wait_for(lambda o=other, h=remote.seq: o.seq >= h)
        await server.rooms.writer.wait_idle(10)
        log = await server.store.read_updates(DOC)
        if not log:
            return
        expected = replayed(log)
        # The snapshots the writer made (thinned), and one at the head; then the
        # history before a kept snapshot dropped.
        await server.rooms.snapshots.write(DOC, len(log))
        seqs = await server.store.snapshot_seqs(DOC)
        pruned = seqs[len(seqs) // 2]
        await server.store.prune_history(DOC, pruned)
        base = f"{api}/authors"
        for seq in range(pruned, len(log) + 1):
            body = json.loads((await http.fetch(f"{base}?seq={seq}")).body)
            names = [a["client"] for a in body["authors"]]
            runs = body["roots"].get("text", {"runs": []})["runs"]
            got = [(r["text"], None if r["author"] is None else names[r["author"]]) for r in runs]
            assert got == expected[seq], f"seq {seq} (history kept from {pruned})"
    finally:
        for editor in editors:
            await editor.close()
        await server.stop()


@pytest.mark.slow  # 30 examples, a server each
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    batch=st.lists(operations, min_size=1, max_size=30),
    every=st.integers(2, 6),
    keep=st.integers(1, 3),
)
def test_the_authors_at_every_version_equal_replaying_the_log(tmp_path_factory, batch, every, keep):
    folder = tmp_path_factory.mktemp("authors")
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(scenario(folder, batch, every, keep))
    finally:
        loop.close()
