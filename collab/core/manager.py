"""The room manager: which documents are live, loading them once, unloading them
safely.

- Loading is single-flight: every subscriber that arrives while a document loads
  waits for that one load and joins the same room; none sees an empty document.
- A failed load fails closed: the waiting subscribers get LoadFailed, no room is
  kept, and nothing is written to the store, so the stored document is untouched.
- A room is unloaded after its last session leaves and its writes are durable,
  re-checking after every await that nobody joined (or is joining) meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from collab.config import Settings
from collab.core.room import JoinReply, Room, build_replica
from collab.core.session import Session, SessionState
from collab.core.writer import Writer
from collab.errors import CollabError, ErrorCode, LoadFailed, SeqConflict, StoreError
from collab.store.base import Store
from collab.tasks import TaskGroup

log = logging.getLogger("collab.rooms")


class RoomManager:
    def __init__(self, store: Store, settings: Settings) -> None:
        self._store = store
        self._settings = settings
        self.writer = Writer(store, settings, on_conflict=self._on_write_conflict)
        self._rooms: dict[str, Room] = {}
        self._loading: dict[str, asyncio.Future[Room]] = {}
        self._joining: Counter[str] = Counter()
        self._unloading: set[str] = set()
        # Rooms dropped with writes still queued: their next load waits for them.
        self._draining: dict[str, Room] = {}
        self._tasks = TaskGroup(log)
        self.loads = 0  # completed loads, for tests and metrics

    def start(self) -> None:
        self.writer.start()

    def get(self, name: str) -> Room | None:
        return self._rooms.get(name)

    @property
    def rooms(self) -> dict[str, Room]:
        return dict(self._rooms)

    # -- join and leave -------------------------------------------------------------------

    async def join(
        self, name: str, session: Session, state_vector: bytes | None
    ) -> JoinReply | None:
        """Load the document if needed and join the session to its room. Returns
        None when the session was closed (its peer left) while the document loaded."""
        self._joining[name] += 1
        try:
            room = self._rooms.get(name)
            if room is None:
                room = await asyncio.shield(self._load(name))
            if session.state is SessionState.CLOSED:
                return None
            return room.join(session, state_vector)
        finally:
            self._joining[name] -= 1
            if not self._joining[name]:
                del self._joining[name]
            room = self._rooms.get(name)
            if room is not None:
                self._maybe_unload(room)

    def leave(self, session: Session) -> None:
        room = session.room
        session.state = SessionState.CLOSED
        if room is None:
            return
        room.leave(session)
        self._maybe_unload(room)

    # -- loading ----------------------------------------------------------------------------

    def _load(self, name: str) -> asyncio.Future[Room]:
        future = self._loading.get(name)
        if future is None:
            future = self._loading[name] = asyncio.get_running_loop().create_future()
            # Waiters may all go away; the outcome is still consumed here.
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
            self._tasks.spawn(self._run_load(name, future), name=f"load {name}")
        return future

    async def _run_load(self, name: str, future: asyncio.Future[Room]) -> None:
        try:
            draining = self._draining.get(name)
            if draining is not None:
                await draining.flushed()
            loaded = await self._store.load(name)
            loop = asyncio.get_running_loop()
            replica = await loop.run_in_executor(None, build_replica, loaded, self._settings)
            room = Room(loaded, replica, self.writer, self._settings, self._on_room_damaged)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            if isinstance(exc, StoreError):
                log.warning("loading %r failed: %s", name, exc)
            else:
                log.error("loading %r failed", name, exc_info=True)
            future.set_exception(LoadFailed(f"document {name!r} could not be loaded", doc=name))
            return
        finally:
            self._loading.pop(name, None)
        self._rooms[name] = room
        self.loads += 1
        log.info(
            "loaded %r: seq %d, snapshot at %s, %d updates replayed",
            name,
            room.head_seq,
            loaded.snapshot.seq if loaded.snapshot else "-",
            len(loaded.updates),
        )
        future.set_result(room)

    # -- unloading ---------------------------------------------------------------------------

    def _busy(self, room: Room) -> bool:
        return bool(room.sessions) or self._joining[room.name] > 0

    def _maybe_unload(self, room: Room) -> None:
        if self._busy(room) or room.name in self._unloading or self._tasks.closed:
            return
        self._unloading.add(room.name)
        self._tasks.spawn(self._unload(room), name=f"unload {room.name}")

    async def _unload(self, room: Room) -> None:
        try:
            await room.flushed()
            # Re-check after the await: a peer may have joined while writes finished.
            if self._busy(room) or not room.idle or self._rooms.get(room.name) is not room:
                return
            del self._rooms[room.name]
            room.close()
            log.info("unloaded %r at seq %d", room.name, room.head_seq)
        finally:
            self._unloading.discard(room.name)

    def _on_room_damaged(self, room: Room, error: CollabError) -> None:
        """pycrdt failed inside the room's doc: drop the room. Its peers are told
        and resubscribe; the next load waits until its queued writes are stored,
        so it holds every accepted update and nothing else."""
        if self._rooms.get(room.name) is not room:
            return
        del self._rooms[room.name]
        self._draining[room.name] = room
        failure = CollabError(
            f"document {room.name!r} had to be reloaded; subscribe again",
            code=ErrorCode.LOAD_FAILED,
            doc=room.name,
        )
        for session in list(room.sessions):
            room.leave(session)
            session.peer.session_failed(session, failure)
        room.close()
        self._tasks.spawn(self._drain(room), name=f"drain {room.name}")

    async def _drain(self, room: Room) -> None:
        try:
            await room.flushed()
        finally:
            if self._draining.get(room.name) is room:
                del self._draining[room.name]

    def _on_write_conflict(self, name: str, error: SeqConflict) -> None:
        # The store's log for this document moved on without us: the room's state
        # is no longer the stored one. Drop the room; its peers resubscribe and
        # get the stored state, and resend what was never acknowledged.
        room = self._rooms.pop(name, None)
        if room is None:
            return
        failure = CollabError(
            f"document {name!r} was changed elsewhere; subscribe again",
            code=ErrorCode.LOAD_FAILED,
            doc=name,
        )
        for session in list(room.sessions):
            room.leave(session)
            session.peer.session_failed(session, failure)
        room.close()

    # -- shutdown ------------------------------------------------------------------------------

    async def close(self) -> None:
        """Flush every room's writes, stop the writer, drop the rooms."""
        await self._tasks.close()
        await self.writer.stop()
        for room in self._rooms.values():
            room.close()
        self._rooms.clear()
