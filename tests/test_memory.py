"""Freed memory goes back to the system: fewer malloc arenas, and malloc_trim now
and then (collab.memory; the figures are in docs/PERFORMANCE.md, *Large
documents*, and tests/test_large_documents.py checks a bound)."""

from __future__ import annotations

import asyncio
import ctypes.util
import subprocess
import sys

import pytest

from collab import memory

GLIBC = memory._glibc() is not None


# Run in a process of its own: in the test process, another test's threads may
# allocate, free or trim meanwhile.
HANDED_BACK = """
from collab import memory

def rss_kib():
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
held = rss_kib()
memory.trim()
print(before, held, rss_kib())
"""


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_memory_freed_in_the_process_is_handed_back_to_the_system():
    out = subprocess.run(
        [sys.executable, "-c", HANDED_BACK], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    before, held, trimmed = map(int, out.split())
    assert held > before - 8 * 1024  # freed, but still held by malloc
    assert trimmed < before - 32 * 1024  # handed back: most of the 64 MiB


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
