"""The memory store keeps the store contract."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tornado.ioloop import IOLoop

from collab.store import create_store
from collab.store.memory import MemoryStore
from tests.store_contract import StoreContract


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def store(self, io_loop: IOLoop) -> Iterator[MemoryStore]:
        store = MemoryStore()
        io_loop.run_sync(store.open)
        yield store
        io_loop.run_sync(store.close)

    @pytest.fixture
    def second(self, store: MemoryStore) -> MemoryStore:
        return store  # servers in one process share the object


def test_create_store_gives_a_memory_store_for_memory_urls() -> None:
    assert isinstance(create_store("memory://"), MemoryStore)
