"""What both WebSocket protocols do to keep one peer from costing the others:
rate limits on what a connection sends, the identity stamped on its sessions'
presence, and a bounded budget of log lines about its bad input."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from collab.auth import Identity
from collab.config import Settings
from collab.core.limits import LogBudget, TokenBucket
from collab.core.session import Session


class InputGuard:
    """Token buckets for one connection's messages and bytes, and its log budget."""

    __slots__ = ("_bytes", "_messages", "_settings", "log")

    def __init__(self, settings: Settings, logger: logging.Logger, name: object) -> None:
        self._messages = TokenBucket(settings.rate_messages_per_s, settings.rate_messages_burst)
        self._bytes = TokenBucket(settings.rate_bytes_per_s, settings.rate_bytes_burst)
        self._settings = settings
        self.log = LogBudget(logger, name)

    def admit(self, size: int) -> str | None:
        """Count one message of ``size`` bytes: None if it is within the limits, else
        why not (the connection is then told and closed: docs/SECURITY.md)."""
        if not self._messages.take():
            return (
                f"more than {self._settings.rate_messages_per_s:g} messages a second "
                f"(burst {self._settings.rate_messages_burst})"
            )
        if not self._bytes.take(size):
            return (
                f"more than {self._settings.rate_bytes_per_s} bytes a second "
                f"(burst {self._settings.rate_bytes_burst})"
            )
        return None


def stamp(session: Session, identity: Identity, settings: Settings) -> Session:
    """Give a session its presence stamp (the token's user) and awareness rate."""
    if identity.user is not None:
        presence = {"id": identity.user, "name": identity.name or identity.user}
        if identity.color:
            presence["color"] = identity.color
        session.presence = presence
    rate = settings.awareness_updates_per_s
    session.awareness_bucket = TokenBucket(rate, max(1.0, 3 * rate))
    return session


def expiry_timer(identity: Identity, expired: Callable[[], None]) -> asyncio.TimerHandle | None:
    """A timer that calls ``expired`` once the identity's token expires (None: its
    token does not). Cancel it when the connection ends or the token is renewed."""
    if identity.expires_s is None:
        return None
    delay = max(0.0, identity.expires_s - time.time())
    return asyncio.get_running_loop().call_later(delay, expired)


def before_reading_on(
    pending: Awaitable[None] | None, backpressure: Callable[[], Awaitable[None] | None]
) -> Awaitable[None] | None:
    """What a connection awaits before it reads the peer's next message: the write
    queue's ``backpressure``; after a message whose handling waits (``pending``: a
    large update's check on a thread, a hook's answer), that first, then the
    backpressure as it is by then (the update joins the queue only once ``pending``
    is done, after the message's handling returned)."""
    if pending is None:
        return backpressure()
    return _then(pending, backpressure)


async def _then(
    pending: Awaitable[None], backpressure: Callable[[], Awaitable[None] | None]
) -> None:
    await pending
    waiting = backpressure()
    if waiting is not None:
        await waiting
