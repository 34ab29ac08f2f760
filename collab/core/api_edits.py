"""Edits the server makes for API calls, on the live document, through the same
room and validation as a peer's (there is one path of an edit, whatever carried
it): restoring a version, as one new update that brings the content back, and
writes over HTTP (a Yjs update, or edits described as JSON).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pycrdt

from collab.auth import Role
from collab.core.history import replica_at
from collab.core.manager import RoomManager
from collab.core.origin import Origin
from collab.core.room import Room
from collab.core.session import NO_FRAMES, SERVER_PEER, Session
from collab.errors import LoadFailed, StoreError
from collab.extensions import IncomingUpdate
from collab.wire import edit_ops, edits, yformat
from collab.wire.long_items import CutMeter
from collab.wire.yformat import FormatError

EDIT_ATTEMPTS = 3  # computations of a server-made edit while the document changes


async def server_edit(
    rooms: RoomManager,
    name: str,
    origin: Origin,
    change: Callable[[bytes, CutMeter | None], bytes | None],
    *,
    timeout_s: float,
    epoch: str | None = None,
) -> int | None:
    """Apply an edit the server makes for an API call (a restore), as a peer's
    edit is applied: validated, stored, sent to every peer. ``change`` gets the
    document's state (one update) and a meter of what changes made on a copy of
    it cost in cuts (see made_on), and returns the update to apply; it runs in
    an executor (it may be long), and runs again when the document changed
    meanwhile, so that the edit is made against the state it meets (after
    EDIT_ATTEMPTS it is applied as it is: edits made meanwhile are kept).
    ``epoch``: only that generation of the document is edited. Returns the
    edit's seq once it is stored, None when ``change`` changed nothing. Raises
    InvalidUpdate, Overloaded, LoadFailed (also: deleted meanwhile), TimeoutError."""
    session = Session(name, SERVER_PEER, NO_FRAMES, Role.WRITE, origin)
    loop = asyncio.get_running_loop()
    with rooms.holding(name):
        try:
            for _ in range(EDIT_ATTEMPTS):
                room = await rooms.live(name)
                if epoch is not None and room.epoch != epoch:
                    raise LoadFailed(f"document {name!r} was deleted", doc=name)
                seen = room.changes
                state, meter = room.encode_state(), room.cut_meter()
                update = await loop.run_in_executor(None, change, state, meter)
                if rooms.get(name) is room and room.changes == seen:
                    break
            if rooms.get(name) is not room:
                raise LoadFailed(f"document {name!r} was reloaded; try again", doc=name)
            if update is None:
                return None
            return await _submit(rooms, room, session, update, timeout_s)
        finally:
            rooms.leave(session)


async def _submit(
    rooms: RoomManager, room: Room, session: Session, update: bytes, timeout_s: float
) -> int:
    """Apply ``update`` as ``session``'s (it joins the room), and wait until it is
    stored: its seq, or the seq covering it when it changed nothing. The
    extensions' before_update decides first, as for a peer's update (CollabError
    ``update_refused`` or ``hook_failed``: nothing applied)."""
    origin = session.origin
    await rooms.hooks.before_update(IncomingUpdate(session.doc, update, origin.user, origin.client))
    loop = asyncio.get_running_loop()
    durable: asyncio.Future[int] = loop.create_future()

    def acknowledged(seq: int) -> None:
        if not durable.done():
            durable.set_result(seq)

    room.attach(session)
    pending = room.submit(session, update, on_durable=acknowledged)
    if pending is not None:
        await pending
    return await asyncio.wait_for(durable, timeout_s)


async def write_update(
    rooms: RoomManager, name: str, origin: Origin, update: bytes, *, timeout_s: float
) -> int:
    """Apply a Yjs update a writer sent over HTTP, as a peer's update is applied
    (the same room, checks and limits; a refused one leaves the document as it
    was), creating the document if it does not exist. Returns its seq once it is
    stored (the seq covering it when it changed nothing). Raises InvalidUpdate,
    Overloaded, RateLimited, LoadFailed, TimeoutError."""
    session = Session(name, SERVER_PEER, NO_FRAMES, Role.WRITE, origin)
    with rooms.holding(name):
        try:
            room = await rooms.live(name)
            return await _submit(rooms, room, session, update, timeout_s)
        finally:
            rooms.leave(session)


async def write_edits(
    rooms: RoomManager,
    name: str,
    origin: Origin,
    changes: list[edit_ops.Edit],
    *,
    timeout_s: float,
) -> int:
    """Make JSON-described edits (collab.wire.edit_ops) on the live document as
    one update, made against the state it meets. Returns its seq once stored (the
    document's latest seq when the edits changed nothing). Raises EditError (the
    document unchanged), and what :func:`write_update` raises."""

    def change(state: bytes, meter: CutMeter | None) -> bytes | None:
        try:
            kinds = yformat.root_types(state, unknown_as=None)
        except FormatError as exc:
            raise StoreError(f"{name!r}: the live document cannot be read: {exc}") from None
        work = pycrdt.Doc()
        work.apply_update(state)
        return edits.made_on(work, lambda: edit_ops.apply(work, changes, kinds), meter)

    seq = await server_edit(rooms, name, origin, change, timeout_s=timeout_s)
    if seq is None:
        info = await rooms.store.get_document(name)
        return 0 if info is None else info.head_seq
    return seq


async def restore_version(
    rooms: RoomManager,
    doc: str,
    seq: int,
    origin: Origin,
    *,
    timeout_s: float,
    epoch: str | None = None,
) -> tuple[int, int | None]:
    """Bring the document's content back to what it was after update ``seq``, with
    one new update (history is never rewritten) made against the live document and
    attributed to ``origin``. Returns ``(the seq restored, the new update's seq)``;
    the latter is None when the content already was that. Raises StoreError,
    InvalidUpdate, Overloaded, LoadFailed, TimeoutError."""
    at, old = await replica_at(rooms.store, doc, seq)
    old_state = old.doc.get_update()
    try:
        # An emptied root's kind is unknown: the other side's says what it is.
        old_kinds = yformat.root_types(old_state, unknown_as=None)
    except FormatError as exc:
        raise StoreError(f"{doc!r}: the version at seq {at} cannot be read: {exc}") from None

    def change(current_state: bytes, meter: CutMeter | None) -> bytes | None:
        try:
            kinds = {**yformat.root_types(current_state, unknown_as=None), **old_kinds}
        except FormatError as exc:
            raise StoreError(f"{doc!r}: the live document cannot be read: {exc}") from None
        work = pycrdt.Doc()
        work.apply_update(current_state)
        source = pycrdt.Doc()
        source.apply_update(old_state)
        return edits.made_on(work, lambda: edits.make_equal(work, source, kinds), meter)

    return at, await server_edit(rooms, doc, origin, change, timeout_s=timeout_s, epoch=epoch)
