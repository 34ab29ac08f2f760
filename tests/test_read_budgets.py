"""What a read may cost: versions, states and diffs spend a budget of log updates,
bytes and CPU time counted as they go (422 past it), at most
max_expensive_requests run at once and max_expensive_requests_per_user of one
user (429 past them), on threads of their own; the timeline and pages of history
end early instead. Measured: the worst reads a read-only token can make on a
document typed one character per update, 20,000 times, six at once, answer
within seconds and leave another peer's acknowledgements fast."""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from collab.auth import Authenticator
from collab.store import Author, NewUpdate
from collab.store.memory import MemoryStore
from collab.store.sqlite import SQLiteStore
from tests.helpers import RawPeer, text_update, typing_updates_at, wait_until
from tests.processes import server_process

SECRET = "read-budget-test-secret-of-32-bytes!"
TYPED = 20_000
ROOT = Path(__file__).resolve().parent.parent


def token(user: str, docs: dict[str, str]) -> str:
    return Authenticator(SECRET).issue(user, docs)


def typed_updates(count: int, seed: int = 1) -> list[bytes]:
    """A text typed one character per update, each at a random place: the text
    ends up one Yjs item per character (nothing merges), the most a text of that
    many updates can cost to replay and diff."""
    chance = random.Random(seed)
    places = [(chance.randrange(i + 1), "abcdefghij"[i % 10]) for i in range(count)]
    return typing_updates_at(places)


async def store_typed(store: Any, doc: str, updates: list[bytes]) -> None:
    """Straight into the store (as an import does): no snapshot, no checkpoint,
    so every version is replayed from the first update."""
    now = time.time()
    author = Author("typist", "keyboard", "test")
    for start in range(0, len(updates), 5000):
        await store.append([NewUpdate(doc, u, now, author) for u in updates[start : start + 5000]])


async def get(base: str, path: str, token_: str | None = None) -> tuple[int, bytes, float]:
    """``(status, body, seconds)`` of a GET."""
    headers = {"Authorization": f"Bearer {token_}"} if token_ else {}
    started = time.monotonic()
    try:
        response = await AsyncHTTPClient().fetch(base + path, headers=headers, request_timeout=120)
    except HTTPClientError as exc:
        assert exc.response is not None
        return exc.code, exc.response.body, time.monotonic() - started
    return response.code, response.body, time.monotonic() - started


class HeldStore(MemoryStore):
    """A memory store whose reads of document "held" wait until let go: requests
    that read it stay running as long as a test wants."""

    def __init__(self) -> None:
        super().__init__()
        self.go = asyncio.Event()
        self.waiting = 0

    async def latest_snapshot(self, doc: str, *, at_or_before_seq: int | None = None) -> Any:
        if doc == "held":
            self.waiting += 1
            await self.go.wait()
        return await super().latest_snapshot(doc, at_or_before_seq=at_or_before_seq)


async def test_expensive_reads_past_the_per_user_and_the_global_caps_are_refused_429(
    settings, start_server
):
    store = HeldStore()
    server = await start_server(
        settings.replace(
            store_url="memory://",
            auth_secret=SECRET,
            max_expensive_requests=2,
            max_expensive_requests_per_user=1,
        ),
        store,
    )
    await store_typed(store, "held", typed_updates(3))
    base = f"http://127.0.0.1:{server.port}"
    ann, bob, cy = (token(user, {"*": "read"}) for user in ("ann", "bob", "cy"))

    first = asyncio.ensure_future(get(base, "/api/documents/held/versions/2", ann))
    await wait_until(lambda: store.waiting == 1)
    status, body, _ = await get(base, "/api/documents/held/diff", ann)
    assert status == 429 and "your expensive reads" in json.loads(body)["error"]
    second = asyncio.ensure_future(get(base, "/api/documents/held/state", bob))
    await wait_until(lambda: store.waiting == 2)
    status, body, _ = await get(base, "/api/documents/held", cy)
    assert status == 429 and "on this server" in json.loads(body)["error"]
    # What is not expensive still answers.
    assert (await get(base, "/api/documents/held/history", cy))[0] == 200

    store.go.set()
    assert [(await first)[0], (await second)[0]] == [200, 200]
    assert (await get(base, "/api/documents/held", cy))[0] == 200  # the places are free again


async def test_without_tokens_the_per_user_cap_is_per_client_address(settings, start_server):
    store = HeldStore()
    server = await start_server(
        settings.replace(store_url="memory://", max_expensive_requests_per_user=1), store
    )
    await store_typed(store, "held", typed_updates(2))
    base = f"http://127.0.0.1:{server.port}"
    first = asyncio.ensure_future(get(base, "/api/documents/held"))
    await wait_until(lambda: store.waiting == 1)
    assert (await get(base, "/api/documents/held/versions/1"))[0] == 429
    store.go.set()
    assert (await first)[0] == 200


