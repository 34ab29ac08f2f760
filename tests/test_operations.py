"""What operators see: /metrics in Prometheus format (no per-document labels),
/readyz with the reason it is not ready (store, feed, feed lag), JSON log lines."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import pycrdt
import pytest
from prometheus_client import Counter
from prometheus_client.parser import text_string_to_metric_families

from collab.errors import StoreError
from collab.metrics import Metrics
from collab.store import FeedPosition, HeldDocuments, NewUpdate, UpdateRecord
from collab.store.memory import MemoryStore
from tests.helpers import SeqWatcher, http_get, wait_until
from tests.processes import server_process
from tests.yjs_peer import YjsPeer

DOC = "a-secret-document-name"


async def metrics(server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = await http_get(server, "/metrics")
    assert status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def text_update(client_id: int, text: str) -> bytes:
    doc = pycrdt.Doc(client_id=client_id)
    doc.get("text", type=pycrdt.Text).insert(0, text)
    return doc.get_update()


async def test_metrics_count_connections_updates_commits_and_acks_without_document_names(
    server,
):
    native = await SeqWatcher.join(server.port, "native", DOC)
    yjs = YjsPeer(f"ws://127.0.0.1:{server.port}/yjs/{DOC}")
    await yjs.reconnect()
    await yjs.synced()
    try:
        native.send(1, text_update(1, "from native"))
        await native.wait_for(lambda: 1 in native.acks)
        yjs.doc.get("text", type=pycrdt.Text).insert(0, "from yjs ")
        await native.wait_for(lambda: "from yjs" in native.text())

        values = await metrics(server)
        _, body = await http_get(server, "/metrics")
    finally:
        await native.close()
        await yjs.disconnect()

    assert values[("collab_connections", (("endpoint", "ws"),))] == 1
    assert values[("collab_connections", (("endpoint", "yjs"),))] == 1
    assert values[("collab_rooms", ())] == 1
    assert values[("collab_updates_in_total", (("endpoint", "ws"),))] == 1
    assert values[("collab_updates_in_total", (("endpoint", "yjs"),))] >= 1
    assert values[("collab_updates_out_total", ())] >= 2  # each peer got the other's
    assert values[("collab_commit_seconds_count", ())] >= 1
    assert values[("collab_commit_batch_updates_sum", ())] >= 2
    assert values[("collab_ack_seconds_count", ())] >= 2
    assert values[("collab_load_seconds_count", ())] == 1
    assert values[("collab_received_bytes_total", (("endpoint", "ws"),))] > 0
    assert values[("collab_sent_bytes_total", (("endpoint", "yjs"),))] > 0
    assert values[("collab_write_queue_updates", ())] == 0
    assert values[("collab_store_failing", ())] == 0
    assert values[("collab_feed_failing", ())] == 0
    assert DOC.encode() not in body


def test_the_counters_on_the_hot_path_are_exposed_as_counters_and_keep_their_names():
    metrics = Metrics()
    metrics.updates_in.labels("ws").inc()
    metrics.updates_out.inc(2)
    families = {f.name: f for f in text_string_to_metric_families(metrics.exposition().decode())}
    assert families["collab_updates_in"].type == "counter"
    values = {
        (s.name, tuple(s.labels.items())): s.value for s in families["collab_updates_in"].samples
    }
    assert values[("collab_updates_in_total", (("endpoint", "ws"),))] == 1
    assert values[("collab_updates_in_total", (("endpoint", "yjs"),))] == 0
    assert [
        s.value for s in families["collab_updates_out"].samples if s.name.endswith("_total")
    ] == [2]
    with pytest.raises(ValueError, match="Duplicated"):
        Counter("collab_sent_bytes", "another of the same name", registry=metrics.registry)
    with pytest.raises(ValueError):
        metrics.updates_in.inc()  # counted by endpoint
    with pytest.raises(ValueError):
        metrics.updates_out.labels("ws")  # no label


async def test_metrics_count_refused_updates_and_closes_by_code(server, raw):
    peer = await raw()
    await peer.hello()
    await peer.subscribe(DOC)
    peer.send({"type": "update", "doc": DOC, "ref": 1, "update": b"\x01\x02garbage"})
    assert (await peer.recv())["code"] == "invalid_update"
    peer.send_text("not binary")
    code, _ = await peer.closed()
    assert code == 1003

    values = await metrics(server)
    assert values[("collab_updates_refused_total", (("code", "invalid_update"),))] == 1
    assert values[("collab_closes_total", (("code", "1003"),))] == 1
    assert values[("collab_backpressure_closes_total", ())] == 0


class FailingFeedStore(MemoryStore):
    """A store whose feed cannot be followed (its writes work)."""

    def __init__(self) -> None:
        super().__init__()
        self.feed_works = False

    async def follow(
        self,
        after: FeedPosition,
        *,
        poll_s: float,
        exclude_instance: str | None = None,
        documents: HeldDocuments | None = None,
    ) -> AsyncIterator[tuple[FeedPosition, list[UpdateRecord]]]:
        if not self.feed_works:
            raise StoreError("the change stream is gone")
        async for batch in super().follow(
            after, poll_s=poll_s, exclude_instance=exclude_instance, documents=documents
        ):
            yield batch


@pytest.mark.allow_error_logs
async def test_readyz_is_503_with_the_reason_while_the_feed_fails(settings, start_server):
    store = FailingFeedStore()
    server = await start_server(settings.replace(store_url="memory://", feed_poll_s=0.01), store)
    await wait_until(lambda: server.rooms.feed_failure is not None)

    status, body = await http_get(server, "/readyz")
    reply = json.loads(body)
    assert status == 503
    assert reply["feed"] == "failing" and "change stream is gone" in reply["reason"]

    store.feed_works = True
    await wait_until(lambda: server.rooms.feed_failure is None, timeout_s=10)
    status, body = await http_get(server, "/readyz")
    assert status == 200 and json.loads(body)["reason"] is None


async def test_readyz_is_503_while_other_instances_commits_arrive_late(settings, start_server):
    store = MemoryStore()
    server = await start_server(
        settings.replace(store_url="memory://", feed_poll_s=0.01, feed_lag_limit_s=5.0), store
    )
    watcher = await SeqWatcher.join(server.port, "watcher", DOC)
    try:
        # Another instance's commits: one on time (the feed is followed), then one
        # accepted a minute ago that arrives only now.
        await store.append([NewUpdate(DOC, text_update(3, "on time"), time.time())])
        await watcher.wait_for(lambda: watcher.seqs[-1] == 1)
        await store.append([NewUpdate(DOC, text_update(4, "late"), time.time() - 60)])
        await watcher.wait_for(lambda: watcher.seqs[-1] == 2)

        status, body = await http_get(server, "/readyz")
        assert status == 503 and "late" in json.loads(body)["reason"]
        values = await metrics(server)
        assert values[("collab_feed_lag_seconds", ())] > 5

        await store.append([NewUpdate(DOC, text_update(5, "on time again"), time.time())])
        await watcher.wait_for(lambda: watcher.seqs[-1] == 3)
        status, _ = await http_get(server, "/readyz")
        assert status == 200
    finally:
        await watcher.close()


async def test_a_store_that_cannot_hold_the_largest_frame_refuses_to_start(settings, start_server):
    class SmallStore(MemoryStore):
        max_update_bytes = 4096

    with pytest.raises(ValueError, match="exceeds the largest update this store can hold"):
        await start_server(settings.replace(max_frame_bytes=8192), SmallStore())


async def test_json_logs_are_one_event_per_line(tmp_path):
    async with server_process(f"sqlite:///{tmp_path}/collab.db", "--log-format", "json") as server:
        await http_get(server, "/healthz")
        await wait_until(lambda: "/healthz" in server.log_text())  # its access log line
        lines = list(server.log)
    events = [json.loads(line) for line in lines]
    assert all(set(event) >= {"time", "level", "logger", "message"} for event in events)
    assert any(e["logger"] == "collab" and "listening on" in e["message"] for e in events)
    assert any(e["logger"] == "collab.access" and "/healthz" in e["message"] for e in events)
