"""Freed memory goes back to the system: fewer malloc arenas, and malloc_trim now
and then (collab.memory; the figures are in docs/PERFORMANCE.md, *Large
documents*, and tests/test_large_documents.py checks a bound)."""

from __future__ import annotations

import asyncio
import ctypes.util

import pytest

from collab import memory

GLIBC = memory._glibc() is not None


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_memory_freed_in_the_process_is_handed_back_to_the_system():
    def rss_kib() -> int:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))

    memory.trim()
    # Blocks of 64 KiB (below glibc's mmap threshold) between small ones that stay:
    # freed, they are holes in the heap that malloc keeps.
    blocks, pins = [], []
    for _ in range(1000):
        block = bytearray(64 * 1024)
        block[::4096] = b"x" * len(block[::4096])  # touched: resident
        blocks.append(block)
        pins.append(bytearray(1024))
    del block
    before = rss_kib()
    blocks.clear()
    assert rss_kib() > before - 8 * 1024  # still held

    memory.trim()

    assert rss_kib() < before - 32 * 1024  # most of the 64 MiB


def test_without_glibc_nothing_is_done(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    memory._glibc.cache_clear()
    try:
        assert memory.trim() is False
        assert memory.limit_arenas(2) is False
        asyncio.run(asyncio.wait_for(memory.trim_every(0.01), 1))  # returns at once
    finally:
        memory._glibc.cache_clear()


def test_the_arena_limit_is_left_to_glibc_when_it_is_zero():
    assert memory.limit_arenas(0) is False