async def test_a_version_past_max_read_updates_is_refused_before_its_log_is_read(
    settings, start_server
):
    server = await start_server(settings.replace(max_read_updates=500))
    await store_typed(server.store, "long", typed_updates(2000))
    base = f"http://127.0.0.1:{server.port}"
    read_before = server.store.stats.log_rows_read

    status, body, _ = await get(base, "/api/documents/long/versions/2000")

    assert status == 422 and "max_read_updates" in json.loads(body)["error"]
    assert server.store.stats.log_rows_read - read_before <= 501 + 10  # not the 2,000
    assert (await get(base, "/api/documents/long/versions/400"))[0] == 200
    for path in (
        "/api/documents/long",
        "/api/documents/long/state",
        "/api/documents/long/diff",
        "/api/documents/long/authors",
    ):
        assert (await get(base, path))[0] == 422, path


async def test_a_diff_past_its_cpu_time_is_refused_saying_to_narrow_the_range(
    settings, start_server
):
    server = await start_server(settings.replace(max_read_cpu_s=0.05))
    await store_typed(server.store, "typed", typed_updates(6000))
    base = f"http://127.0.0.1:{server.port}"

    status, body, _ = await get(base, "/api/documents/typed/diff?from=0&to=6000")

    error = json.loads(body)["error"]
    assert status == 422 and "max_read_cpu_s" in error and "narrow the range" in error
    assert (await get(base, "/api/documents/typed/diff?from=0&to=5"))[0] == 200


async def test_the_timeline_ends_where_its_rows_run_out_and_goes_on_from_there(
    settings, start_server
):
    server = await start_server(settings.replace(max_read_updates=10))
    await store_typed(server.store, "typed", typed_updates(25))
    base = f"http://127.0.0.1:{server.port}"
    changes, after = [], 0
    while after is not None:
        status, body, _ = await get(
            base, f"/api/documents/typed/history?group=session&after={after}"
        )
        assert status == 200
        page = json.loads(body)
        changes += page["changes"]
        after = page["next_after"]
    # One user's one run of typing, read ten rows a request: three changes in turn.
    assert [(c["first_seq"], c["last_seq"]) for c in changes] == [(1, 10), (11, 20), (21, 25)]
    assert {c["user"] for c in changes} == {"typist"}


async def test_a_page_of_history_ends_early_past_max_read_bytes(settings, start_server):
    server = await start_server(settings.replace(max_read_bytes=64 * 1024))
    big = [text_update("x" * 20_000, 100 + i) for i in range(6)]
    await store_typed(server.store, "big", big)
    base = f"http://127.0.0.1:{server.port}"
    seqs, after = [], 0
    while after is not None:
        path = f"/api/documents/big/history?include=update&after={after}"
        status, body, _ = await get(base, path)
        page = json.loads(body)
        assert status == 200 and 1 <= len(page["updates"]) <= 3
        seqs += [u["seq"] for u in page["updates"]]
        after = page["next_after"]
    assert seqs == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
