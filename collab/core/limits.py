"""Fair-use limits, without I/O: token buckets, the per-user cap on documents
created, the per-connection budget of bad-input log lines, and the budget of
work one read request may do.

Every limit is a setting (collab.config) with a default; docs/SECURITY.md lists
them. Times are ``time.monotonic()`` seconds, passed in where a test needs to.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any, NoReturn

from collab.errors import CollabError, ErrorCode, RateLimited

if TYPE_CHECKING:
    from collab.core.session import Session

CREATION_WINDOW_S = 60.0
MAX_TRACKED_CREATORS = 100_000  # users with a creation in the last minute, at most
MAX_TRACKED_WRITERS = 100_000  # callers of HTTP writes followed, at most


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

    def give(self, amount: float = 1.0) -> None:
        """Put back ``amount`` tokens taken for something that was then not done."""
        self._level = min(self.burst, self._level + amount)

    def wait_s(self, amount: float = 1.0) -> float:
        """Seconds until ``amount`` tokens are there (as of the last take)."""
        if amount > self.burst:
            return float("inf")
        return max(0.0, (amount - self._level) / self.rate) if self.rate > 0 else float("inf")


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


class WriteLimiter:
    """HTTP writes of each caller (a user, or an address when access is open):
    ``per_s`` requests a second (``burst`` at once) and ``bytes_per_s`` of bodies
    (``bytes_burst`` at once), as a WebSocket's messages are limited. At most
    MAX_TRACKED_WRITERS callers are followed; past it the idle ones (full
    buckets) are forgotten, and if none is idle the oldest."""

    def __init__(self, per_s: float, burst: int, bytes_per_s: float, bytes_burst: int) -> None:
        self._limits = (per_s, burst, bytes_per_s, bytes_burst)
        self._buckets: dict[str, tuple[TokenBucket, TokenBucket]] = {}

    def admit(
        self, caller: str, size: int, now: float | None = None, *, request: bool = True
    ) -> None:
        """Count one write of ``size`` bytes (``request`` False: only bytes, of a
        write counted already); raises RateLimited (with ``retry_after_s``) past
        either limit, and then nothing is counted."""
        now = time.monotonic() if now is None else now
        buckets = self._buckets.get(caller)
        if buckets is None:
            if len(self._buckets) >= MAX_TRACKED_WRITERS:
                self._forget(now)
            per_s, burst, bytes_per_s, bytes_burst = self._limits
            buckets = self._buckets[caller] = (
                TokenBucket(per_s, burst, now),
                TokenBucket(bytes_per_s, bytes_burst, now),
            )
        requests, sizes = buckets
        if not requests.take(1.0 if request else 0.0, now):
            raise _write_limited(
                f"more than {requests.rate:g} writes a second (burst {requests.burst:g})",
                requests.wait_s(),
            )
        if not sizes.take(size, now):
            requests.give(1.0 if request else 0.0)  # not made: its token goes back
            raise _write_limited(
                f"more than {sizes.rate:g} bytes a second (burst {sizes.burst:g})",
                sizes.wait_s(size),
            )

    def _forget(self, now: float) -> None:
        idle = [
            caller
            for caller, (requests, sizes) in self._buckets.items()
            if requests.take(0.0, now) and requests.wait_s(requests.burst) == 0
        ]
        for caller in idle or list(self._buckets)[: max(1, len(self._buckets) // 10)]:
            del self._buckets[caller]


def _write_limited(reason: str, wait_s: float) -> RateLimited:
    error = RateLimited(f"rate limit: {reason}; try again later")
    error.retry_after_s = min(wait_s, CREATION_WINDOW_S)
    return error


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


class BudgetExceeded(CollabError):
    """A read request would cost more than one request may: it is refused with
    what to narrow, before or while the work is done, never after."""

    code = ErrorCode.TOO_LARGE


class ReadBudget:
    """What one read request (a version, a state, a diff) may cost, charged as
    the work is done: log updates read and applied, bytes read and rebuilt from
    (snapshots, checkpoints, updates), and CPU seconds spent on them (rebuilding,
    rendering, attributing: measured on the thread doing it, which covers what
    pycrdt does out of sight too). A charge past any of them raises
    BudgetExceeded; what was charged before stays spent."""

    __slots__ = (
        "bytes_left",
        "cpu_left_s",
        "hint",
        "max_bytes",
        "max_cpu_s",
        "max_updates",
        "updates_left",
    )

    def __init__(self, *, updates: int, bytes_: int, cpu_s: float, hint: str = "") -> None:
        self.max_updates = self.updates_left = updates
        self.max_bytes = self.bytes_left = bytes_
        self.max_cpu_s = self.cpu_left_s = cpu_s
        self.hint = hint  # what the caller may do instead, for the error

    def charge(self, doing: str, *, updates: int = 0, bytes_: int = 0) -> None:
        """Spend what ``doing`` (said in the error, e.g. "rebuilding the version at
        seq 12") reads. Raises BudgetExceeded."""
        self.updates_left -= updates
        self.bytes_left -= bytes_
        if self.updates_left < 0:
            self.refuse(doing, f"{self.max_updates} log updates (max_read_updates)")
        if self.bytes_left < 0:
            self.refuse(doing, f"{self.max_bytes} bytes (max_read_bytes)")

    def cpu(self, doing: str) -> CpuMeter:
        """A meter of the CPU time the calling thread spends from now on, charged
        to this budget at each :meth:`CpuMeter.check`."""
        return CpuMeter(self, doing)

    def refuse(self, doing: str, limit: str) -> NoReturn:
        """Raise BudgetExceeded: ``doing`` went past ``limit``."""
        hint = f": {self.hint}" if self.hint else ""
        raise BudgetExceeded(f"{doing} takes more than one request may do ({limit}){hint}")


class CpuMeter:
    """CPU seconds of one thread, charged to a ReadBudget as they are spent."""

    __slots__ = ("_budget", "_doing", "_mark")

    def __init__(self, budget: ReadBudget, doing: str) -> None:
        self._budget = budget
        self._doing = doing
        self._mark = time.thread_time()

    def check(self) -> None:
        """Charge the time spent since the last check. Raises BudgetExceeded."""
        now = time.thread_time()
        self._budget.cpu_left_s -= now - self._mark
        self._mark = now
        if self._budget.cpu_left_s < 0:
            self._budget.refuse(
                self._doing, f"{self._budget.max_cpu_s:g} s of CPU time (max_read_cpu_s)"
            )


def cpu_meter(budget: ReadBudget | None, doing: str) -> CpuMeter | None:
    """A meter on ``budget``, or None when there is none to charge."""
    return None if budget is None else budget.cpu(doing)
