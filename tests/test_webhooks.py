"""Durable webhooks (collab.webhooks): document events POSTed to an endpoint,
signed with every secret, debounced per document, at least once and in seq
order per document, from each webhook's stored position in the log; one
instance at a time delivers each endpoint; a failing endpoint shows in
/metrics and in ``collab webhooks status``, and is retried until it takes them."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient
from tornado.ioloop import IOLoop

from collab.app import CollabServer
from collab.config import Settings, SettingsError
from collab.errors import FeedLost, StoreError
from collab.store import DeletionRecord, FeedPosition, FeedRecord, HeldDocuments, create_store
from collab.store.memory import MemoryStore
from collab.webhooks import WebhookSpec, parse_specs, sign, verify
from collab.webhooks.signing import WebhookSpecError
from tests.helpers import SeqWatcher, appends, http_get, wait_until
from tests.processes import ServerProcess, server_process
from tests.webhook_receiver import Receiver

SECRETS = ["new-secret-0123456789", "old-secret-9876543210"]


@pytest.fixture
def receiver(io_loop: IOLoop) -> Iterator[Receiver]:
    receiver = Receiver(list(SECRETS))
    io_loop.run_sync(receiver.start)
    yield receiver
    io_loop.run_sync(receiver.stop)


def webhook_settings(settings: Settings, receiver: Receiver, **changes: Any) -> Settings:
    quick = {
        "webhook": receiver.url,
        "webhook_secret": ",".join(SECRETS),
        "webhook_quiet_s": 0.2,
        "webhook_max_wait_s": 1.0,
        "webhook_timeout_s": 0.5,
        "webhook_retry_max_s": 0.5,
        "webhook_lease_s": 3.0,
    }
    return settings.replace(**{**quick, **changes})


def in_order(receiver: Receiver, doc: str) -> list[tuple[int, int]]:
    """The seq ranges of a document's ``changed`` deliveries, in arrival order,
    checked: each starts at most one past the highest seq delivered before it,
    so nothing was skipped. (A range may repeat after a restart or a takeover:
    delivery is at least once; receivers keep the highest seq.)"""
    ranges = [
        (r.payload["first_seq"], r.payload["last_seq"])
        for r in receiver.taken
        if r.event == "changed" and r.payload["doc"] == doc
    ]
    highest = 0
    for first, last in ranges:
        assert first <= highest + 1, f"{doc}: a gap before {first}: {ranges}"
        assert first <= last
        highest = max(highest, last)
    return ranges


# -- signatures and the setting, without I/O ----------------------------------------------------


def test_a_signature_verifies_with_either_secret_while_they_rotate():
    body = b'{"event":"changed"}'
    header = sign(body, SECRETS, timestamp=1_700_000_000)

    assert header.startswith("t=1700000000,v1=") and header.count("v1=") == 2
    assert verify(body, header, SECRETS[0], now=1_700_000_010)
    assert verify(body, header, SECRETS[1], now=1_700_000_010)
    assert not verify(body, header, "another-secret", now=1_700_000_010)
    assert not verify(body + b" ", header, SECRETS[0], now=1_700_000_010)
    assert not verify(body, header, SECRETS[0], now=1_700_000_000 + 3600)  # replayed late
    assert not verify(body, "v1=abc", SECRETS[0])
    # Hostile headers are refused, never raised on.
    for hostile in ("t=²,v1=ab", "t=" + "9" * 5000 + ",v1=a", "t=1700000000,v1=é"):
        assert not verify(body, hostile, SECRETS[0], now=1_700_000_010)


def test_a_webhook_names_its_events_after_a_hash():
    assert WebhookSpec.parse("https://app.example/hook").events == {
        "created",
        "changed",
        "deleted",
        "restored",
    }
    spec = WebhookSpec.parse("https://app.example/hook#events=created,deleted")
    assert (spec.url, spec.events) == ("https://app.example/hook", {"created", "deleted"})
    for bad in ("ftp://x/hook", "https://x/h#events=opened", "https://x/h#secret=1", "nothing"):
        with pytest.raises(WebhookSpecError):
            WebhookSpec.parse(bad)
    assert len(parse_specs("https://a.example/1 https://b.example/2#events=changed")) == 2
    secret = WebhookSpec.parse("https://user:pass@a.example:8443/hook?token=abc#events=changed")
    assert secret.name == "https://a.example:8443/hook"  # shown in metrics and status
    with pytest.raises(WebhookSpecError, match="one URL"):
        parse_specs("https://a.example/1?k=1 https://a.example/1?k=2")


def test_webhooks_need_a_secret_and_the_flag_may_be_repeated():
    from collab.cli import build_parser
    from collab.config import settings_from_namespace

    with pytest.raises(SettingsError, match="webhook_secret"):
        Settings(webhook="https://a.example/hook")
    with pytest.raises(ValueError, match="expected an http"):
        CollabServer(Settings(webhook="ftp://a.example/hook", webhook_secret="s" * 20))
    with pytest.raises(SettingsError, match="3 x webhook_timeout_s"):
        Settings(webhook_lease_s=5.0, webhook_timeout_s=5.0)
    args = build_parser().parse_args(
        [
            "serve",
            "--webhook",
            "https://a.example/1",
            "--webhook",
            "https://b.example/2#events=changed",
        ]
    )
    settings = settings_from_namespace(args, {"COLLAB_WEBHOOK_SECRET": "s" * 20})
    assert [spec.url for spec in parse_specs(settings.webhook)] == [
        "https://a.example/1",
        "https://b.example/2",
    ]


# -- delivery ------------------------------------------------------------------------------------


async def test_edits_are_posted_once_quiet_signed_with_both_secrets_and_keyed(
    settings: Settings, start_server, receiver: Receiver
):
    server = await start_server(webhook_settings(settings, receiver))
    writers = [await SeqWatcher.join(server.port, "w", doc) for doc in ("notes", "plans")]
    try:
        for writer, client in zip(writers, (1, 2), strict=True):
            for ref, update in enumerate(appends(client, 5)):
                writer.send(ref, update)
        for writer in writers:
            await writer.wait_for(lambda w=writer: len(w.acks) == 5)
        await receiver.wait_for(lambda: receiver.last_seqs() == {"notes": 5, "plans": 5})
    finally:
        for writer in writers:
            await writer.close()

    events = [(r.event, r.payload["doc"]) for r in receiver.taken]
    for doc in ("notes", "plans"):
        # Created first, then the burst as one change (debounced), unless the burst
        # was cut by the maximum wait.
        assert events.index(("created", doc)) < events.index(("changed", doc))
        assert in_order(receiver, doc)[0][0] == 1
    for item in receiver.taken:
        assert item.valid == {SECRETS[0]: True, SECRETS[1]: True}
        assert item.key == item.payload["idempotency_key"]
        info = await server.store.get_document(item.payload["doc"])
        assert item.payload["epoch"] == info.epoch
        assert item.key.startswith(f"{item.event}/{info.epoch}/")


@pytest.mark.allow_error_logs
async def test_a_failing_endpoint_shows_in_metrics_and_status_and_gets_everything_back(
    settings: Settings, start_server, receiver: Receiver, capsys
):
    from collab.cli import main

    server = await start_server(webhook_settings(settings, receiver))
    receiver.mode = "fail"
    writer = await SeqWatcher.join(server.port, "w", "notes")
    try:
        for ref, update in enumerate(appends(1, 3)):
            writer.send(ref, update)
        await receiver.wait_for(lambda: receiver.refused >= 2)
        _, metrics = await http_get(server, "/metrics")
        line = f'collab_webhook_failing{{webhook="{receiver.url}"}} 1.0'
        assert line in metrics.decode()
        states = await server.store.webhook_states()
        assert states[0].failures >= 1 and states[0].last_error == "HTTP 500"
        assert (
            await asyncio.to_thread(main, ["webhooks", "status", "--store-url", settings.store_url])
            == 1
        )
        assert "FAILING" in capsys.readouterr().out
        missing = settings.store_url + "-missing"
        assert await asyncio.to_thread(main, ["webhooks", "status", "--store-url", missing]) == 1
        made = await asyncio.to_thread(Path(missing.removeprefix("sqlite:///")).exists)
        assert not made  # read, never made

        receiver.mode = "hang"  # past the sender's timeout
        refused = receiver.refused
        await receiver.wait_for(lambda: receiver.refused >= refused + 2)
        receiver.mode = "ok"
        for ref, update in enumerate(appends(1, 6)[3:], 3):
            writer.send(ref, update)
        await receiver.wait_for(lambda: receiver.last_seqs() == {"notes": 6})
    finally:
        await writer.close()
    in_order(receiver, "notes")
    _, metrics = await http_get(server, "/metrics")
    assert f'collab_webhook_failing{{webhook="{receiver.url}"}} 0.0' in metrics.decode()


# -- across processes: a restart, a takeover, two instances ---------------------------------------


@pytest.fixture(params=["sqlite", "mongodb"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    return request.getfixturevalue("mongodb_url")


@contextlib.asynccontextmanager
async def instance(url: str, name: str, receiver: Receiver) -> AsyncIterator[ServerProcess]:
    options = {
        "--instance-id": name,
        "--webhook": receiver.url,
        "--webhook-secret": ",".join(SECRETS),
        "--webhook-quiet-s": "0.2",
        "--webhook-max-wait-s": "1",
        "--webhook-timeout-s": "0.5",
        "--webhook-retry-max-s": "0.5",
        "--webhook-lease-s": "3",
    }
    async with server_process(url, *itertools.chain(*options.items())) as server:
        yield server


async def heads(url: str, docs: list[str]) -> dict[str, int]:
    store = create_store(url, create=False)
    await store.open()
    try:
        return await store.head_seqs(docs)
    finally:
        await store.close()


async def holder(url: str) -> str | None:
    store = create_store(url, create=False)
    await store.open()
    try:
        states = await store.webhook_states()
    finally:
        await store.close()
    return states[0].lease_instance if states else None


@pytest.mark.slow
async def test_two_instances_deliver_every_change_in_order_across_a_failing_endpoint_and_a_kill(
    shared_url: str, receiver: Receiver
):
    docs = ["alpha", "beta", "gamma"]
    updates = {doc: appends(number, 120) for number, doc in enumerate(docs, 1)}
    sent = dict.fromkeys(docs, 0)

    async def write(server: ServerProcess, name: str, count: int) -> None:
        """``count`` more appends to each document through ``server``, acknowledged."""
        writers = [await SeqWatcher.join(server.port, name, doc) for doc in docs]
        try:
            for writer in writers:
                start = sent[writer.name]
                for ref in range(start, start + count):
                    writer.send(ref, updates[writer.name][ref])
                sent[writer.name] += count
            for writer in writers:
                await writer.wait_for(lambda w=writer, n=count: len(w.acks) == n, timeout_s=20)
        finally:
            for writer in writers:
                await writer.close()

    async with (
        instance(shared_url, "one", receiver) as one,
        instance(shared_url, "two", receiver) as two,
    ):
        servers = {"one": one, "two": two}
        await write(one, "w1", 10)
        await write(two, "w2", 10)
        await receiver.wait_for(lambda: receiver.last_seqs() == dict.fromkeys(docs, 20))

        receiver.mode = "fail"
        await write(two, "w2", 10)
        await receiver.wait_for(lambda: receiver.refused >= 3)
        receiver.mode = "hang"  # past the sender's timeout
        await write(one, "w1", 10)
        refused = receiver.refused
        await receiver.wait_for(lambda: receiver.refused > refused)

        # The instance that delivers dies; the other takes over once its lease ends.
        victim = await holder(shared_url)
        assert victim in servers
        survivor = servers["two" if victim == "one" else "one"]
        servers[victim].process.send_signal(signal.SIGKILL)
        await servers[victim].process.wait()
        receiver.mode = "ok"
        await write(survivor, "ws", 10)
        async with instance(shared_url, victim, receiver) as restarted:
            await write(restarted, "wr", 10)
            expected = await heads(shared_url, docs)
            assert expected == dict.fromkeys(docs, 60)
            try:
                await receiver.wait_for(lambda: receiver.last_seqs() == expected, timeout_s=60)
            except TimeoutError:
                logs = "\n".join(s.log_text() for s in (*servers.values(), restarted))
                raise AssertionError(
                    f"got {receiver.last_seqs()}; the servers said:\n{logs}"
                ) from None

    for doc in docs:
        ranges = in_order(receiver, doc)
        covered = {seq for first, last in ranges for seq in range(first, last + 1)}
        assert covered == set(range(1, 61)), doc
    assert all(all(item.valid.values()) for item in receiver.taken)
    assert {item.payload["doc"] for item in receiver.taken if item.event == "created"} == set(docs)


async def test_a_restore_and_a_deletion_are_posted_as_their_events(
    settings: Settings, start_server, receiver: Receiver
):
    server = await start_server(webhook_settings(settings, receiver))
    client = AsyncHTTPClient()
    base = f"http://127.0.0.1:{server.port}/api/documents"
    await write_text(server.port, "notes", ["one", "two"])
    await receiver.wait_for(lambda: receiver.last_seqs() == {"notes": 2})

    await client.fetch(f"{base}/notes/restore", method="POST", body=json.dumps({"seq": 1}))
    await receiver.wait_for(lambda: any(r.event == "restored" for r in receiver.taken))
    restored = next(r for r in receiver.taken if r.event == "restored")
    assert (restored.payload["first_seq"], restored.payload["last_seq"]) == (3, 3)
    assert receiver.last_seqs() == {"notes": 3}  # the restore is a change too, before it

    # Changes still waiting for a quiet moment when their document is deleted: the
    # endpoint hears of them, then of the deletion, all of that generation.
    slow = await start_server(
        webhook_settings(settings, receiver, webhook_quiet_s=2.0, webhook_max_wait_s=5.0).replace(
            store_url=f"{settings.store_url}-second", instance_id="slow"
        )
    )
    await write_text(slow.port, "drafts", ["gone soon"])
    runner = slow.webhooks.runners[0]
    await wait_until(lambda: "drafts" in runner._pending)
    await client.fetch(f"http://127.0.0.1:{slow.port}/api/documents/drafts", method="DELETE")
    await receiver.wait_for(lambda: any(r.event == "deleted" for r in receiver.taken))
    drafts = [r for r in receiver.taken if r.payload["doc"] == "drafts"]
    assert [(r.event, r.payload["first_seq"], r.payload["last_seq"]) for r in drafts] == [
        ("created", 1, 1),
        ("changed", 1, 1),
        ("deleted", 1, 1),
    ]
    epochs = {r.payload["epoch"] for r in drafts}
    assert len(epochs) == 1 and None not in epochs
    deleted = drafts[-1]
    assert deleted.key == f"deleted/{deleted.payload['epoch']}/1-1/drafts"
    assert deleted.payload["by"] == {"user": None, "client": None, "instance": "slow"}


def events_of(receiver: Receiver, doc: str) -> list[tuple[str, str | None, int, int]]:
    """A document's deliveries in arrival order, each once (a repeat, sent again
    after a restart, has the key of the first), as (event, epoch, first, last)."""
    keys: set[str] = set()
    events = []
    for item in receiver.taken:
        if item.payload["doc"] != doc or item.key in keys:
            continue
        keys.add(item.key)
        p = item.payload
        events.append((item.event, p["epoch"], p["first_seq"], p["last_seq"]))
    return events


async def test_a_deletion_after_everything_was_sent_is_posted_before_the_next_document_of_its_name(
    settings: Settings, start_server, receiver: Receiver
):
    server = await start_server(webhook_settings(settings, receiver))
    await write_text(server.port, "notes", ["one", "two"])
    await receiver.wait_for(lambda: receiver.last_seqs() == {"notes": 2})
    old = receiver.taken[0].payload["epoch"]

    response = await AsyncHTTPClient().fetch(
        f"http://127.0.0.1:{server.port}/api/documents/notes", method="DELETE"
    )
    assert response.code == 200
    await write_text(server.port, "notes", ["fresh"])
    await receiver.wait_for(lambda: len(events_of(receiver, "notes")) == 5)

    new = (await server.store.get_document("notes")).epoch
    assert events_of(receiver, "notes") == [
        ("created", old, 1, 1),
        ("changed", old, 1, 2),
        ("deleted", old, 1, 2),
        ("created", new, 1, 1),
        ("changed", new, 1, 1),
    ]
    assert all(all(item.valid.values()) for item in receiver.taken)


@pytest.mark.slow
async def test_a_deletion_made_while_the_endpoint_was_down_is_posted_in_its_place_after_a_restart(
    shared_url: str, receiver: Receiver
):
    async with instance(shared_url, "one", receiver) as one:
        await write_text(one.port, "notes", ["a", "b"])
        await receiver.wait_for(lambda: receiver.last_seqs() == {"notes": 2})
        old = receiver.taken[0].payload["epoch"]

        receiver.mode = "fail"
        await write_text(one.port, "notes", ["c"])
        await receiver.wait_for(lambda: receiver.refused >= 1)
        response = await AsyncHTTPClient().fetch(f"{one.url}/api/documents/notes", method="DELETE")
        assert response.code == 200
        await write_text(one.port, "notes", ["fresh"])  # each acknowledged: stored
    # Stopped while the endpoint failed: the deletion and what came after were
    # never sent. Another run of the server sends them, from the stored position.
    receiver.mode = "ok"
    async with instance(shared_url, "one", receiver):
        await receiver.wait_for(
            lambda: any(e[0] == "changed" and e[1] != old for e in events_of(receiver, "notes")),
            timeout_s=60,
        )
        new = next(e[1] for e in events_of(receiver, "notes") if e[1] != old)

    events = events_of(receiver, "notes")
    deleted = events.index(("deleted", old, 1, 3))
    assert events[:2] == [("created", old, 1, 1), ("changed", old, 1, 2)]
    # Seq 3 was never taken; whether it is sent before the deletion depends on the
    # store (SQLite drops a deleted document's log; MongoDB's change stream still
    # carries it): either way the deletion comes after it and covers it.
    assert events[2:deleted] in ([], [("changed", old, 3, 3)])
    assert events[deleted + 1 :] == [("created", new, 1, 1), ("changed", new, 1, 1)]
    assert all(all(item.valid.values()) for item in receiver.taken)


async def test_a_restarted_server_sends_what_it_had_not_sent_before_it_stopped(
    settings: Settings, start_server, receiver: Receiver
):
    first = await start_server(webhook_settings(settings, receiver))
    receiver.mode = "fail"
    await write_text(first.port, "notes", ["a", "b", "c"])
    await receiver.wait_for(lambda: receiver.refused >= 1)
    await first.stop()

    receiver.mode = "ok"
    await start_server(webhook_settings(settings, receiver))
    await receiver.wait_for(lambda: receiver.last_seqs() == {"notes": 3})
    assert [r.event for r in receiver.taken] == ["created", "changed"]
    assert in_order(receiver, "notes") == [(1, 3)]


async def write_text(port: int, doc: str, words: list[str]) -> None:
    writer = await SeqWatcher.join(port, "writer", doc)
    try:
        for ref, word in enumerate(words):
            await writer.insert(ref, 0, word)
    finally:
        await writer.close()


async def test_edits_made_before_a_new_webhook_takes_its_lease_are_delivered(
    settings: Settings, start_server, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
):
    # The webhook has never been delivered: it begins where the feed ended when the
    # server started, not where it ends once its lease is taken (edits came first).
    from collab.store.sqlite import SQLiteStore

    leased = asyncio.Event()
    lease = SQLiteStore.lease_webhook

    async def late_lease(self: SQLiteStore, *args: Any) -> Any:
        await leased.wait()
        return await lease(self, *args)

    monkeypatch.setattr(SQLiteStore, "lease_webhook", late_lease)
    server = await start_server(webhook_settings(settings, receiver))
    await write_text(server.port, "early", ["one", "two"])
    leased.set()
    await receiver.wait_for(lambda: receiver.last_seqs() == {"early": 2})
    assert in_order(receiver, "early")[0][0] == 1
    assert [r.event for r in receiver.taken][:1] == ["created"]


def test_a_document_is_due_once_quiet_or_once_it_waited_the_longest():
    from collab.metrics import Metrics
    from collab.store import Author, UpdateRecord
    from collab.store.memory import MemoryStore
    from collab.webhooks.delivery import Pending, WebhookRunner

    now = [100.0]
    settings = Settings(
        webhook="http://127.0.0.1:9/hook",
        webhook_secret="s" * 20,
        webhook_quiet_s=2.0,
        webhook_max_wait_s=5.0,
    )
    runner = WebhookRunner(
        WebhookSpec.parse(settings.webhook),
        MemoryStore(),
        settings,
        Metrics(),
        None,  # type: ignore[arg-type] - nothing is sent here
        clock=lambda: now[0],
    )
    pending = Pending("notes", (0, 0), now[0], now[0])
    runner._pending["notes"] = pending
    for second in range(7):  # an update every second: never quiet for 2 s
        now[0] = 100.0 + second
        pending.add(UpdateRecord("notes", second + 1, b"", 0.0, Author("ann")), now[0])
        due, wait = runner._next_due(now[0])
        if second < 5:
            assert due is None and wait == pytest.approx(min(2.0, 5.0 - second))
        else:
            assert due is pending  # waited 5 s: sent however busy the document is
    pending.first_at = now[0]
    now[0] += 1.9
    assert runner._next_due(now[0])[0] is None
    now[0] += 0.1
    assert runner._next_due(now[0])[0] is pending  # 2 s quiet

    # A deletion ends its document's generation: nothing more to wait for.
    gone = Pending("drafts", (1, 0), now[0], now[0])
    gone.deletion = DeletionRecord("drafts", "e1", 3, 0.0)
    runner._pending = {"notes": Pending("notes", (0, 0), now[0], now[0]), "drafts": gone}
    assert runner._next_due(now[0]) == (gone, 0.0)
    assert (pending.first_seq, pending.last_seq, pending.authors) == (1, 7, ["ann"])


async def test_one_of_two_instances_delivers_and_the_other_takes_over_when_it_stops(
    settings: Settings, start_server, receiver: Receiver
):
    one = await start_server(webhook_settings(settings, receiver, instance_id="one"))
    two = await start_server(webhook_settings(settings, receiver, instance_id="two"))
    runners = {"one": one.webhooks.runners[0], "two": two.webhooks.runners[0]}
    await write_text(two.port, "notes", ["a", "b"])
    await receiver.wait_for(lambda: receiver.last_seqs() == {"notes": 2})
    (holder,) = [name for name, runner in runners.items() if runner.leased]
    states = await one.store.webhook_states()
    assert [s.lease_instance for s in states] == [holder]

    other = "two" if holder == "one" else "one"
    await {"one": one, "two": two}[holder].stop()  # hands the lease on
    survivor = {"one": one, "two": two}[other]
    await write_text(survivor.port, "notes", ["c"])
    await receiver.wait_for(lambda: receiver.last_seqs() == {"notes": 3})
    assert runners[other].leased
    assert in_order(receiver, "notes")[-1][1] == 3


class ForgetfulStore(MemoryStore):
    """A store whose feed, once ``forget`` is set, fails at its next commit and
    then cannot follow on from where it was (as a MongoDB oplog that moved past a
    resume token while the connection was down)."""

    def __init__(self) -> None:
        super().__init__()
        self.forget = False

    async def follow(
        self,
        after: FeedPosition,
        *,
        poll_s: float,
        exclude_instance: str | None = None,
        deletions: bool = False,
        documents: HeldDocuments | None = None,
    ) -> AsyncIterator[tuple[FeedPosition, list[FeedRecord]]]:
        if self.forget:
            self.forget = False
            raise FeedLost("the oplog moved past it")
        feed = super().follow(
            after,
            poll_s=poll_s,
            exclude_instance=exclude_instance,
            deletions=deletions,
            documents=documents,
        )
        async for batch in feed:
            if self.forget and batch[1]:
                raise StoreError("the connection dropped")
            yield batch


@pytest.mark.allow_error_logs
async def test_a_place_lost_from_the_feed_is_counted_and_shown_and_delivery_goes_on(
    settings: Settings, start_server, receiver: Receiver
):
    store = ForgetfulStore()
    server = await start_server(webhook_settings(settings, receiver, store_url="memory://"), store)
    await write_text(server.port, "notes", ["before"])
    await receiver.wait_for(lambda: receiver.last_seqs() == {"notes": 1})
    runner = server.webhooks.runners[0]

    store.forget = True
    await write_text(server.port, "notes", ["lost"])  # seq 2: never read by the webhook
    await wait_until(lambda: runner.state.last_error is not None)
    await write_text(server.port, "notes", ["after"])
    await receiver.wait_for(lambda: receiver.last_seqs() == {"notes": 3})

    assert runner.state.last_error.startswith("changes lost")
    _, metrics = await http_get(server, "/metrics")
    assert f'collab_webhook_lost_total{{webhook="{receiver.url}"}} 1.0' in metrics.decode()
