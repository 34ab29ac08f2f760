"""The SQLite store keeps the store contract, in a durable file, off the event loop."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tornado.ioloop import IOLoop

from collab.errors import StoreError
from collab.store import Author, NewUpdate, SnapshotRecord, Store, create_store
from collab.store.memory import MemoryStore
from collab.store.sqlite import SQLiteStore
from collab.store.sqlite import log as sqlite_log
from collab.store.sqlite.feed import FEED_QUERY_OF_DOCUMENTS
from collab.store.sqlite.schema import SCHEMA, SCHEMA_VERSION
from tests.store_contract import Reopen, StoreContract, news


class TestSQLiteStore(StoreContract):
    @pytest.fixture
    def store(self, io_loop: IOLoop, tmp_path: Path) -> Iterator[SQLiteStore]:
        store = SQLiteStore(tmp_path / "store.db")
        io_loop.run_sync(store.open)
        yield store
        io_loop.run_sync(store.close)

    @pytest.fixture
    def second(self, io_loop: IOLoop, store: SQLiteStore) -> Iterator[SQLiteStore]:
        """Another process's view: its own connections to the same file."""
        other = SQLiteStore(store.path)
        io_loop.run_sync(other.open)
        yield other
        io_loop.run_sync(other.close)

    @pytest.fixture
    def reopen(self, io_loop: IOLoop) -> Iterator[Reopen]:
        opened: list[Store] = []

        async def reopen(store: Store) -> Store:
            assert isinstance(store, SQLiteStore)
            await store.close()
            again = SQLiteStore(store.path)
            await again.open()
            opened.append(again)
            return again

        yield reopen
        for store in opened:
            io_loop.run_sync(store.close)


