"""The bookkeeping of HTTP writes, without a server: answers kept by
Idempotency-Key (bounded in count and time, only those of writes that were
made), and each caller's rate of writes and bytes."""

from __future__ import annotations

import pytest

from collab.core.limits import WriteLimiter
from collab.errors import RateLimited
from collab.web.idempotency import IdempotencyKeys, KeyReused

SCOPE = ("user:a", "doc", "key")


async def test_a_key_s_answer_is_given_again_to_the_same_request_and_refused_to_another():
    keys = IdempotencyKeys(max_keys=10, ttl_s=60)
    answer, first = keys.begin(SCOPE, b"body", now=0)
    waiting, second = keys.begin(SCOPE, b"body", now=1)
    assert (first, second) == (True, False) and waiting is answer

    keys.finish(SCOPE, answer, (200, {"seq": 3}), keep=True)

    assert await waiting == (200, {"seq": 3})
    assert keys.begin(SCOPE, b"body", now=2)[1] is False
    with pytest.raises(KeyReused):
        keys.begin(SCOPE, b"other body", now=2)


async def test_a_refused_write_is_not_kept_and_keys_expire_and_are_bounded():
    keys = IdempotencyKeys(max_keys=2, ttl_s=60)
    answer, _ = keys.begin(SCOPE, b"body", now=0)
    keys.finish(SCOPE, answer, (422, {"error": "no"}), keep=False)
    assert await answer == (422, {"error": "no"})
    assert keys.begin(SCOPE, b"body", now=1)[1] is True  # made again

    for n in range(3):
        scope = ("user:a", "doc", f"k{n}")
        keys.finish(scope, keys.begin(scope, b"", now=2)[0], (200, {}), keep=True)
    assert len(keys) == 2
    assert keys.begin(("user:a", "doc", "k2"), b"", now=61)[1] is False
    assert keys.begin(("user:a", "doc", "k2"), b"", now=62.5)[1] is True  # expired


async def test_a_caller_writing_fast_pushes_out_its_own_keys_not_another_callers():
    keys = IdempotencyKeys(max_keys=5, ttl_s=3600)
    alice = ("user:alice", "doc", "alice-key-1")
    keys.finish(alice, keys.begin(alice, b"body", now=0)[0], (200, {"seq": 1}), keep=True)
    for n in range(20):
        scope = ("user:mallory", "doc", f"mk{n}")
        keys.finish(scope, keys.begin(scope, b"", now=1)[0], (200, {}), keep=True)
    assert len(keys) == 5
    answer, first = keys.begin(alice, b"body", now=2)  # alice's retry
    assert first is False and await answer == (200, {"seq": 1})


def test_writes_past_a_caller_s_rate_are_refused_with_the_wait_and_cost_nothing():
    limiter = WriteLimiter(per_s=1.0, burst=2, bytes_per_s=100, bytes_burst=1000)
    limiter.admit("a", 10, now=0)
    with pytest.raises(RateLimited) as too_big:
        limiter.admit("a", 2000, now=0)  # more bytes than a burst: its token given back
    limiter.admit("a", 10, now=0)
    with pytest.raises(RateLimited) as too_many:
        limiter.admit("a", 10, now=0)
    limiter.admit("b", 10, now=0)  # another caller's own buckets

    assert too_big.value.retry_after_s == 60  # never fits: the longest wait said
    assert too_many.value.retry_after_s == pytest.approx(1.0)
    limiter.admit("a", 10, now=1.0)


def test_the_bytes_of_a_write_counted_already_are_counted_alone():
    limiter = WriteLimiter(per_s=1.0, burst=1, bytes_per_s=100, bytes_burst=1000)
    limiter.admit("a", 0, now=0)
    limiter.admit("a", 900, now=0, request=False)  # its chunked body, once read
    with pytest.raises(RateLimited):
        limiter.admit("a", 200, now=0, request=False)
