"""A room's fan-out: what its peers are sent, batched per pass of the event loop.

Everything a room sends in one pass (every record of a commit, the acks among
them, awareness changes) is queued in order and sent when the pass ends, as one
list of frames per peer: a busy document costs one socket write per peer per
commit, not one per update, and each event is encoded once per protocol, not
once per peer. Acks ride in the same queue, so a peer sees every seq in order:
its ack comes after every update with a lower seq.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from collab.core.session import FrameCodec, Session
from collab.passes import EndOfPass

log = logging.getLogger("collab.rooms")

# Every room's flush runs after the pass in which it queued something, together.
_flushes = EndOfPass(log)


@dataclass(slots=True)
class FrameEvent:
    """A frame for every session but ``exclude``, encoded per protocol."""

    encode: Callable[[FrameCodec], bytes | None]
    exclude: Session | None
    is_update: bool  # counted in the updates_out metric


@dataclass(slots=True)
class AckEvent:
    """One session's update is durable: ``acknowledge`` runs in its place in the
    queue (after the frames queued before it reach that session), exactly once."""

    session: Session
    acknowledge: Callable[[], None]
    done: bool = False

    def run(self) -> None:
        if not self.done:
            self.done = True
            self.acknowledge()


class Fanout:
    """The outgoing queue of one room's sessions (``sessions``: the room's own,
    read when the queue is flushed)."""

    def __init__(self, sessions: Mapping[Session, None], updates_out: Any) -> None:
        self._sessions = sessions
        self._updates_out = updates_out  # collab_updates_out (collab.metrics.TallyFamily)
        self._events: list[FrameEvent | AckEvent] = []
        # The sessions that get a list of their own (senders, whose updates are left
        # out, and those with acks): every other session of a protocol gets the same.
        self._special: set[Session] = set()
        self._flush_queued = False

    def frame(
        self,
        encode: Callable[[FrameCodec], bytes | None],
        *,
        exclude: Session | None,
        is_update: bool = False,
    ) -> None:
        """Queue an event for every session but ``exclude``."""
        if exclude is not None:
            self._special.add(exclude)
        self._queue(FrameEvent(encode, exclude, is_update))

    def ack(self, session: Session, acknowledge: Callable[[], None]) -> None:
        """Queue ``acknowledge`` for ``session`` behind what is queued already."""
        self._special.add(session)
        self._queue(AckEvent(session, acknowledge))

    def _queue(self, event: FrameEvent | AckEvent) -> None:
        self._events.append(event)
        if not self._flush_queued:
            self._flush_queued = True
            _flushes.call(self.flush)

    def flush(self) -> None:
        """Send what is queued: to each session, its frames of the queued events in
        order as one list, its acks in their places."""
        self._flush_queued = False
        if not self._events:
            return
        events, special = self._events, self._special
        self._events, self._special = [], set()
        # Each frame event encoded once per protocol: frames[codec][i] is event i's.
        frames: dict[FrameCodec, list[bytes | None]] = {}
        shared: dict[FrameCodec, list[bytes]] = {}  # for sessions with no own events
        shared_updates: dict[FrameCodec, int] = {}
        sent = 0
        try:
            for session in list(self._sessions):
                codec = session.codec
                if codec not in frames:
                    encoded = [
                        e.encode(codec) if isinstance(e, FrameEvent) else None for e in events
                    ]
                    frames[codec] = encoded
                    shared[codec] = [f for f in encoded if f is not None]
                    shared_updates[codec] = sum(
                        1
                        for e, f in zip(events, encoded, strict=True)
                        if f is not None and isinstance(e, FrameEvent) and e.is_update
                    )
                if session not in special:
                    if shared[codec]:
                        session.send_many(shared[codec])
                        sent += shared_updates[codec]
                    continue
                batch: list[bytes] = []
                for event, frame in zip(events, frames[codec], strict=True):
                    if isinstance(event, AckEvent):
                        if event.session is session:
                            if batch:
                                session.send_many(batch)
                                batch = []
                            event.run()
                    elif frame is not None and event.exclude is not session:
                        batch.append(frame)
                        sent += event.is_update
                if batch:
                    session.send_many(batch)
        finally:
            # Acks of sessions that left meanwhile (and, should anything above have
            # failed, every ack not yet run): their bookkeeping must still run, or
            # the room would wait for them forever.
            for event in events:
                if isinstance(event, AckEvent):
                    event.run()
        self._updates_out.inc(sent)
