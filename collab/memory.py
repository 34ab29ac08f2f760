"""Giving freed memory back to the system (glibc's malloc).

A large document passes through the server in pieces of its own size: a snapshot
rebuilt and encoded on a thread, a sync answer for a joining peer, a load. glibc
keeps what is freed in the arena of the thread that allocated it (up to eight
arenas per core), and returns little of it: a 10 MiB document left the server
at 10 times its size in RSS, almost all of it free memory held by malloc
(docs/PERFORMANCE.md, *Large documents*). Two remedies, both measured there:
fewer arenas (``mallopt(M_ARENA_MAX)``, set before the server's threads start),
and ``malloc_trim`` now and then, which hands free pages back. Both do nothing
where the C library is not glibc.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import logging

log = logging.getLogger("collab")

M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's malloc.h
# A snapshot this large leaves several copies of its document freed at once (its
# encoding twice, the store's copy, the document it was built from): they are
# handed back at once, not at the next trim period, so that the next snapshot
# (larger) does not come on top of them.
TRIM_AFTER_BYTES = 1024 * 1024


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    if not (hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt")):
        return None  # musl, or another C library
    return libc


def limit_arenas(count: int) -> bool:
    """Let the process's threads share at most ``count`` malloc arenas (0: leave
    glibc's default). Call it before threads start allocating. True when set."""
    libc = _glibc()
    if count <= 0 or libc is None:
        return False
    return bool(libc.mallopt(M_ARENA_MAX, count))


def trim() -> bool:
    """Hand the free memory malloc holds back to the system (``malloc_trim(0)``).
    Takes a moment on a large heap: call it off the event loop. True when some
    memory was released."""
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


async def trim_every(interval_s: float) -> None:
    """Trim every ``interval_s`` seconds, on a thread, until cancelled."""
    if _glibc() is None:
        log.debug("not glibc's malloc: freed memory is left to the C library")
        return
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval_s)
        await loop.run_in_executor(None, trim)
