"""Presence across instances: awareness (cursors, who is here) through the store.

Each instance publishes its own peers' awareness changes (batched every
``awareness_flush_s``, without an fsync) and renews the states of those still
connected every ``awareness_refresh_s``, each valid for ``awareness_ttl_s``. It
follows the other instances' changes and hands them to its live rooms, which
send them to their peers. A state that is not renewed expires: when a peer leaves
its instance publishes the removal at once, and when an instance dies its peers'
cursors disappear everywhere within the time to live.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable

from collab.config import Settings
from collab.core.feed import FeedFollower
from collab.core.room import Room
from collab.errors import StoreError
from collab.store import AwarenessChange, Store
from collab.tasks import TaskGroup

log = logging.getLogger("collab.presence")


class Presence:
    def __init__(
        self, store: Store, settings: Settings, rooms: Callable[[], Iterable[Room]]
    ) -> None:
        self._store = store
        self._settings = settings
        self._rooms = rooms
        self._outbox: dict[tuple[str, int], bytes] = {}  # latest state per (doc, client)
        self._outbox_ready = asyncio.Event()
        self._tasks = TaskGroup(log)
        self._feed: FeedFollower[AwarenessChange] = FeedFollower(
            "the awareness feed",
            end=store.awareness_position,
            follow=lambda at: store.follow_awareness(at, poll_s=settings.feed_poll_s),
            poll_s=settings.feed_poll_s,
            log=log,
        )

    def start(self) -> None:
        self._tasks.spawn(self._flush_loop(), name="presence-flush")
        self._tasks.spawn(self._refresh_loop(), name="presence-refresh")
        self._tasks.spawn(self._follow_loop(), name="presence-follow")
        self._tasks.spawn(self._expire_loop(), name="presence-expire")

    async def close(self) -> None:
        """Publish what is pending (the removals of the peers that just left), then
        stop."""
        with contextlib.suppress(StoreError, TimeoutError):
            await asyncio.wait_for(self._flush(), 2.0)
        await self._tasks.close()

    def publish(self, doc: str, states: list[tuple[int, bytes]]) -> None:
        """Queue local peers' awareness changes (one update per client) for the others."""
        for client_id, update in states:
            self._outbox[(doc, client_id)] = update
        if states:
            self._outbox_ready.set()

    async def load(self, room: Room) -> None:
        """Give a room that just loaded the states other instances published."""
        try:
            changes = await self._store.awareness_of(room.name)
        except StoreError as exc:
            log.warning("reading the awareness of %r failed: %s", room.name, exc)
            return
        for change in changes:
            room.awareness.apply_remote(change)

    # -- out ------------------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            await self._outbox_ready.wait()
            try:
                await self._flush()
            except StoreError as exc:
                log.warning("publishing awareness failed: %s", exc)
            await asyncio.sleep(self._settings.awareness_flush_s)

    async def _flush(self) -> None:
        self._outbox_ready.clear()
        if not self._outbox:
            return
        outbox, self._outbox = self._outbox, {}
        expires = time.time() + self._settings.awareness_ttl_s
        instance = self._settings.instance_id
        await self._store.publish_awareness(
            [
                AwarenessChange(doc, client_id, instance, update, expires)
                for (doc, client_id), update in outbox.items()
            ]
        )

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.awareness_refresh_s)
            for room in list(self._rooms()):
                self.publish(room.name, room.awareness.local())

    # -- in -------------------------------------------------------------------------------

    async def _follow_loop(self) -> None:
        async with contextlib.aclosing(self._feed.batches()) as batches:
            async for _, changes in batches:
                self._deliver(changes)

    def _deliver(self, changes: list[AwarenessChange]) -> None:
        rooms = {room.name: room for room in self._rooms()}
        now = time.time()
        for change in changes:
            room = rooms.get(change.doc)
            if room is not None and change.expires_s > now:
                room.awareness.apply_remote(change)

    async def _expire_loop(self) -> None:
        interval = min(1.0, self._settings.awareness_ttl_s / 4)
        while True:
            await asyncio.sleep(interval)
            now = time.time()
            for room in list(self._rooms()):
                room.awareness.expire_remote(now)
