"""What the server counts, for ``/metrics`` (Prometheus text format).

One :class:`Metrics` per server, on a registry of its own (several servers may run
in one process, as the tests do). No metric has a per-document label: a server
holds any number of documents, and a label per document would grow without bound.
Values that already live elsewhere (rooms, queue depth, feed lag) are read when
scraped, through :meth:`Metrics.observe`, rather than kept twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import CounterMetricFamily

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

ENDPOINTS = ("ws", "yjs")
LATENCY_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)


class Tally:
    """A counter on the path of every update and frame: a plain integer, added to
    on the event loop's thread only, read when scraped. A Prometheus Counter takes
    a lock on every increment (about 0.6 µs: 5 % of an update's delivery to each of
    50 peers)."""

    __slots__ = ("created_s", "value")

    def __init__(self) -> None:
        self.value = 0
        self.created_s = time.time()

    def inc(self, amount: int = 1) -> None:
        self.value += amount


class TallyFamily:
    """Tallies by one label (or none), exposed as a Prometheus counter family:
    ``labels(value)`` as a Counter's, ``inc`` on an unlabelled one."""

    def __init__(
        self, name: str, documentation: str, label: str | None, registry: CollectorRegistry
    ) -> None:
        self.name, self.documentation, self.label = name, documentation, label
        self._tallies: dict[str, Tally] = {}
        self._unlabelled = Tally()
        registry.register(self)  # type: ignore[arg-type]

    def labels(self, value: str) -> Tally:
        if self.label is None:
            raise ValueError(f"{self.name} has no label")
        tally = self._tallies.get(value)
        if tally is None:
            tally = self._tallies[value] = Tally()
        return tally

    def inc(self, amount: int = 1) -> None:
        if self.label is not None:
            raise ValueError(f"{self.name} is counted by {self.label}: use labels()")
        self._unlabelled.value += amount

    def describe(self) -> Iterator[CounterMetricFamily]:
        # What the registry checks names against: a second metric of this name is
        # refused, as for a Counter.
        yield self._family()

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = self._family()
        if self.label is None:
            family.add_metric([], self._unlabelled.value, created=self._unlabelled.created_s)
        for value, tally in self._tallies.items():
            family.add_metric([value], tally.value, created=tally.created_s)
        yield family

    def _family(self) -> CounterMetricFamily:
        labels = [self.label] if self.label is not None else []
        return CounterMetricFamily(self.name, self.documentation, labels=labels)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Gauge(
            "collab_connections", "Open WebSocket connections", ["endpoint"], registry=r
        )
        self.rooms = Gauge("collab_rooms", "Documents loaded on this instance", registry=r)
        self.handshakes = Gauge(
            "collab_handshakes",
            "Connections between their accept and the end of their handshake (max_handshakes)",
            registry=r,
        )
        self.updates_in = TallyFamily(
            "collab_updates_in", "Updates accepted from peers", "endpoint", r
        )
        self.updates_refused = Counter(
            "collab_updates_refused", "Updates refused, by error code", ["code"], registry=r
        )
        self.updates_out = TallyFamily(
            "collab_updates_out", "Update frames sent to peers (one per peer)", None, r
        )
        self.bytes_in = TallyFamily(
            "collab_received_bytes", "WebSocket message bytes received", "endpoint", r
        )
        self.bytes_out = TallyFamily(
            "collab_sent_bytes", "WebSocket message bytes sent", "endpoint", r
        )
        self.write_queue_updates = Gauge(
            "collab_write_queue_updates", "Updates waiting to be stored", registry=r
        )
        self.write_queue_bytes = Gauge(
            "collab_write_queue_bytes", "Bytes of updates waiting to be stored", registry=r
        )
        self.commit_seconds = Histogram(
            "collab_commit_seconds",
            "Time to store one batch",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.commit_batch_updates = Histogram(
            "collab_commit_batch_updates",
            "Updates per stored batch",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.ack_seconds = Histogram(
            "collab_ack_seconds",
            "From accepting an update to acknowledging it as stored",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.feed_lag_seconds = Gauge(
            "collab_feed_lag_seconds",
            "Age of the latest updates other instances' commits brought, on arrival",
            registry=r,
        )
        self.feed_failing = Gauge(
            "collab_feed_failing", "1 while the store's feed cannot be followed", registry=r
        )
        self.store_failing = Gauge(
            "collab_store_failing", "1 while writes to the store fail", registry=r
        )
        self.closes = Counter(
            "collab_closes", "Connections closed by the server, by close code", ["code"], registry=r
        )
        self.backpressure_closes = Counter(
            "collab_backpressure_closes",
            "Connections closed for falling too far behind or sending too much (1013)",
            registry=r,
        )
        self.log_rows_read = Gauge(
            "collab_store_log_rows_read",
            "Update log rows read from the store since the start "
            "(loads, history, catch-up, the feed)",
            registry=r,
        )
        self.load_seconds = Histogram(
            "collab_load_seconds",
            "Time to load a document (snapshot and log)",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        # Webhooks are labelled by URL: a server has the few it was started with.
        self.webhook_deliveries = Counter(
            "collab_webhook_deliveries",
            "Webhook requests, by endpoint and outcome (ok, failed)",
            ["webhook", "outcome"],
            registry=r,
        )
        self.webhook_failing = Gauge(
            "collab_webhook_failing",
            "1 while the endpoint's latest delivery failed (it is being retried)",
            ["webhook"],
            registry=r,
        )
        self.webhook_consecutive_failures = Gauge(
            "collab_webhook_consecutive_failures",
            "Failed attempts since the endpoint last took a delivery",
            ["webhook"],
            registry=r,
        )
        self.webhook_lost = Counter(
            "collab_webhook_lost",
            "Times the endpoint's place in the log left the store's feed (MongoDB's oplog "
            "moved past it): changes committed meanwhile were not sent",
            ["webhook"],
            registry=r,
        )
        self.webhook_pending = Gauge(
            "collab_webhook_pending_documents",
            "Documents with changes not yet delivered to the endpoint (on its delivering instance)",
            ["webhook"],
            registry=r,
        )
        # Each endpoint's byte counters, present from the start at zero, and looked up
        # once: labels() per connection cost 2 % of a storm of connections.
        self.socket_bytes = {
            endpoint: (self.bytes_in.labels(endpoint), self.bytes_out.labels(endpoint))
            for endpoint in ENDPOINTS
        }
        for endpoint in ENDPOINTS:
            self.updates_in.labels(endpoint)

    def observe(
        self,
        *,
        connections: Callable[[str], int],
        rooms: Callable[[], int],
        handshakes: Callable[[], int],
        write_queue_updates: Callable[[], int],
        write_queue_bytes: Callable[[], int],
        feed_lag_s: Callable[[], float],
        feed_failing: Callable[[], bool],
        store_failing: Callable[[], bool],
        log_rows_read: Callable[[], int],
    ) -> None:
        """Read these values when scraped."""
        for endpoint in ENDPOINTS:
            self.connections.labels(endpoint).set_function(
                lambda endpoint=endpoint: connections(endpoint)
            )
        self.rooms.set_function(rooms)
        self.handshakes.set_function(handshakes)
        self.write_queue_updates.set_function(write_queue_updates)
        self.write_queue_bytes.set_function(write_queue_bytes)
        self.feed_lag_seconds.set_function(feed_lag_s)
        self.feed_failing.set_function(lambda: float(feed_failing()))
        self.store_failing.set_function(lambda: float(store_failing()))
        self.log_rows_read.set_function(log_rows_read)

    def closed(self, code: int) -> None:
        self.closes.labels(str(code)).inc()
        if code == 1013:
            self.backpressure_closes.inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
