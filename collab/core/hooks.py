"""The extensions' hooks as the server calls them (the API is collab.extensions).

Deciding hooks (authenticate, load a new document, before an update) are awaited
where they decide, each call within ``hook_timeout_s``; a hook that raises or
runs out of time fails closed with an error naming it (``hook_failed``).

Observing hooks (connect, disconnect, change, store, delete) never run on the
path of an edit: events go into a bounded queue (``hook_queue_events``; past it
they are dropped with a warning) that one owned task drains, one hook call at a
time, in order. Changes are not queued as events but coalesced per document (a
range of seqs) and handed on after a quiet period; the records of a change are
read from the log by their seqs when it is handed on. ``close()`` cancels and
awaits that task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from collab.auth import Identity
from collab.config import Settings
from collab.core.history import state_at
from collab.errors import AccessDenied, CloseCode, CollabError, ErrorCode, StoreError
from collab.extensions import (
    HOOKS,
    Change,
    Connection,
    IncomingUpdate,
    Refuse,
    Request,
    Stored,
    hook_of,
)
from collab.store import Store, UpdateRecord
from collab.tasks import TaskGroup

log = logging.getLogger("collab.hooks")

CHANGE_READ_LIMIT = 10_000  # records of one change read from the log, at most


class HookFailed(CollabError):
    """A deciding hook raised or ran out of time: what it decides is refused."""

    code = ErrorCode.HOOK_FAILED


@dataclass(slots=True)
class _PendingChange:
    first_seq: int
    last_seq: int
    due: float  # loop time: quiet period ends
    deadline: float  # loop time: the longest wait ends


class Hooks:
    """Every extension's hooks, chained in order. With no extensions every call
    is cheap and nothing runs."""

    def __init__(
        self,
        extensions: Sequence[object],
        settings: Settings,
        store: Store,
        *,
        revoked: Callable[[Identity], bool] = lambda identity: False,
    ) -> None:
        self.extensions = list(extensions)
        self._revoked = revoked  # POST /api/admin/revoke applies to hook identities too
        self._settings = settings
        self._store = store
        self._timeout_s = settings.hook_timeout_s
        self._events: deque[tuple[str, Any]] = deque()
        self._changes: dict[str, _PendingChange] = {}
        self._wakeup = asyncio.Event()
        self._tasks = TaskGroup(log)
        self.dropped = 0  # events dropped past the queue's bound
        self._hooks: dict[str, list[tuple[object, Callable[..., Awaitable[Any]]]]] = {}
        for extension in self.extensions:
            for name in HOOKS:
                method = hook_of(extension, name)
                if method is not None:
                    self._hooks.setdefault(name, []).append((extension, method))

    def has(self, name: str) -> bool:
        return name in self._hooks

    # -- lifetime ---------------------------------------------------------------------

    def start(self) -> None:
        if any(self.has(n) for n in ("on_connect", "on_disconnect", "on_store", "on_delete")) or (
            self.has("on_change")
        ):
            self._tasks.spawn(self._run(), name="extension hooks")

    async def close(self) -> None:
        """Cancel the observers' task (a hook under way is cancelled) and await it."""
        await self._tasks.close()

    # -- deciding hooks -----------------------------------------------------------------

    async def _decide(self, name: str, method: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Call a deciding hook within the time limit; Refuse passes through, any
        other failure is HookFailed."""
        try:
            return await asyncio.wait_for(method(*args), self._timeout_s)
        except Refuse:
            raise
        except TimeoutError:
            log.warning("%s of %s took more than %gs", name, _named(method), self._timeout_s)
            raise HookFailed(
                f"the application's {name} hook did not answer within {self._timeout_s:g} s"
            ) from None
        except Exception as exc:
            log.error("%s of %s failed", name, _named(method), exc_info=exc)
            raise HookFailed(f"the application's {name} hook failed") from None

    async def authenticate(self, request: Request) -> Identity | None:
        """The identity the first extension answers with (None: none did, the JWT
        modes decide). Raises AccessDenied when one refuses or fails."""
        for _, method in self._hooks.get("on_authenticate", ()):
            try:
                identity = await self._decide("on_authenticate", method, request)
            except Refuse as refused:
                if refused.forbidden:
                    raise AccessDenied(
                        refused.reason, code=ErrorCode.FORBIDDEN, close_code=CloseCode.FORBIDDEN
                    ) from None
                raise AccessDenied(
                    refused.reason,
                    code=ErrorCode.UNAUTHORIZED,
                    close_code=CloseCode.UNAUTHORIZED,
                ) from None
            except HookFailed as failed:
                # Not the peer's fault: a transient close, it may try again.
                failed.close_code = CloseCode.INTERNAL_ERROR
                raise
            if identity is not None:
                if not isinstance(identity, Identity):
                    log.error("on_authenticate of %s returned %r", _named(method), identity)
                    raise HookFailed(
                        "the application's on_authenticate hook returned no identity",
                        close_code=CloseCode.INTERNAL_ERROR,
                    )
                if self._revoked(identity):
                    # As for a token: an identity whose issued_s (the session's start)
                    # is not after the user's revocation is refused.
                    raise AccessDenied(
                        f"the access of {identity.user!r} was revoked",
                        code=ErrorCode.UNAUTHORIZED,
                        close_code=CloseCode.UNAUTHORIZED,
                    )
                return identity
        return None

    async def load_document(self, doc: str) -> bytes | None:
        """The first content the extensions give a new document (None: none)."""
        for _, method in self._hooks.get("on_load_document", ()):
            try:
                seed = await self._decide("on_load_document", method, doc)
            except Refuse as refused:
                raise HookFailed(refused.reason, doc=doc) from None
            if seed:
                if not isinstance(seed, (bytes, bytearray, memoryview)):
                    log.error("on_load_document of %s returned %r", _named(method), type(seed))
                    raise HookFailed(
                        "the application's on_load_document hook returned no Yjs update",
                        doc=doc,
                    )
                return bytes(seed)
        return None

    async def before_update(self, update: IncomingUpdate) -> None:
        """Raise CollabError (``update_refused``, ``hook_failed``) to refuse the update."""
        for _, method in self._hooks.get("before_update", ()):
            try:
                await self._decide("before_update", method, update)
            except Refuse as refused:
                raise CollabError(
                    refused.reason, code=ErrorCode.UPDATE_REFUSED, doc=update.doc
                ) from None
            except HookFailed as failed:
                failed.doc = update.doc
                raise

    # -- observing hooks ----------------------------------------------------------------

    def connected(self, connection: Connection) -> None:
        self._queue("on_connect", connection)

    def disconnected(self, connection: Connection) -> None:
        self._queue("on_disconnect", connection)

    def deleted(self, doc: str) -> None:
        self._queue("on_delete", doc)

    def committed(self, records: Sequence[UpdateRecord]) -> None:
        """This instance stored ``records`` (the writer, after each commit)."""
        if not records:
            return
        if self.has("on_store"):
            self._queue("on_store", Stored(tuple(records)))
        if self.has("on_change"):
            self._changed(records)

    def _queue(self, name: str, argument: Any) -> None:
        if name not in self._hooks or self._tasks.closed:
            return
        if len(self._events) >= self._settings.hook_queue_events:
            self.dropped += 1
            log.warning(
                "%s dropped: %d hook events are waiting (hook_queue_events)",
                name,
                len(self._events),
            )
            return
        self._events.append((name, argument))
        self._wakeup.set()

    def _changed(self, records: Sequence[UpdateRecord]) -> None:
        now = asyncio.get_running_loop().time()
        s = self._settings
        for record in records:
            pending = self._changes.get(record.doc)
            if pending is None:
                if len(self._changes) >= s.hook_queue_events:
                    self.dropped += 1
                    log.warning("on_change of %r dropped: too many documents wait", record.doc)
                    continue
                self._changes[record.doc] = _PendingChange(
                    record.seq,
                    record.seq,
                    now + s.hook_change_debounce_s,
                    now + s.hook_change_max_wait_s,
                )
            else:
                pending.first_seq = min(pending.first_seq, record.seq)
                pending.last_seq = max(pending.last_seq, record.seq)
                pending.due = min(now + s.hook_change_debounce_s, pending.deadline)
        self._wakeup.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while self._events:
                name, argument = self._events.popleft()
                await self._observe(name, argument)
            now = loop.time()
            due = [doc for doc, pending in self._changes.items() if pending.due <= now]
            for doc in due:
                pending = self._changes.pop(doc)
                await self._hand_on_change(doc, pending)
            if self._events or due:
                continue
            self._wakeup.clear()
            wait = min((p.due for p in self._changes.values()), default=None)
            with contextlib.suppress(TimeoutError):  # a change fell due
                await asyncio.wait_for(
                    self._wakeup.wait(), None if wait is None else max(0.0, wait - loop.time())
                )

    async def _hand_on_change(self, doc: str, pending: _PendingChange) -> None:
        try:
            records = await self._store.read_updates(
                doc,
                after_seq=pending.first_seq - 1,
                until_seq=pending.last_seq,
                limit=CHANGE_READ_LIMIT,
            )
        except StoreError as exc:
            log.warning("on_change of %r skipped: the log could not be read: %s", doc, exc)
            return
        change = Change(doc, pending.first_seq, pending.last_seq, tuple(records), self._state)
        await self._observe("on_change", change)

    async def _state(self, doc: str, seq: int) -> bytes:
        return (await state_at(self._store, doc, seq))[1]

    async def _observe(self, name: str, argument: Any) -> None:
        for _, method in self._hooks.get(name, ()):
            started = time.monotonic()
            try:
                await asyncio.wait_for(method(argument), self._timeout_s)
            except TimeoutError:
                log.warning(
                    "%s of %s took more than %gs: skipped", name, _named(method), self._timeout_s
                )
            except Exception as exc:
                log.error("%s of %s failed", name, _named(method), exc_info=exc)
            else:
                log.debug("%s of %s: %.3fs", name, _named(method), time.monotonic() - started)


def _named(method: Callable[..., Any]) -> str:
    owner = getattr(method, "__self__", None)
    return type(owner).__qualname__ if owner is not None else getattr(method, "__qualname__", "?")