async def test_six_worst_case_reads_at_once_answer_in_seconds_and_leave_acks_fast(
    tmp_path: Path,
) -> None:
    path = tmp_path / "typed.db"
    store = SQLiteStore(path)
    await store.open()
    await store_typed(store, "typed", typed_updates(TYPED))
    await store.close()
    worst = [
        f"/api/documents/typed/diff?from=0&to={TYPED}",
        f"/api/documents/typed/diff?from=1&to={TYPED}",
        f"/api/documents/typed/versions/{TYPED}",
        f"/api/documents/typed/state?seq={TYPED}",
        "/api/documents/typed",
        f"/api/documents/typed/versions/{TYPED // 2}",
    ]
    # A server process of its own: in this one, the test's loop would be the
    # server's, and the test's work its latency. A read may spend 1 s of CPU, half
    # the default: the worst a read can cost is its budget, whatever the budget,
    # and the three that run take that much of the two cores for as long.
    async with server_process(
        f"sqlite:///{path}", "--auth-secret", SECRET, "--max-read-cpu-s", "1"
    ) as server:
        editor = await RawPeer.connect(f"{server.ws_url}/ws")
        editor.send({"type": "hello", "version": 1, "token": token("ed", {"notes": "write"})})
        assert (await editor.recv())["type"] == "welcome"
        await editor.subscribe("notes")
        ref = 0

        async def edit_until(done: asyncio.Future[Any]) -> list[float]:
            """The editor types at an editor's pace until ``done``: each update's
            time to its acknowledgement."""
            nonlocal ref
            latencies = []
            while not done.done():
                ref += 1
                sent = time.monotonic()
                editor.send(
                    {"type": "update", "doc": "notes", "ref": ref, "update": text_update("x", 9)}
                )
                while (await editor.recv())["type"] != "ack":
                    pass
                latencies.append(time.monotonic() - sent)
                await asyncio.sleep(0.01)  # an editor's pace, not a flood
            return latencies

        # What this machine gives without the reads (other tests may share it).
        alone = await edit_until(asyncio.ensure_future(asyncio.sleep(2.0)))
        # Six readers at once, six users: the per-user cap does not stop them.
        reading = asyncio.gather(
            *(get(server.url, p, token(f"reader{i}", {"*": "read"})) for i, p in enumerate(worst))
        )
        started = time.monotonic()
        beside = await edit_until(reading)
        reading_s = time.monotonic() - started
        answers = await reading
        editor.close()
        server_log = server.log_text()

    statuses = [status for status, _, _ in answers]
    # Three run (max_expensive_requests), the others are told to come back at
    # once; each that ran answered, or was refused past its budget.
    assert statuses.count(429) >= len(worst) - 3, statuses
    assert all(status in (200, 422, 429) for status in statuses), statuses
    assert any(status in (200, 422) for status in statuses), statuses
    for status, body, _ in answers:
        if status == 422:
            assert "max_read" in json.loads(body)["error"]
    assert "Traceback" not in server_log
    p99_alone, p99_beside = percentile(alone, 0.99), percentile(beside, 0.99)
    print(
        f"\nacks alone: median {statistics.median(alone) * 1000:.1f} ms, p99 "
        f"{p99_alone * 1000:.1f} ms; beside the reads: median "
        f"{statistics.median(beside) * 1000:.1f} ms, p99 {p99_beside * 1000:.1f} ms "
        f"({len(beside)} acks); reads {[(s, round(t, 2)) for s, _, t in answers]}"
    )
    # Safety bounds, with room for a loaded machine. On a fairly quiet one, at the
    # default budget (2 s of CPU), the reads took at most 3.4 to 4 s (a diff refused
    # past its 2 s, three sharing two cores) and the acks' p99 was 32 to 38 ms
    # beside them (3 to 8 ms alone);
    # while other tests shared its cores, up to 20 s (the budget is CPU time, and
    # the workers yield the CPU) and 80 ms. On the old code one diff took 45 s of
    # CPU and an ack 381 ms; with the reads on threads beside the loop, acks took
    # 12 ms at the median (1.3 ms alone) and 130 ms at p99.
    assert max(seconds for _, _, seconds in answers) < 60.0, answers
    assert statistics.median(beside) < statistics.median(alone) + 0.005
    # A read on the loop holds every ack behind it for as long as it runs: the editor
    # then spends most of the reads' time waiting (1.5 s of 1.7 s, measured with the
    # reads put on the loop on purpose). A full run's other tests (browsers, servers)
    # put a stall of up to 400 ms into an ack now and then, a tenth of the time.
    stalled = sum(seconds for seconds in beside if seconds > 0.1)
    # (At least 1 s of reading counted: one late ack must not fail reads that end soon.)
    assert stalled < 0.5 * max(reading_s, 1.0), (stalled, reading_s)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


@pytest.mark.slow
async def test_the_read_flood_of_scripts_flood_is_only_answered_or_refused(tmp_path: Path) -> None:
    """scripts/flood's reads mode (tests/flooder.py), the DoS case kept in the
    flood tooling: the costliest reads, six at once and again, get answers, or
    422 past their budget, or 429 past the caps; never an error, and the server
    lives."""
    path = tmp_path / "typed.db"
    store = SQLiteStore(path)
    await store.open()
    await store_typed(store, "typed", typed_updates(2_000))
    await store.close()
    async with server_process(f"sqlite:///{path}", "--auth-secret", SECRET) as server:
        flooder = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.flooder",
            "reads",
            f"{server.url}/api/documents/typed",
            "2",
            token("reader", {"*": "read"}),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(flooder.communicate(), 60)
        report = json.loads(out.decode().splitlines()[-1])
        status, _, _ = await get(server.url, "/healthz")
        server_log = server.log_text()
    assert report["requests"] > 0, report
    assert set(report["statuses"]) <= {"200", "422", "429"}, report
    assert "200" in report["statuses"], report
    assert status == 200
    assert "Traceback" not in server_log
