"""A session: one (connection, document) pair.

The session owns everything about one peer's use of one document: its role, its
state, the awareness client ids it controls, the messages it sent while the
document was still loading, and the count of its updates not yet durable. It is
created by a connection, joined to a room by the room manager, and removed in
one place (``RoomManager.leave``).
"""

from __future__ import annotations

import asyncio
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

from collab.auth import Role
from collab.core.limits import TokenBucket
from collab.core.origin import Origin
from collab.errors import CollabError

if TYPE_CHECKING:
    from collab.core.room import Room


class FrameCodec(Protocol):
    """Encodes room events as one protocol's frames; the room encodes each event
    once per codec, not once per peer."""

    def update_frame(self, doc: str, seq: int, update: bytes) -> bytes | None:
        """The frame for a stored update (None: nothing to send this protocol)."""

    def awareness_frame(self, doc: str, update: bytes) -> bytes: ...


class Peer(Protocol):
    """What a session needs from the connection it belongs to."""

    def send(self, frame: bytes) -> None: ...

    def send_many(self, frames: list[bytes]) -> None:
        """Send frames in order (one socket write for all of them)."""
        ...

    def session_failed(self, session: Session, error: CollabError) -> None: ...


class _Detached:
    """The peer of a session that has left: nothing reaches it any more. (A session
    and its connection refer to each other; once it has left, the session lets go,
    so that a closed connection is freed as soon as the last reference to it goes,
    not at the next full collection.)"""

    def send(self, frame: bytes) -> None:
        pass

    def send_many(self, frames: list[bytes]) -> None:
        pass

    def session_failed(self, session: Session, error: CollabError) -> None:
        pass


DETACHED: Peer = _Detached()


class SessionState(Enum):
    JOINING = "joining"  # the room is loading; inbound messages are queued
    ACTIVE = "active"
    CLOSED = "closed"


class Session:
    __slots__ = (
        "_writes_done",
        "awareness_bucket",
        "awareness_clients",
        "codec",
        "doc",
        "draining",
        "inbox",
        "inbox_bytes",
        "origin",
        "peer",
        "pending_writes",
        "presence",
        "role",
        "room",
        "state",
    )

    def __init__(self, doc: str, peer: Peer, codec: FrameCodec, role: Role, origin: Origin) -> None:
        self.doc = doc
        self.peer = peer
        self.codec = codec
        self.role = role
        self.origin = origin
        self.state = SessionState.JOINING
        self.room: Room | None = None
        self.awareness_clients: set[int] = set()
        # What the server stamps on its awareness states ({"id", "name", "color"}
        # of the token; None: open access, no users) and the rate it may send them.
        self.presence: dict[str, str] | None = None
        self.awareness_bucket: TokenBucket | None = None
        self.inbox: list[Any] = []
        self.inbox_bytes = 0
        # The inbox is being applied (large updates on a thread): what arrives
        # meanwhile still queues behind it, so that order is kept.
        self.draining = False
        self.pending_writes = 0
        # Made when someone waits (an asyncio.Event costs ~0.7 KiB: one per
        # connection adds up).
        self._writes_done: asyncio.Event | None = None

    def send(self, frame: bytes) -> None:
        if self.state is SessionState.ACTIVE:
            self.peer.send(frame)

    def send_many(self, frames: list[bytes]) -> None:
        if self.state is SessionState.ACTIVE:
            self.peer.send_many(frames)

    def write_submitted(self) -> None:
        self.pending_writes += 1

    def write_durable(self) -> None:
        self.pending_writes -= 1
        if self.pending_writes == 0 and self._writes_done is not None:
            self._writes_done.set()

    async def writes_durable(self) -> None:
        """Wait until every update this session sent is stored."""
        while self.pending_writes:
            if self._writes_done is None or self._writes_done.is_set():
                self._writes_done = asyncio.Event()
            await self._writes_done.wait()

    def __repr__(self) -> str:
        return f"<Session {self.doc!r} {self.origin.client} {self.state.value}>"


class _NoFrames:
    """The codec of the server's own sessions: they need no events."""

    def update_frame(self, doc: str, seq: int, update: bytes) -> bytes | None:
        return None

    def awareness_frame(self, doc: str, update: bytes) -> bytes:
        return b""


class _ServerPeer:
    """The peer behind an edit the server makes for an API call (a restore): it
    waits for its acknowledgment, not for frames."""

    def send(self, frame: bytes) -> None:
        pass

    def send_many(self, frames: list[bytes]) -> None:
        pass

    def session_failed(self, session: Session, error: CollabError) -> None:
        pass  # the caller sees the failure as an exception or a timeout


NO_FRAMES = _NoFrames()
SERVER_PEER = _ServerPeer()
