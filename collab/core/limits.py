"""Fair-use limits, without I/O: token buckets, the per-user cap on documents
created, and the per-connection budget of bad-input log lines.

Every limit is a setting (collab.config) with a default; docs/SECURITY.md lists
them. Times are ``time.monotonic()`` seconds, passed in where a test needs to.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from collab.errors import RateLimited

if TYPE_CHECKING:
    from collab.core.session import Session

CREATION_WINDOW_S = 60.0
MAX_TRACKED_CREATORS = 100_000  # users with a creation in the last minute, at most


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; starts full."""

    __slots__ = ("_level", "_updated", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float | None = None) -> None:
        self.rate = rate
        self.burst = burst
        self._level = burst
        self._updated = time.monotonic() if now is None else now

    def take(self, amount: float = 1.0, now: float | None = None) -> bool:
        """Take ``amount`` tokens if there are as many; False (and nothing taken) if not."""
        now = time.monotonic() if now is None else now
        self._level = min(self.burst, self._level + (now - self._updated) * self.rate)
        self._updated = now
        if self._level < amount:
            return False
        self._level -= amount
        return True


class CreationLimiter:
    """At most ``per_minute`` documents created by one user in any 60 s (0: no
    cap). Only authenticated users are counted: without tokens the server is open
    to everyone (docs/SECURITY.md)."""

    def __init__(self, per_minute: int) -> None:
        self._per_minute = per_minute
        self._recent: dict[str, deque[float]] = {}

    def admit(self, session: Session, now: float | None = None) -> None:
        """Count a document ``session``'s user is creating; raises RateLimited past the cap."""
        self.admit_user(session.origin.user, session.doc, now)

    def admit_user(self, user: str | None, doc: str, now: float | None = None) -> None:
        """Count a document ``user`` is creating (an import); RateLimited past the cap."""
        if not self._per_minute or user is None:
            return
        now = time.monotonic() if now is None else now
        times = self._recent.get(user)
        if times is None:
            if len(self._recent) >= MAX_TRACKED_CREATORS:
                self._forget_before(now - CREATION_WINDOW_S)
            times = self._recent[user] = deque()
        while times and times[0] <= now - CREATION_WINDOW_S:
            times.popleft()
        if len(times) >= self._per_minute:
            raise RateLimited(
                f"at most {self._per_minute} new documents a minute per user: try again later",
                doc=doc,
            )
        times.append(now)

    def _forget_before(self, cutoff: float) -> None:
        for user in [u for u, times in self._recent.items() if not times or times[-1] <= cutoff]:
            del self._recent[user]


class LogBudget:
    """Bad-input log lines of one connection: at most ``burst`` at once and
    ``per_minute`` after that; what is left out is counted and reported with the
    next line that is written (and by :meth:`flush`, when the connection ends)."""

    __slots__ = ("_bucket", "_logger", "_prefix", "suppressed")

    def __init__(
        self, logger: logging.Logger, prefix: object, *, burst: int = 10, per_minute: int = 10
    ) -> None:
        self._logger = logger
        self._prefix = prefix
        self._bucket = TokenBucket(per_minute / 60.0, burst)
        self.suppressed = 0

    def log(self, level: int, message: str, *args: Any) -> None:
        if not self._logger.isEnabledFor(level):
            return
        if not self._bucket.take():
            self.suppressed += 1
            return
        if self.suppressed:
            message += " (%d similar lines suppressed)"
            args = (*args, self.suppressed)
            self.suppressed = 0
        self._logger.log(level, "%s: " + message, self._prefix, *args)

    def flush(self) -> None:
        if self.suppressed:
            self._logger.info(
                "%s: %d bad-input lines were suppressed", self._prefix, self.suppressed
            )
            self.suppressed = 0
