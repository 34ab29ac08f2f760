"""Delivering webhooks from the log.

One :class:`WebhookRunner` per endpoint, owned by :class:`Webhooks` (started and
stopped with the server). A runner first takes the endpoint's lease in the store
(one instance at a time delivers each endpoint; another takes over once a lease
expires), then follows the store's feed, every instance's commits, from the
endpoint's stored position:

- a *reader* gathers each document's new seqs into one pending range (memory is
  one entry per document, at most ``webhook_max_pending_documents``; the feed
  waits past that), and a document's deletion, which the feed carries in its
  place, onto its range: a range that ends in a deletion is due at once, and the
  next generation's updates wait for it to be taken;
- a *sender* POSTs a range once its document was quiet for ``webhook_quiet_s``,
  or had waited ``webhook_max_wait_s``: one request at a time, so each document's
  ranges go in seq order; a request that fails is sent again, after a pause that
  grows with jitter, until the endpoint takes it (at least once);
- the stored position moves only past what was delivered: it is where the
  oldest range not yet delivered began, so after a restart or a takeover the
  feed is read again from there (ranges may repeat: receivers keep the highest
  ``last_seq`` per document and epoch, docs/INTEGRATING.md);
- a *renewer* renews the lease; a runner that cannot stops sending before it
  expires.

None of it is on the path of an edit: it only reads the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import tornado.httpclient

from collab import __version__
from collab.backoff import Backoff
from collab.config import Settings
from collab.core.feed import FeedFollower
from collab.errors import StoreError
from collab.metrics import Metrics
from collab.store import DeletionRecord, FeedPosition, FeedRecord, Store, UpdateRecord, WebhookState
from collab.tasks import TaskGroup
from collab.webhooks.signing import (
    EVENT_HEADER,
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    WebhookSpec,
    idempotency_key,
    sign,
)

log = logging.getLogger("collab.webhooks")

RESTORE_CLIENT_PREFIX = "api:restore:"  # the client a restore's update is made by
MAX_LISTED = 20  # authors, or restores, named in one delivery, at most
SAVE_EVERY_S = 1.0  # a position that moved without a delivery is saved this often
RETRY_FIRST_S = 0.5
# Webhooks wait seconds for a quiet moment anyway: polling the store (SQLite) more
# often than this would cost every instance queries for no earlier delivery.
POLL_MIN_S = 0.1


class LeaseLost(Exception):
    """Another instance delivers this webhook now, or the lease could not be renewed."""


@dataclass(slots=True)
class Pending:
    """A document's seqs not delivered yet, gathered from the feed, and its
    deletion when the feed brought that after them."""

    doc: str
    start: tuple[int, FeedPosition]  # (ordinal, position) of the feed before its first record
    first_at: float  # monotonic
    last_at: float
    first_seq: int = 0  # 0: no update, only a deletion
    last_seq: int = 0
    time_s: float = 0.0  # of its last update
    epoch: str | None = None  # of its updates, as the feed gives it
    updates: int = 0
    authors: list[str] = field(default_factory=list)
    restored: list[int] = field(default_factory=list)  # seqs made by a restore
    deletion: DeletionRecord | None = None

    def add(self, record: UpdateRecord, now: float) -> None:
        if not self.updates:
            self.first_seq = record.seq
        if record.epoch is not None:
            self.epoch = record.epoch
        self.last_seq = record.seq
        self.last_at = now
        self.time_s = record.time_s
        self.updates += 1
        user = record.author.user
        if user is not None and user not in self.authors and len(self.authors) < MAX_LISTED:
            self.authors.append(user)
        restore = (record.author.client or "").startswith(RESTORE_CLIENT_PREFIX)
        if restore and len(self.restored) < MAX_LISTED:
            self.restored.append(record.seq)


@dataclass(frozen=True, slots=True)
class Delivery:
    event: str
    body: bytes
    key: str


class WebhookRunner:
    def __init__(
        self,
        spec: WebhookSpec,
        store: Store,
        settings: Settings,
        metrics: Metrics,
        client: tornado.httpclient.AsyncHTTPClient,
        *,
        begin: FeedPosition | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec = spec
        # Where a webhook no instance delivered before starts: the feed's end when
        # this server started, read before it took edits (None: when it takes the
        # lease), so that a document written at once is not missed.
        self._begin = begin
        self._store = store
        self._settings = settings
        self._secrets = [s for s in settings.webhook_secret.split(",") if s]
        self._metrics = metrics
        self._client = client
        self._clock = clock
        self._instance = settings.instance_id
        self.state = WebhookState(spec.name)
        self.leased = False
        self.failing = False
        self._pending: dict[str, Pending] = {}
        self._inflight: Pending | None = None
        self._reached: tuple[int, FeedPosition] | None = None
        self._arrived = asyncio.Event()  # the reader added something
        self._room = asyncio.Event()  # the sender made room for another document
        self._lease_until = 0.0  # monotonic: send nothing past it
        metrics.webhook_failing.labels(spec.name).set_function(lambda: float(self.failing))
        metrics.webhook_pending.labels(spec.name).set_function(
            lambda: len(self._pending) + (self._inflight is not None)
        )
        metrics.webhook_consecutive_failures.labels(spec.name).set_function(
            lambda: self.state.failures
        )
        for outcome in ("ok", "failed"):
            metrics.webhook_deliveries.labels(spec.name, outcome)
        metrics.webhook_lost.labels(spec.name)

    async def run(self) -> None:
        """Deliver while this instance holds the lease; wait for it otherwise. For ever."""
        s = self._settings
        backoff = Backoff(RETRY_FIRST_S, s.webhook_lease_s, jitter=True)
        while True:
            # The lease runs from before it was asked for: never past the store's.
            asked = self._clock()
            try:
                state = await self._store.lease_webhook(
                    self.spec.name, self._instance, s.webhook_lease_s
                )
            except StoreError as exc:
                log.warning("webhook %s: cannot take its lease: %s", self.spec.name, exc)
                await backoff.wait()
                continue
            backoff.reset()
            if state is None:  # another instance delivers it: see again later
                await asyncio.sleep(s.webhook_lease_s / 3 * random.uniform(0.5, 1.0))
                continue
            self._lease_until = asked + s.webhook_lease_s
            log.info("webhook %s: delivering from this instance", self.spec.name)
            self.leased = True
            try:
                await self._deliver(state)
            except* LeaseLost as group:
                log.warning("webhook %s: %s", self.spec.name, group.exceptions[0])
            except* StoreError as group:
                log.warning("webhook %s: the store failed: %s", self.spec.name, group.exceptions[0])
                await backoff.wait()
            except* Exception:
                log.exception("webhook %s failed unexpectedly; starting again", self.spec.name)
                await backoff.wait()
            finally:
                self.leased = False
                self._pending.clear()
                self._inflight = None
                self._reached = None
            with contextlib.suppress(StoreError):
                await self._store.release_webhook(self.spec.name, self._instance)

    async def release(self) -> None:
        """Hand the lease on at shutdown (after run was cancelled)."""
        with contextlib.suppress(StoreError):
            await self._store.release_webhook(self.spec.name, self._instance)

    async def _deliver(self, state: WebhookState) -> None:
        if state.position is None:  # a new webhook: what is committed from the start on
            begin = self._begin if self._begin is not None else await self._store.feed_position()
            state = replace(state, position=begin)
            if not await self._store.save_webhook(state, self._instance):
                raise LeaseLost("its lease was taken before it started")
        self.state = state
        self._reached = (0, state.position)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._read(state.position), name=f"webhook {self.spec.name} reader")
            tasks.create_task(self._send(), name=f"webhook {self.spec.name} sender")
            tasks.create_task(self._renew(), name=f"webhook {self.spec.name} lease")

    # -- the reader -------------------------------------------------------------------------

    async def _read(self, position: FeedPosition) -> None:
        s = self._settings
        poll_s = max(s.feed_poll_s, POLL_MIN_S)

        async def lost() -> FeedPosition:
            # Asked only once the position is gone from the feed (a MongoDB oplog
            # that moved past it): what was committed meanwhile cannot be sent.
            log.error(
                "webhook %s: its place in the log is no longer in the store's feed; "
                "changes committed meanwhile are not sent",
                self.spec.name,
            )
            self._metrics.webhook_lost.labels(self.spec.name).inc()
            self.state = replace(self.state, last_error="changes lost: the feed moved past")
            return await self._store.feed_position()

        follower: FeedFollower[FeedRecord] = FeedFollower(
            f"the feed of webhook {self.spec.name}",
            end=lost,
            follow=lambda after: self._store.follow(after, poll_s=poll_s, deletions=True),
            poll_s=poll_s,
            log=log,
            keep_position_on_fault=True,  # a receiver misses nothing
        )
        follower.position = position
        ordinal = 0
        before = position
        # The generations deleted lately: a MongoDB feed may still bring an update
        # of one after its deletion (an append that raced it, then taken back).
        gone: OrderedDict[str, str] = OrderedDict()
        async with contextlib.aclosing(follower.batches()) as feed:
            async for reached, records in feed:
                start = (ordinal, before)
                ordinal += 1
                for record in records:
                    if isinstance(record, UpdateRecord) and gone.get(record.doc) == record.epoch:
                        continue  # stored after the deletion and taken back (MongoDB)
                    pending = self._pending.get(record.doc)
                    # The next generation's updates go after the deletion: once it
                    # was taken (it is due at once), they start a range of their own.
                    while pending is not None and pending.deletion is not None:
                        self._room.clear()
                        await self._room.wait()
                        pending = self._pending.get(record.doc)
                    if pending is None:
                        while len(self._pending) >= s.webhook_max_pending_documents:
                            self._room.clear()
                            await self._room.wait()
                        now = self._clock()
                        pending = self._pending[record.doc] = Pending(record.doc, start, now, now)
                    if isinstance(record, DeletionRecord):
                        pending.deletion = record
                        gone[record.doc] = record.epoch
                        gone.move_to_end(record.doc)
                        if len(gone) > s.webhook_max_pending_documents:
                            gone.popitem(last=False)
                    else:
                        pending.add(record, self._clock())
                self._reached = (ordinal, reached)
                before = reached
                self._arrived.set()

    # -- the sender -------------------------------------------------------------------------

    def _next_due(self, now: float) -> tuple[Pending | None, float]:
        """The first pending range due now, or how long until one is."""
        s = self._settings
        wait = s.webhook_quiet_s
        for pending in self._pending.values():
            if pending.deletion is not None:  # nothing more comes for its generation
                return pending, 0.0
            due = min(pending.last_at + s.webhook_quiet_s, pending.first_at + s.webhook_max_wait_s)
            if due <= now:
                return pending, 0.0
            wait = min(wait, due - now)
        return None, wait

    async def _send(self) -> None:
        last_save = self._clock()
        while True:
            pending, wait = self._next_due(self._clock())
            if pending is None:
                if self._clock() - last_save >= SAVE_EVERY_S:
                    await self._save()
                    last_save = self._clock()
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), min(wait, SAVE_EVERY_S))
                continue
            del self._pending[pending.doc]
            self._inflight = pending
            self._room.set()
            for delivery in await self._deliveries(pending):
                await self._post(delivery)
            self._inflight = None
            await self._save()
            last_save = self._clock()

    async def _deliveries(self, pending: Pending) -> list[Delivery]:
        """The requests a document's range makes, in order: created (its seq 1),
        changed (the range), restored (each restore in it), then deleted (the
        generation's seqs, 1 to its last) when the feed brought its deletion.
        All under the epoch of the generation the range belongs to."""
        epoch = pending.epoch
        if pending.deletion is not None:
            epoch = pending.deletion.epoch
        elif epoch is None and pending.updates:  # a feed that does not give it
            info = await self._retrying(lambda: self._store.get_document(pending.doc))
            epoch = info.epoch if info is not None else None
        made = []
        if pending.updates:
            if pending.first_seq == 1:
                made.append(("created", 1, 1))
            made.append(("changed", pending.first_seq, pending.last_seq))
            made.extend(("restored", seq, seq) for seq in pending.restored)
        if pending.deletion is not None:
            made.append(("deleted", 1, pending.deletion.last_seq))
        deliveries = []
        for event, first, last in made:
            if event not in self.spec.events:
                continue
            key = idempotency_key(event, pending.doc, epoch, first, last)
            payload: dict[str, Any] = {
                "event": event,
                "doc": pending.doc,
                "epoch": epoch,
                "first_seq": first,
                "last_seq": last,
                "idempotency_key": key,
            }
            if event == "changed":
                payload.update(
                    updates=pending.updates, authors=pending.authors, time_s=pending.time_s
                )
            elif event == "deleted" and pending.deletion is not None:
                payload.update(time_s=pending.deletion.time_s, by=pending.deletion.author.as_dict())
            body = json.dumps(payload, separators=(",", ":")).encode()
            deliveries.append(Delivery(event, body, key))
        return deliveries

    async def _post(self, delivery: Delivery) -> None:
        """Send until the endpoint takes it (2xx)."""
        s = self._settings
        backoff = Backoff(RETRY_FIRST_S, s.webhook_retry_max_s, jitter=True)
        while True:
            # A request started now must end before the lease does.
            if self._clock() + s.webhook_timeout_s >= self._lease_until:
                raise LeaseLost("its lease would expire during a delivery")
            error = await self._attempt(delivery)
            now = time.time()
            if error is None:
                self._metrics.webhook_deliveries.labels(self.spec.name, "ok").inc()
                self.failing = False
                self.state = replace(
                    self.state,
                    delivered=self.state.delivered + 1,
                    failures=0,
                    last_attempt_s=now,
                    last_success_s=now,
                )
                return
            self._metrics.webhook_deliveries.labels(self.spec.name, "failed").inc()
            if not self.failing:
                log.warning("webhook %s: delivery failed, retrying: %s", self.spec.name, error)
            self.failing = True
            self.state = replace(
                self.state, failures=self.state.failures + 1, last_error=error, last_attempt_s=now
            )
            if self.state.failures == 1 or self.state.failures % 10 == 0:
                await self._save()  # `collab webhooks status` shows it failing
            await backoff.wait()

    async def _attempt(self, delivery: Delivery) -> str | None:
        s = self._settings
        request = tornado.httpclient.HTTPRequest(
            self.spec.url,
            method="POST",
            body=delivery.body,
            headers={
                "Content-Type": "application/json",
                "User-Agent": f"collab/{__version__}",
                SIGNATURE_HEADER: sign(delivery.body, self._secrets),
                IDEMPOTENCY_HEADER: delivery.key,
                EVENT_HEADER: delivery.event,
            },
            connect_timeout=s.webhook_timeout_s,
            request_timeout=s.webhook_timeout_s,
            follow_redirects=False,
            streaming_callback=_discard,  # what the endpoint answers is not kept
        )
        try:
            response = await self._client.fetch(request, raise_error=False)
        except Exception as exc:  # a refused connection, an unresolvable name
            return f"{type(exc).__name__}: {exc}"
        if 200 <= response.code < 300:
            return None
        if response.code == 599:  # Tornado's code for a timeout or a broken connection
            return f"no answer: {response.error}"
        return f"HTTP {response.code}"

    # -- the position and the lease --------------------------------------------------------------

    def _safe(self) -> tuple[int, FeedPosition] | None:
        """Where delivery would resume: before the oldest range not yet delivered."""
        starts = [p.start for p in (self._inflight, next(iter(self._pending.values()), None)) if p]
        if starts:
            return min(starts, key=lambda start: start[0])
        return self._reached

    async def _save(self) -> None:
        safe = self._safe()
        if safe is not None:
            self.state = replace(self.state, position=safe[1])
        try:
            saved = await self._store.save_webhook(self.state, self._instance)
        except StoreError as exc:
            log.warning("webhook %s: cannot save its position: %s", self.spec.name, exc)
            return
        if not saved:
            raise LeaseLost("another instance took its lease")

    async def _renew(self) -> None:
        s = self._settings
        while True:
            await asyncio.sleep(s.webhook_lease_s / 3)
            asked = self._clock()
            try:
                state = await self._store.lease_webhook(
                    self.spec.name, self._instance, s.webhook_lease_s
                )
            except StoreError as exc:
                log.warning("webhook %s: cannot renew its lease: %s", self.spec.name, exc)
                continue  # sending stops by itself once the lease runs out
            if state is None:
                raise LeaseLost("another instance took its lease")
            self._lease_until = asked + s.webhook_lease_s

    async def _retrying(self, read: Callable[[], Any]) -> Any:
        backoff = Backoff()
        while True:
            try:
                return await read()
            except StoreError as exc:
                log.warning("webhook %s: reading the store failed: %s", self.spec.name, exc)
                await backoff.wait()


def _discard(chunk: bytes) -> None:
    pass


class Webhooks:
    """Every configured webhook's runner, each a task of its own."""

    def __init__(
        self, specs: list[WebhookSpec], store: Store, settings: Settings, metrics: Metrics
    ) -> None:
        self._specs = specs
        self._store = store
        self._settings = settings
        self._metrics = metrics
        self.runners: list[WebhookRunner] = []
        self._client: tornado.httpclient.AsyncHTTPClient | None = None
        self._tasks = TaskGroup(log)

    async def start(self) -> None:
        """Start delivering (on the running loop: the HTTP client is made for it),
        before the server takes edits: a new webhook begins at the feed's end now."""
        if not self._specs:
            return
        begin = await self._store.feed_position()
        self._client = tornado.httpclient.AsyncHTTPClient(force_instance=True)
        for spec in self._specs:
            runner = WebhookRunner(
                spec, self._store, self._settings, self._metrics, self._client, begin=begin
            )
            self.runners.append(runner)
            self._tasks.spawn(runner.run(), name=f"webhook {spec.name}")

    async def stop(self) -> None:
        """Stop sending (a request under way is dropped: it is sent again by whoever
        delivers next) and hand the leases on. Safe to call twice."""
        await self._tasks.close()
        await asyncio.gather(*(runner.release() for runner in self.runners))
        self.runners.clear()
        if self._client is not None:
            self._client.close()
            self._client = None
