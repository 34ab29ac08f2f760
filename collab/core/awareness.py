"""A room's awareness (who is here, their cursors), as the server vouches for it.

A client id belongs to the session that first set it (another session of the same
user may take it over: a reconnect); the user's id and name from its token are
stamped on each state; a session sets at most ``awareness_max_clients`` ids, of
at most ``awareness_max_state_bytes`` each, at most ``awareness_updates_per_s``.
What other instances publish (collab.core.presence) is applied too, and expires
unless its instance keeps renewing it. Every change is sent to the room's peers,
and the changes of local peers are published for the other instances.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import pycrdt

from collab.config import Settings
from collab.core.fanout import Fanout
from collab.core.session import Session
from collab.errors import AccessDenied, CollabError, ErrorCode, InvalidUpdate, RateLimited
from collab.store import AwarenessChange
from collab.wire.yformat import (
    AwarenessEntry,
    FormatError,
    awareness_entry_count,
    decode_awareness_update,
    encode_awareness_update,
)

log = logging.getLogger("collab.rooms")

PublishAwareness = Callable[[str, list[tuple[int, bytes]]], None]
CLIENT_USER_FIELDS = ("color", "colorLight")  # a presence user's, set by the client
AWARENESS_ENTRY_BYTES = 32  # an awareness entry's client id, clock and length, at most


class RemotePresence:
    """The origin of awareness changes that came from other instances."""


REMOTE = RemotePresence()


class RoomAwareness:
    def __init__(
        self,
        name: str,
        doc: pycrdt.Doc,
        sessions: Mapping[Session, None],
        fanout: Fanout,
        settings: Settings,
        publish: PublishAwareness,
    ) -> None:
        self._name = name
        self._sessions = sessions  # the room's, to find who owns a client id
        self._fanout = fanout
        self._settings = settings
        self._publish = publish
        self._awareness = pycrdt.Awareness(doc)
        self._awareness.set_local_state(None)  # the server is not an editor
        self._subscription = self._awareness.observe(self._on_change)
        self._remote: dict[int, float] = {}  # client id -> expiry, other instances'

    @property
    def states(self) -> dict[int, dict[str, Any]]:
        return self._awareness.states

    def close(self) -> None:
        self._awareness.unobserve(self._subscription)

    # -- local peers ----------------------------------------------------------------------

    def apply(self, session: Session, update: bytes) -> None:
        """Apply a peer's awareness update under the rules above. What passes is
        applied; raises InvalidUpdate for an update that cannot be read,
        AccessDenied (awareness_denied) or RateLimited (awareness_limit) for
        entries that were left out."""
        s = self._settings
        # Refused before anything is parsed: decoding reads every state's JSON.
        largest = s.awareness_max_clients * (s.awareness_max_state_bytes + AWARENESS_ENTRY_BYTES)
        if len(update) > largest:
            raise RateLimited(
                f"an awareness update may hold at most {largest} bytes: it was dropped",
                code=ErrorCode.AWARENESS_LIMIT,
                doc=self._name,
            )
        if session.awareness_bucket is not None and not session.awareness_bucket.take():
            raise RateLimited(
                f"at most {s.awareness_updates_per_s:g} awareness updates a second: "
                "this one was dropped",
                code=ErrorCode.AWARENESS_LIMIT,
                doc=self._name,
            )
        try:
            if awareness_entry_count(update) > s.awareness_max_clients:
                raise RateLimited(
                    f"an awareness update may hold at most {s.awareness_max_clients} "
                    "clients: it was dropped",
                    code=ErrorCode.AWARENESS_LIMIT,
                    doc=self._name,
                )
            entries = decode_awareness_update(update)
        except FormatError as exc:
            raise InvalidUpdate(
                f"the awareness update could not be decoded: {exc}",
                code=ErrorCode.INVALID_AWARENESS,
                doc=self._name,
            ) from None
        kept: list[AwarenessEntry] = []
        denied: CollabError | None = None
        owned = len(session.awareness_clients)
        for entry in entries:
            problem = self._problem(session, entry, owned)
            if problem is not None:
                denied = denied or problem
                continue
            if entry.client_id not in session.awareness_clients and entry.state is not None:
                owned += 1
            kept.append(self._stamped(session, entry))
        if kept:
            try:
                self._awareness.apply_awareness_update(encode_awareness_update(kept), session)
            except Exception as exc:  # pycrdt's awareness is Python: no panics, but guard it
                raise InvalidUpdate(
                    f"the awareness update could not be applied: {exc}",
                    code=ErrorCode.INVALID_AWARENESS,
                    doc=self._name,
                ) from None
        if denied is not None:
            raise denied

    def leave(self, session: Session) -> None:
        """The session left: the states it set are removed for everyone."""
        if session.awareness_clients:
            self._awareness.remove_awareness_states(
                sorted(session.awareness_clients), origin=session
            )

    def _problem(self, session: Session, entry: AwarenessEntry, owned: int) -> CollabError | None:
        """Why ``session`` may not set this entry, or None."""
        s = self._settings
        client_id = entry.client_id
        if client_id not in session.awareness_clients:
            held, owner = self._owner(client_id)
            if held and owner != session.origin.user:
                return AccessDenied(
                    f"awareness client {client_id} belongs to another user",
                    code=ErrorCode.AWARENESS_DENIED,
                    doc=self._name,
                )
            if entry.state is not None and owned >= s.awareness_max_clients:
                return RateLimited(
                    f"a session may set at most {s.awareness_max_clients} awareness clients",
                    code=ErrorCode.AWARENESS_LIMIT,
                    doc=self._name,
                )
        if entry.state is not None:
            size = len(json.dumps(entry.state, separators=(",", ":")).encode())
            if size > s.awareness_max_state_bytes:
                return RateLimited(
                    f"an awareness state may hold at most {s.awareness_max_state_bytes} "
                    f"bytes, not {size}",
                    code=ErrorCode.AWARENESS_LIMIT,
                    doc=self._name,
                )
        return None

    def _owner(self, client_id: int) -> tuple[bool, str | None]:
        """Whether anyone holds ``client_id``'s state, and whose user: its session's
        here, else the user stamped on the state (another instance's client)."""
        for other in self._sessions:
            if client_id in other.awareness_clients:
                return True, other.origin.user
        state = self._awareness.states.get(client_id)
        if state is None:
            return False, None
        stamp = state.get("user")
        return True, (stamp.get("id") if isinstance(stamp, dict) else None)

    @staticmethod
    def _stamped(session: Session, entry: AwarenessEntry) -> AwarenessEntry:
        """``entry`` with the session's user on it (nothing in open mode, where
        there are no users)."""
        if session.presence is None or entry.state is None:
            return entry
        given = entry.state.get("user")
        # Only display fields the token does not decide are the client's own: a
        # field such as "role" next to a stamped id would read as the server's word.
        user = {k: given[k] for k in CLIENT_USER_FIELDS if isinstance(given, dict) and k in given}
        user.update(session.presence)
        return AwarenessEntry(entry.client_id, entry.clock, {**entry.state, "user": user})

    # -- other instances ------------------------------------------------------------------

    def apply_remote(self, change: AwarenessChange) -> None:
        """A state another instance published (checked there, and again here)."""
        if change.instance == self._settings.instance_id:
            return
        try:
            entries = decode_awareness_update(change.update)
        except FormatError as exc:
            log.warning(
                "%r: awareness from instance %s refused: %s", self._name, change.instance, exc
            )
            return
        for entry in entries:
            if entry.state is None:
                self._remote.pop(entry.client_id, None)
            else:
                self._remote[entry.client_id] = change.expires_s
        self._awareness.apply_awareness_update(change.update, REMOTE)

    def expire_remote(self, now: float) -> None:
        """Remove the states of other instances' clients that were not renewed: their
        instance is gone, or they left and the news was lost."""
        expired = [c for c, until in self._remote.items() if until <= now]
        for client_id in expired:
            del self._remote[client_id]
        present = [c for c in expired if c in self._awareness.states]
        if present:
            self._awareness.remove_awareness_states(present, origin=REMOTE)

    def local(self) -> list[tuple[int, bytes]]:
        """The states this instance's peers own, one encoded update each."""
        clients = sorted({c for s in self._sessions for c in s.awareness_clients})
        return [
            (c, self._awareness.encode_awareness_update([c]))
            for c in clients
            if c in self._awareness.states
        ]

    def snapshot(self) -> bytes | None:
        """Every known state as one update, or None when there is none."""
        clients = list(self._awareness.states)
        return self._awareness.encode_awareness_update(clients) if clients else None

    # -- changes --------------------------------------------------------------------------

    def _on_change(self, topic: str, args: tuple[dict[str, list[int]], Any]) -> None:
        if topic != "update":
            return
        changes, origin = args
        changed = changes["added"] + changes["updated"] + changes["removed"]
        if isinstance(origin, Session):
            self._track_owner(origin, changes)
            self._publish(
                self._name, [(c, self._awareness.encode_awareness_update([c])) for c in changed]
            )
        payload = self._awareness.encode_awareness_update(changed)
        name = self._name
        # Sent to the origin too, as y-websocket servers do: a y-websocket client
        # that hears nothing for 30 s reconnects, and its own awareness renewal
        # (every 15 s) is what it hears when it is alone.
        self._fanout.frame(lambda codec: codec.awareness_frame(name, payload), exclude=None)

    def _track_owner(self, session: Session, changes: dict[str, list[int]]) -> None:
        # The session that last set a client's state owns it and removes it when it
        # leaves. A client that reconnected before its old socket was found dead
        # takes its state over, so the old socket's close does not remove it.
        session.awareness_clients.difference_update(changes["removed"])
        for client_id in changes["added"] + changes["updated"]:
            self._remote.pop(client_id, None)
            if client_id in session.awareness_clients:
                continue
            for other in self._sessions:
                other.awareness_clients.discard(client_id)
            session.awareness_clients.add(client_id)
