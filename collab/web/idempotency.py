"""Answers to HTTP writes, kept by the ``Idempotency-Key`` their client sent, so
that a client that retries (it lost the answer, the connection broke) gets the
first answer again and its write is not made twice.

A key is scoped to its caller and document. The same key with another body is
refused (422). A second request with a key whose first is still under way
waits for the first's answer. Only the answers of writes that were made are
kept (or may have been: applied, but not stored in time): a refused write
changed nothing, so sending it again is safe, and is made again. Keys
live in this process's memory, at most ``idempotency_keys`` of them for at most
``idempotency_key_ttl_s``: they do not survive a restart and are not shared
between instances (docs/API.md says so). Past the bound, the caller holding the
most keys loses its oldest: one caller writing fast cannot push out another's keys.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

MAX_KEY_LENGTH = 255  # characters of an Idempotency-Key

Answer = tuple[int, dict[str, Any]]  # (status, JSON body)
Scope = tuple[str, str, str]  # (caller, document, key)


class KeyReused(Exception):
    """The key was sent before with another request."""


def valid_key(key: str) -> bool:
    return 0 < len(key) <= MAX_KEY_LENGTH and key.isprintable() and key.isascii()


@dataclass(slots=True)
class _Entry:
    fingerprint: bytes
    created: float
    answer: asyncio.Future[Answer] = field(default_factory=asyncio.Future)


class IdempotencyKeys:
    def __init__(self, max_keys: int, ttl_s: float) -> None:
        self._max_keys = max_keys
        self._ttl_s = ttl_s
        self._entries: OrderedDict[Scope, _Entry] = OrderedDict()  # oldest first
        self._by_caller: dict[str, OrderedDict[Scope, None]] = {}  # each caller's, oldest first

    def __len__(self) -> int:
        return len(self._entries)

    def begin(
        self, scope: Scope, fingerprint: bytes, now: float | None = None
    ) -> tuple[asyncio.Future[Answer], bool]:
        """The key's answer, and whether this request is the key's first: then
        it makes the write and gives the answer to :meth:`finish`; else it awaits
        the first's answer (done already when it was kept). Raises KeyReused when
        the key came with another request."""
        now = time.monotonic() if now is None else now
        self._expire(now)
        entry = self._entries.get(scope)
        if entry is not None:
            if entry.fingerprint != fingerprint:
                raise KeyReused(
                    "this Idempotency-Key was sent with another request: use a new key "
                    "for each write"
                )
            return entry.answer, False
        entry = self._entries[scope] = _Entry(fingerprint, now)
        self._by_caller.setdefault(scope[0], OrderedDict())[scope] = None
        while len(self._entries) > self._max_keys:
            keys = max(self._by_caller.values(), key=len)
            self._forget(next(iter(keys)))
        return entry.answer, True

    def _forget(self, scope: Scope) -> None:
        del self._entries[scope]
        keys = self._by_caller[scope[0]]
        del keys[scope]
        if not keys:
            del self._by_caller[scope[0]]

    def finish(
        self, scope: Scope, future: asyncio.Future[Answer], answer: Answer, *, keep: bool
    ) -> None:
        """The key's first request was answered (``future``, from :meth:`begin`):
        kept if ``keep`` (it made its write, or may have), and told to the requests
        waiting for it either way."""
        entry = self._entries.get(scope)
        if entry is not None and entry.answer is future and not keep:
            self._forget(scope)
        if not future.done():
            future.set_result(answer)

    def _expire(self, now: float) -> None:
        while self._entries:
            scope, entry = next(iter(self._entries.items()))
            if now - entry.created < self._ttl_s:
                break
            self._forget(scope)
