"""The room manager: which documents are live on this instance, loading them once,
following the other instances' commits, unloading them safely.

- Loading is single-flight: every subscriber that arrives while a document loads
  waits for that one load and joins the same room; none sees an empty document.
- A failed load fails closed: the waiting subscribers get LoadFailed, no room is
  kept, and nothing is written to the store, so the stored document is untouched.
- Loading while other instances write loses and doubles nothing: the load reads
  the snapshot and the log in one consistent read, the room then follows the
  store's feed (records at or below its seq are dropped, gaps are read from the
  log), and it reads the log once more after it is registered, for what was
  committed while it loaded.
- The feed brings only the documents held here (live or loading): the store asks
  for them as each poll or stream starts. A room registered while a poll or
  stream that left it out ran reads the log once more when one that includes it
  starts, for what that one passed over.
- A room is unloaded after its last session leaves and its writes are stored and
  sent, re-checking after every await that nobody joined (or is joining) meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pycrdt

from collab.auth import Role
from collab.config import Settings
from collab.core import authors
from collab.core.feed import FeedFollower
from collab.core.hooks import HookFailed, Hooks
from collab.core.limits import CreationLimiter
from collab.core.presence import Presence
from collab.core.room import LOG_PAGE, JoinReply, Resume, Room, build_replica
from collab.core.session import DETACHED, Session, SessionState
from collab.core.snapshots import Cadence, Snapshotter, encode
from collab.core.writer import Writer
from collab.errors import CollabError, DocumentChanged, ErrorCode, LoadFailed, StoreError
from collab.metrics import Metrics
from collab.store import Author, LoadedDocument, NewUpdate, SnapshotRecord, Store, UpdateRecord
from collab.tasks import TaskGroup
from collab.wire.replica import Replica

log = logging.getLogger("collab.rooms")

FEED_SAVE_S = 1.0  # the feed position is saved at most this often
MAX_ALIASES = 10_000  # provisional epochs of documents created elsewhere first, remembered


def _build_and_snapshot(
    loaded: LoadedDocument, settings: Settings
) -> tuple[Replica, SnapshotRecord | None]:
    """The replica a load describes (build_replica) and, when building it replayed
    a log long enough that a snapshot was due (a document imported or written
    without snapshots), a snapshot of it, so that the next load does not replay
    the same log. CPU-bound: run it in an executor."""
    replica = build_replica(loaded, settings)
    replayed = loaded.updates
    if not loaded.stored or not Cadence.of(settings).due(
        len(replayed), sum(len(record.data) for record in replayed)
    ):
        return replica, None
    # Its authors index too, when what it was built from says who wrote all of it.
    base = loaded.snapshot
    whole = base is None and bool(replayed) and replayed[0].seq == 1
    index = None
    if whole or (base is not None and base.authors is not None):
        index = authors.index_at(None if base is None else base.authors, replayed)
    made = encode(replica, loaded.name, loaded.head_seq, loaded.epoch, authors=index)
    return replica, made.snapshot


def _valid_update(update: bytes) -> bool:
    """Whether ``update`` is a Yjs update pycrdt applies (to an empty document)."""
    try:
        pycrdt.Doc().apply_update(update)
    except Exception:
        return False
    except BaseException as exc:  # pycrdt's PanicException is not an Exception
        if type(exc).__name__ != "PanicException":
            raise
        return False
    return True


class RoomManager:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        metrics: Metrics | None = None,
        *,
        clock: Callable[[], float] = time.time,
        hooks: Hooks | None = None,
    ) -> None:
        self._store = store
        self._settings = settings
        # The extensions' hooks (collab.extensions); started and closed with the rooms.
        self.hooks = hooks if hooks is not None else Hooks((), settings, store)
        # Unix seconds: the time its rooms give updates, and the retention's "now"
        # (tests move it forward instead of waiting).
        self._clock = clock
        self.metrics = metrics or Metrics()
        self.snapshots = Snapshotter(store, settings)
        self.writer = Writer(store, settings, self.metrics, on_heads=self.snapshots.committed)
        self.presence = Presence(store, settings, lambda: self._rooms.values())
        self.creations = CreationLimiter(settings.max_documents_created_per_minute)
        # (document, epoch its peers were given) -> the epoch it was created with by
        # another writer first; the newest MAX_ALIASES.
        self._aliases: dict[tuple[str, str], str] = {}
        self._rooms: dict[str, Room] = {}
        self._loading: dict[str, asyncio.Future[Room]] = {}
        # The documents held here (live or loading), the feed's filter; None when
        # _rooms or _loading changed since it was last built.
        self._held: frozenset[str] | None = None
        self._followed: frozenset[str] = frozenset()  # the set the feed was last given
        self._joining: Counter[str] = Counter()
        self._unloading: set[str] = set()
        # Rooms dropped with writes still queued: their next load waits for them.
        self._draining: dict[str, Room] = {}
        self._tasks = TaskGroup(log)
        self.loads = 0  # completed loads, for tests and metrics
        own = settings.instance_id
        self._feed: FeedFollower[UpdateRecord] = FeedFollower(
            "the feed",
            end=store.feed_position,
            # This instance's commits reach its rooms from the writer; the records
            # of documents it does not hold are left out by the store.
            follow=lambda at: store.follow(
                at,
                poll_s=settings.feed_poll_s,
                exclude_instance=own,
                documents=self._held_documents,
            ),
            poll_s=settings.feed_poll_s,
            log=log,
            on_recovered=self._feed_recovered,
        )
        self.feed_lag_s = 0.0  # from acceptance to arrival, of the latest records from the feed
        self._saving_position = False
        self._deleting: dict[str, asyncio.Event] = {}  # loads of these wait for the deletion
        self._seeding: dict[str, asyncio.Future[None]] = {}  # loads of these wait for the seed
        self.writer.on_document_changed.append(self._on_document_changed)
        if self.hooks.has("on_store") or self.hooks.has("on_change"):
            self.writer.on_commit.append(self.hooks.committed)

    def start(self) -> None:
        self.writer.start()
        self.snapshots.start()
        self.presence.start()
        self.hooks.start()
        self._tasks.spawn(self._follow(), name="follow the feed")
        self._tasks.spawn(self._audit(), name="audit the feed")
        if self._settings.history_retention_s > 0:
            self._tasks.spawn(self._retain(), name="drop history past the retention")

    @property
    def store(self) -> Store:
        return self._store

    def get(self, name: str) -> Room | None:
        return self._rooms.get(name)

    @property
    def rooms(self) -> dict[str, Room]:
        return dict(self._rooms)

    # -- join and leave -------------------------------------------------------------------

    async def join(
        self,
        name: str,
        session: Session,
        state_vector: bytes | None,
        resume: Resume | None = None,
    ) -> JoinReply | None:
        """Load the document if needed and join the session to its room. Returns
        None when the session was closed (its peer left) while the document loaded.
        A resuming session whose missed records the room no longer keeps in memory
        gets them from the log, if there are few enough to be worth it."""
        with self.holding(name):
            if session.role is Role.WRITE and self.hooks.has("on_load_document"):
                await self._seed_if_new(name, session)
            while True:
                room = await self.live(name)
                if (
                    resume is not None
                    and resume.epoch == room.epoch
                    and room.needs_log_for(resume.seq)
                    and room.head_seq - resume.seq <= self._settings.resume_max_updates
                ):
                    with contextlib.suppress(StoreError):  # the diff will do
                        fetched = await self._store.read_updates(
                            name, after_seq=resume.seq, until_seq=room.head_seq
                        )
                        resume = Resume(resume.seq, resume.epoch, tuple(fetched))
                    room = await self.live(name)
                if session.state is SessionState.CLOSED:
                    return None
                if self._rooms.get(name) is room:
                    break
                # Dropped (deleted, damaged, replaced) after it loaded and before
                # this joined: its peers were told, this one would never be.
            if (
                resume is not None
                and resume.epoch is not None
                and self._aliases.get((name, resume.epoch)) == room.epoch
            ):
                # The peer was given the epoch this instance meant the document to
                # have; another writer created it first (Room._adopt): the same one.
                resume = dataclasses.replace(resume, epoch=room.epoch)
            if not room.stored and session.role is not Role.WRITE:
                # Only a write creates a document: a reader finds nothing to read.
                raise CollabError(f"no document named {name!r}", code=ErrorCode.NOT_FOUND, doc=name)
            return room.join(session, state_vector, resume)

    async def watch(self, name: str, watcher: Callable[[UpdateRecord | None], None]) -> Room:
        """Load the document if needed and call ``watcher`` with every record its
        room sends from now on, until :meth:`unwatch`; with None if the room is
        dropped (watch the document again: it may have been deleted)."""
        with self.holding(name):
            room = await self.live(name)
            while self._rooms.get(name) is not room:  # dropped before this could watch it
                room = await self.live(name)
            room.watchers[watcher] = None
            return room

    async def deleted_yet(self, name: str) -> None:
        """Wait for a deletion of the document in progress here, if any."""
        deleting = self._deleting.get(name)
        if deleting is not None:
            await deleting.wait()

    def unwatch(self, room: Room, watcher: Callable[[UpdateRecord | None], None]) -> None:
        room.watchers.pop(watcher, None)
        self._maybe_unload(room)

    @contextlib.contextmanager
    def holding(self, name: str) -> Iterator[None]:
        """Keep the document's room from unloading while a join, an edit or a
        watch is under way (they await its load); after, unload it if idle."""
        self._joining[name] += 1
        try:
            yield
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
        session.peer = DETACHED
        if room is None:
            return
        room.leave(session)
        self._maybe_unload(room)

    # -- loading ----------------------------------------------------------------------------

    async def live(self, name: str) -> Room:
        """The document's live room, loaded if it is not (one load for everyone who
        asks meanwhile; a caller that goes away does not cancel it)."""
        return self._rooms.get(name) or await asyncio.shield(self._load(name))

    def _load(self, name: str) -> asyncio.Future[Room]:
        future = self._loading.get(name)
        if future is None:
            future = self._loading[name] = asyncio.get_running_loop().create_future()
            self._held = None
            # Waiters may all go away; the outcome is still consumed here.
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
            self._tasks.spawn(self._run_load(name, future), name=f"load {name}")
        return future

    async def _run_load(self, name: str, future: asyncio.Future[Room]) -> None:
        try:
            deleting = self._deleting.get(name)
            if deleting is not None:
                await deleting.wait()
            draining = self._draining.get(name)
            if draining is not None:
                await draining.flushed()
            started = time.monotonic()
            seeding = self._seeding.get(name)
            if seeding is not None:  # a writer's first content is being stored: load it
                await asyncio.wait([seeding])
            loaded = await self._store.load(name)
            loop = asyncio.get_running_loop()
            replica, snapshot = await loop.run_in_executor(
                None, _build_and_snapshot, loaded, self._settings
            )
            room = Room(
                loaded,
                replica,
                self.writer,
                self._settings,
                fetch_log=self._fetch_log,
                stored_epoch=self._stored_epoch,
                publish_awareness=self.presence.publish,
                on_damaged=self._on_room_damaged,
                metrics=self.metrics,
                admit_creation=self.creations.admit,
                on_adopt=self._adopted,
                clock=self._clock,
            )
            self.metrics.load_seconds.observe(time.monotonic() - started)
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
            self._held = None
        self._rooms[name] = room
        self.loads += 1
        log.info(
            "loaded %r: seq %d, snapshot at %s, %d updates replayed",
            name,
            room.head_seq,
            loaded.snapshot.seq if loaded.snapshot else "-",
            len(loaded.updates),
        )
        if snapshot is not None:
            self.snapshots.offer(snapshot)
        room.catch_up()  # what other instances committed while it loaded
        future.set_result(room)
        await self.presence.load(room)

    async def _seed_if_new(self, name: str, session: Session) -> None:
        """Before a writer joins a document that does not exist yet: its first
        content from the extensions (on_load_document), stored as its first update
        by the append that creates it (counted against the writer's creation cap),
        so that the load that follows finds it. One seed for everyone who asks at
        once: here one seeding is shared, and on another instance the second
        append is refused by the store (NewUpdate.first) and its load takes what
        is stored. A document open or opening here is loaded as it is."""
        if name in self._rooms or name in self._loading:
            return
        future = self._seeding.get(name)
        if future is None:
            future = self._seeding[name] = asyncio.get_running_loop().create_future()
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
            self._tasks.spawn(self._run_seed(name, session, future), name=f"seed {name}")
        await asyncio.shield(future)

    async def _run_seed(self, name: str, session: Session, future: asyncio.Future[None]) -> None:
        try:
            await self._seed(name, session)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except CollabError as exc:  # the hook's failure, the creation cap: to the peer
            exc.doc = name
            future.set_exception(exc)
        except StoreError as exc:
            log.warning("seeding %r failed: %s", name, exc)
            future.set_exception(LoadFailed(f"document {name!r} could not be loaded", doc=name))
        except BaseException as exc:  # anything else (a panic in pycrdt included): the
            # writers waiting for the seed are told, never left waiting
            log.exception("seeding %r failed", name)
            future.set_exception(LoadFailed(f"document {name!r} could not be seeded", doc=name))
            if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
                raise
        else:
            future.set_result(None)
        finally:
            self._seeding.pop(name, None)

    async def _seed(self, name: str, session: Session) -> None:
        loaded = await self._store.load(name)
        if loaded.stored:
            return
        seed = await self.hooks.load_document(name)
        if seed is None:
            return
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, _valid_update, seed):
            raise HookFailed(
                f"the application's on_load_document hook gave {name!r} a first content "
                "that is not a Yjs update",
                doc=name,
            )
        first = NewUpdate(
            name,
            seed,
            self._clock(),
            Author(None, "extension", self._settings.instance_id),
            epoch=loaded.epoch,
            create=True,
            first=True,
        )
        self.creations.admit(session)  # may raise RateLimited: the per-user creation cap
        try:
            result = await self._store.append([first])
        except DocumentChanged:
            log.info("%r was created meanwhile: its first content is what is stored", name)
        else:
            log.info("%r created with its first content from an extension", name)
            self.hooks.committed(result.records)

    async def _fetch_log(self, doc: str, after: int, until: int | None) -> list[UpdateRecord]:
        return await self._store.read_updates(doc, after_seq=after, until_seq=until, limit=LOG_PAGE)

    async def _stored_epoch(self, doc: str) -> str | None:
        info = await self._store.get_document(doc)
        return None if info is None else info.epoch

    # -- the feed --------------------------------------------------------------------------------

    async def _follow(self) -> None:
        """Hand every record the store's feed brings to its live room. After the feed
        was interrupted, every live room reads the log for what it missed. The
        position is saved now and then, so that a restart follows on from it."""
        own = self._settings.instance_id  # its commits reach the rooms from the writer
        try:
            self._feed.position = await self._store.saved_feed_position(own)
        except StoreError as exc:
            log.warning("could not read the saved feed position: %s", exc)
        saved = self._feed.position
        next_save = 0.0
        loop = asyncio.get_running_loop()
        async with contextlib.aclosing(self._feed.batches()) as batches:
            async for position, records in batches:
                now = self._clock()
                lag = 0.0  # of what live rooms receive; other records cost nothing
                for record in records:
                    room = self._rooms.get(record.doc)
                    if room is not None:
                        lag = max(lag, now - record.time_s)
                        room.receive(record)
                self.feed_lag_s = lag
                if position != saved and loop.time() >= next_save and not self._saving_position:
                    next_save = loop.time() + FEED_SAVE_S
                    saved = position
                    self._tasks.spawn(self._save_position(position), name="save the feed position")

    def _held_documents(self) -> frozenset[str]:
        """The documents whose records the feed must bring: those live or loading
        here (the same set while they do not change). The store asks as each poll
        or change stream starts. A live room the previous answer left out loaded
        while a poll or stream without it ran, which may have passed over what was
        committed after its load read the log: it reads the log again, now that
        the feed brings the rest."""
        held = self._held
        if held is None:
            held = self._held = frozenset(self._rooms.keys() | self._loading.keys())
        if held is not self._followed:
            for name in held - self._followed:
                room = self._rooms.get(name)
                if room is not None:
                    room.catch_up()
            self._followed = held
        return held

    @property
    def feed_failure(self) -> Exception | None:
        """Why other instances' commits cannot be followed now (None: they can)."""
        return self._feed.failure

    def _feed_recovered(self) -> None:
        """The feed was interrupted: live rooms read the log for what they missed."""
        for room in list(self._rooms.values()):
            room.catch_up()

    async def _save_position(self, position: object) -> None:
        self._saving_position = True
        try:
            await self._store.save_feed_position(self._settings.instance_id, position)
        except StoreError as exc:
            log.debug("saving the feed position failed: %s", exc)
        finally:
            self._saving_position = False

    async def _audit(self) -> None:
        """A safety net under the feed: a live room that, a whole audit period
        later, still lacks what the store held (a record the feed lost, with
        nothing after it to reveal the gap) reads the log."""
        lagging: dict[str, int] = {}  # room -> the store's head it lacked last time
        while True:
            await asyncio.sleep(self._settings.feed_audit_s)
            rooms = list(self._rooms.values())
            try:
                heads = await self._store.head_seqs([room.name for room in rooms]) if rooms else {}
            except StoreError as exc:
                log.debug("auditing the feed failed: %s", exc)
                continue
            for room in rooms:
                if heads.get(room.name, -1) < room.head_seq and await self._replaced(room):
                    # Deleted (or deleted and created again) by another instance.
                    self._drop(room, f"document {room.name!r} was deleted; subscribe again")
                    continue
                missed = lagging.get(room.name)
                if missed is not None and room.known_seq < missed:
                    log.warning(
                        "%r lacks seq %d..%d from the store: reading the log",
                        room.name,
                        room.known_seq + 1,
                        missed,
                    )
                    room.catch_up()
            lagging = {
                room.name: heads[room.name]
                for room in rooms
                if heads.get(room.name, 0) > room.known_seq
            }

    async def _replaced(self, room: Room) -> bool:
        """Whether the room's document is gone or has another epoch now. (A head
        behind the room's is only a hint: a read may lag the writes it saw.) A room
        whose document is not stored yet is replaced only by another epoch."""
        stored = room.stored
        try:
            info = await self._store.get_document(room.name)
        except StoreError:
            return False
        if info is None:
            return self._rooms.get(room.name) is room and stored and room.stored
        return self._rooms.get(room.name) is room and info.epoch != room.epoch

    # -- retention ---------------------------------------------------------------------------

    async def _retain(self) -> None:
        while True:
            await asyncio.sleep(self._settings.retention_check_s)
            try:
                await self.drop_old_history()
            except StoreError as exc:
                log.warning("dropping history past the retention failed: %s", exc)

    async def drop_old_history(self) -> int:
        """Drop every document's history older than ``history_retention_s``, down
        to the newest snapshot that is older than that (the log keeps everything
        after it), and not past a named version: those stay restorable. Returns
        the number of documents pruned (0: no retention set)."""
        if self._settings.history_retention_s <= 0:
            return 0
        cutoff = self._clock() - self._settings.history_retention_s
        pruned = 0
        for info in await self._store.list_documents():
            named = [n.seq for n in await self._store.version_names(info.name)]
            floor = min(named, default=info.head_seq)
            for seq in reversed(await self._store.snapshot_seqs(info.name)):
                if seq > floor:
                    continue
                own = await self._store.read_updates(
                    info.name, after_seq=seq - 1, until_seq=seq, limit=1
                )
                if own and own[0].time_s < cutoff:
                    await self._store.prune_history(info.name, seq)
                    log.info("%r: history before seq %d dropped (retention)", info.name, seq)
                    pruned += 1
                    break
        return pruned

    # -- unloading ---------------------------------------------------------------------------

    def _busy(self, room: Room) -> bool:
        return bool(room.sessions) or bool(room.watchers) or self._joining[room.name] > 0

    def _maybe_unload(self, room: Room) -> None:
        if self._busy(room) or room.name in self._unloading or self._tasks.closed:
            return
        self._unloading.add(room.name)
        self._tasks.spawn(self._unload(room), name=f"unload {room.name}")

    async def _unload(self, room: Room) -> None:
        try:
            await room.settled()
            # A document stays loaded a little after its last peer leaves: a page
            # reload comes back at once and should not load it from the store again.
            if self._settings.room_linger_s > 0:
                await asyncio.sleep(self._settings.room_linger_s)
            # Re-check after every await: a peer may have joined meanwhile, and a
            # log read (the one after a load, a gap) or a write may have begun:
            # nothing else would look at this room again once they end.
            while not room.idle:
                if self._busy(room) or self._rooms.get(room.name) is not room:
                    return
                await room.settled()
            if self._busy(room) or self._rooms.get(room.name) is not room:
                return
            del self._rooms[room.name]
            self._held = None
            await room.close()
            log.info("unloaded %r at seq %d", room.name, room.head_seq)
        finally:
            self._unloading.discard(room.name)

    def _adopted(self, room: Room, provisional: str) -> None:
        if len(self._aliases) >= MAX_ALIASES:
            del self._aliases[next(iter(self._aliases))]
        self._aliases[(room.name, provisional)] = room.epoch

    def _on_room_damaged(self, room: Room, error: CollabError) -> None:
        """pycrdt failed inside the room's doc: drop the room. Its peers are told
        and resubscribe; the next load waits until its queued writes are stored,
        so it holds every accepted update and nothing else."""
        self._drop(room, f"document {room.name!r} had to be reloaded; subscribe again")

    def _on_document_changed(self, name: str, epoch: str) -> None:
        """The store refused this generation's updates: the document was deleted
        (or deleted and created again) elsewhere. Its peers resubscribe and get
        the document as it is now, with a reset."""
        room = self._rooms.get(name)
        if room is not None and room.epoch == epoch:
            self._drop(room, f"document {name!r} was deleted; subscribe again")

    async def delete(self, name: str, *, by: str | None = None) -> bool:
        """Delete a document. Its room here is dropped first (its peers are told and
        resubscribe, to a new, empty document: a reset), its queued writes are
        stored or dropped, then the store deletes it; loads wait meanwhile. Other
        instances drop their room when their next write of it is refused, or when
        their audit finds it gone. False when there was no such document. The
        store records who (``by``, a user) and this instance with the deletion."""
        done = asyncio.Event()
        self._deleting[name] = done
        try:
            room = self._rooms.get(name)
            if room is not None:
                self._drop(room, f"document {name!r} was deleted; subscribe again")
            draining = self._draining.get(name)
            if draining is not None:
                await draining.flushed()
            deleted = await self._store.delete_document(
                name, by=Author(by, None, self._settings.instance_id)
            )
        finally:
            if self._deleting.get(name) is done:
                del self._deleting[name]
            done.set()
        if deleted:
            log.info("deleted %r", name)
            self.hooks.deleted(name)
        return deleted

    def _drop(self, room: Room, reason: str) -> None:
        if self._rooms.get(room.name) is not room:
            return
        del self._rooms[room.name]
        self._held = None
        self._draining[room.name] = room
        room.fanout.flush()  # what its peers were sent so far reaches them before the error
        failure = CollabError(reason, code=ErrorCode.LOAD_FAILED, doc=room.name)
        for watcher in list(room.watchers):
            watcher(None)
        for session in list(room.sessions):
            room.leave(session)
            session.peer.session_failed(session, failure)
        self._tasks.spawn(self._drain(room), name=f"drain {room.name}")

    async def _drain(self, room: Room) -> None:
        try:
            await room.flushed()
        finally:
            if self._draining.get(room.name) is room:
                del self._draining[room.name]
            await room.close()

    # -- shutdown ------------------------------------------------------------------------------

    async def close(self) -> None:
        """Flush every room's writes and write the snapshots due (within
        ``shutdown_flush_timeout_s`` for both), stop the writer, drop the rooms."""
        await self._tasks.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.shutdown_flush_timeout_s
        await self.writer.stop(deadline - loop.time())
        await self.snapshots.stop(deadline - loop.time())
        await self.presence.close()
        await self.hooks.close()
        for room in self._rooms.values():
            await room.close()
        self._rooms.clear()
        self._held = None