def pragma(path: Path, name: str) -> object:
    """Read a pragma through a connection of our own, not the store's."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        conn.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "collab.db"


async def test_the_file_is_in_wal_mode_with_the_schema_version_recorded(db_path: Path):
    store = SQLiteStore(db_path)
    await store.open()
    try:
        # Also proves the file and its parent folder were created.
        assert pragma(db_path, "journal_mode") == "wal"
        assert pragma(db_path, "user_version") == SCHEMA_VERSION
    finally:
        await store.close()


async def test_the_log_connections_commit_with_synchronous_full(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # synchronous is a per-connection setting, so ask the store's own connections.
    connections: list[sqlite3.Connection] = []
    real_connect = sqlite3.connect

    def connect(*args: object, **kwargs: object) -> sqlite3.Connection:
        conn = real_connect(*args, **kwargs)
        connections.append(conn)
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect)
    store = SQLiteStore(db_path)
    await store.open()
    try:
        # The writers (the large batches' and the small ones'), the reader and the
        # feed commit durably; presence does not.
        assert len(connections) == 5
        levels = [
            await asyncio.get_running_loop().run_in_executor(
                None, lambda conn=conn: conn.execute("PRAGMA synchronous").fetchone()[0]
            )
            for conn in connections
        ]
        full, off = 2, 0
        assert levels == [full, full, full, full, off]
    finally:
        await store.close()


@pytest.fixture
def foreign_db(db_path: Path) -> Path:
    """A database of some other program, at schema version 99."""
    db_path.parent.mkdir(parents=True)
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE mine (x)")
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    return db_path


@pytest.fixture
def not_a_db(db_path: Path) -> Path:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"this is not a database, " * 100)
    return db_path


async def test_a_file_with_an_unknown_schema_version_is_refused(foreign_db: Path):
    db_path = foreign_db
    store = SQLiteStore(db_path)

    with pytest.raises(StoreError, match=rf"schema version 99, this server knows {SCHEMA_VERSION}"):
        await store.open()
    await store.close()

    # Left as it was found: not even switched to WAL.
    assert pragma(db_path, "user_version") == 99
    assert pragma(db_path, "journal_mode") == "delete"
    conn = sqlite3.connect(db_path)
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert tables == {"mine"}


async def test_a_file_that_is_not_a_database_is_refused(not_a_db: Path):
    store = SQLiteStore(not_a_db)

    with pytest.raises(StoreError, match="not a database"):
        await store.open()
    await store.close()


async def test_reopening_the_file_keeps_documents_updates_and_snapshots(db_path: Path):
    store = SQLiteStore(db_path)
    await store.open()
    epoch = (await store.load("notes", create=True)).epoch
    written = (
        await store.append(
            [
                NewUpdate("notes", b"\x00one", 1.25, Author("ann", "c1", "i1")),
                NewUpdate("notes", b"two\x00", 2.5, Author()),
                NewUpdate("other", b"x", 3.0, Author(client="c2")),
            ]
        )
    ).records
    await store.save_snapshot(SnapshotRecord("notes", 1, b"snap", 4.0))
    before = await store.list_documents()
    await store.close()

    again = SQLiteStore(db_path)
    await again.open()
    try:
        assert await again.list_documents() == before
        assert await again.read_updates("notes") == written[:2]
        assert await again.read_updates("other") == written[2:]
        loaded = await again.load("notes")
        assert loaded.epoch == epoch
        assert loaded.snapshot == SnapshotRecord("notes", 1, b"snap", 4.0)
        assert loaded.updates == (written[1],)
        assert (await again.append(news("notes", 1))).records[0].seq == 3
        assert (await again.get_document("notes")).head_seq == 3
    finally:
        await again.close()


async def test_every_statement_runs_off_the_event_loop_thread(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
):
    statements: list[tuple[int, str]] = []
    real_connect = sqlite3.connect

    def connect(*args: object, **kwargs: object) -> sqlite3.Connection:
        conn = real_connect(*args, **kwargs)
        # The trace callback runs on the thread that executes the statement.
        conn.set_trace_callback(lambda sql: statements.append((threading.get_ident(), sql)))
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect)
    store = SQLiteStore(db_path)
    await store.open()
    try:
        await store.load("notes")
        await store.append(news("notes", 3))
        await store.save_snapshot(SnapshotRecord("notes", 2, b"s", 1.0))
        await store.latest_snapshot("notes")
        await store.read_updates("notes", after_seq=1)
        await store.list_documents()
        await store.get_document("notes")
    finally:
        await store.close()

    sql = [text for _, text in statements]
    assert any(text.startswith("INSERT INTO updates") for text in sql)
    assert any(text.startswith("INSERT OR IGNORE INTO snapshots") for text in sql)
    assert any("FROM updates" in text for text in sql)
    loop_thread = threading.get_ident()
    on_loop = [text for thread, text in statements if thread == loop_thread]
    assert on_loop == []


async def test_listing_by_prefix_is_a_search_of_the_names_index_not_a_scan(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
):
    statements: list[str] = []
    real_connect = sqlite3.connect

    def connect(*args: object, **kwargs: object) -> sqlite3.Connection:
        conn = real_connect(*args, **kwargs)
        conn.set_trace_callback(statements.append)  # with the values bound in
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect)
    store = SQLiteStore(db_path)
    await store.open()
    try:
        await store.append([NewUpdate(f"team/{i}", b"x", 0.0) for i in range(50)])
        statements.clear()
        await store.list_documents(prefix="team/", after="team/1", limit=10)
    finally:
        await store.close()

    (listing,) = [sql for sql in statements if "FROM documents" in sql]
    conn = sqlite3.connect(db_path)
    try:
        plan = " ".join(row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + listing))
    finally:
        conn.close()
    assert "SEARCH documents USING" in plan and "INDEX" in plan and "SCAN" not in plan, plan
    assert "name>?" in plan.replace(" ", "") or "name<?" in plan.replace(" ", ""), plan


async def test_a_closed_store_refuses_work_with_a_store_error(db_path: Path):
    store = SQLiteStore(db_path)
    await store.open()
    await store.close()

    with pytest.raises(StoreError, match="closed"):
        await store.load("notes")
    with pytest.raises(StoreError, match="closed"):
        await store.append(news("notes", 1))


def test_create_store_reads_relative_sqlite_urls() -> None:
    store = create_store("sqlite:///data/collab.db")

    assert isinstance(store, SQLiteStore)
    assert store.path == Path("data/collab.db")
    assert not store.path.is_absolute()


def test_create_store_reads_absolute_sqlite_urls(tmp_path: Path) -> None:
    store = create_store(f"sqlite:///{tmp_path}/collab.db")

    assert isinstance(store, SQLiteStore)
    assert store.path == tmp_path / "collab.db"
    assert store.path.is_absolute()


def test_create_store_reads_memory_urls() -> None:
    assert isinstance(create_store("memory://"), MemoryStore)


@pytest.mark.parametrize("url", ["postgresql://db/collab", "redis://localhost", "collab.db"])
def test_create_store_refuses_unsupported_schemes(url: str) -> None:
    scheme = url.split(":", 1)[0]

    with pytest.raises(ValueError, match=rf"unsupported store URL scheme '{scheme}'.*sqlite:///"):
        create_store(url)


@pytest.mark.parametrize("url", ["sqlite:///", "sqlite://relative.db", "sqlite:relative.db"])
def test_create_store_refuses_sqlite_urls_without_a_path(url: str) -> None:
    with pytest.raises(ValueError, match=r"not a sqlite URL.*sqlite:///path/to/file\.db"):
        create_store(url)


async def test_a_schema_1_file_is_migrated_and_keeps_its_data(db_path: Path):
    db_path.parent.mkdir(parents=True)
    conn = sqlite3.connect(db_path)
    conn.executescript(SCHEMA)  # what version 1 created
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO documents VALUES ('old', 'e1', 1, 1.0, 1.0)")
    conn.execute("INSERT INTO updates VALUES ('old', 1, x'0000', 1.0, NULL, NULL, NULL)")
    conn.commit()
    conn.close()

    store = SQLiteStore(db_path)
    await store.open()
    try:
        assert pragma(db_path, "user_version") == SCHEMA_VERSION
        assert [u.seq for u in await store.read_updates("old")] == [1]
        assert await store.quarantined("old") == []
        result = await store.append(news("old", 1))
        assert result.records[0].seq == 2
        assert result.heads["old"].bytes_since_snapshot == 2 + len(b"old:1")
    finally:
        await store.close()


async def test_the_feed_of_some_documents_walks_the_new_rows_by_id_not_their_whole_logs(
    db_path: Path,
):
    """Without statistics SQLite would rather look the held documents up in the
    (doc, seq) index: every poll would then read their whole logs."""
    store = SQLiteStore(db_path)
    await store.open()
    try:
        await store.append(news("a", 3) + news("b", 3))
        conn = sqlite3.connect(db_path)
        try:
            plan = conn.execute(
                f"EXPLAIN QUERY PLAN {FEED_QUERY_OF_DOCUMENTS}", (0, 6, None, None, '["a"]', 10)
            ).fetchall()
        finally:
            conn.close()
        steps = [row[3] for row in plan]
        assert any("USING INTEGER PRIMARY KEY" in step for step in steps), steps
        assert not any("sqlite_autoindex_updates" in step for step in steps), steps
    finally:
        await store.close()


@pytest.mark.parametrize("update_from", [True, False], ids=["sqlite-3.33", "older-sqlite"])
async def test_a_batch_over_more_documents_than_one_statement_holds_keeps_each_head(
    db_path: Path, monkeypatch: pytest.MonkeyPatch, update_from: bool
):
    """The writer reads and sets the documents' heads some hundreds a statement
    (each statement's rows padded to a power of two); with an SQLite older than
    3.33 it sets them one a statement."""
    monkeypatch.setattr(sqlite_log, "UPDATE_FROM", update_from)
    store = SQLiteStore(db_path)
    await store.open()
    try:
        names = [f"d{i:04}" for i in range(1201)]  # past a statement's 512 names, twice
        await store.append([NewUpdate(name, b"x", 1.0) for name in names[::2]])

        result = await store.append(
            [NewUpdate(name, b"yy", 2.0 + i) for i, name in enumerate([*names, "d1200"])]
        )

        heads = {name: 1 if int(name[1:]) % 2 else 2 for name in names}
        heads["d1200"] = 3
        assert {doc: head.head_seq for doc, head in result.heads.items()} == heads
        assert await store.head_seqs(names) == heads
        assert [u.seq for u in await store.read_updates("d1200")] == [1, 2, 3]
        assert (await store.load("d0999")).updates[-1].data == b"yy"
        rows = sqlite3.connect(db_path).execute(
            "SELECT name, bytes_since_snapshot, updated_s FROM documents WHERE name IN "
            "('d0000', 'd0999', 'd1200')"
        )
        assert sorted(rows) == [("d0000", 3, 2.0), ("d0999", 2, 1001.0), ("d1200", 5, 1203.0)]
    finally:
        await store.close()
