"""The SQLite store's schema and its versions: the tables a new file gets
(``SCHEMA``, version 1), the migrations that bring a file to ``SCHEMA_VERSION``
(kept in ``PRAGMA user_version``), and preparing a file to be opened.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from collab.errors import StoreError

SCHEMA_VERSION = 9
SCHEMA = """
CREATE TABLE documents (
    name TEXT PRIMARY KEY,
    epoch TEXT NOT NULL,
    head_seq INTEGER NOT NULL DEFAULT 0,
    created_s REAL NOT NULL,
    updated_s REAL NOT NULL
);
CREATE TABLE updates (
    doc TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    time_s REAL NOT NULL,
    origin_user TEXT,
    origin_client TEXT,
    origin_instance TEXT,
    PRIMARY KEY (doc, seq)
);
CREATE TABLE snapshots (
    doc TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    time_s REAL NOT NULL,
    PRIMARY KEY (doc, seq)
);
"""
# MIGRATIONS[v] takes a file from schema version v to v + 1; a new file is created
# at version 1 and migrated like any other.
MIGRATIONS: dict[int, str] = {
    1: """
CREATE TABLE quarantine (
    doc TEXT NOT NULL,
    kind TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    reason TEXT NOT NULL,
    quarantined_s REAL NOT NULL
);
CREATE INDEX quarantine_by_doc ON quarantine (doc, quarantined_s);
""",
    2: """
CREATE TABLE updates_v3 (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    doc TEXT NOT NULL,
    seq INTEGER NOT NULL,
    time_s REAL NOT NULL,
    origin_user TEXT,
    origin_client TEXT,
    origin_instance TEXT,
    data BLOB NOT NULL,  -- last: a large one spills to overflow pages, read only if asked
    UNIQUE (doc, seq)
);
INSERT INTO updates_v3 (doc, seq, data, time_s, origin_user, origin_client, origin_instance)
    SELECT doc, seq, data, time_s, origin_user, origin_client, origin_instance
    FROM updates ORDER BY rowid;
DROP TABLE updates;
ALTER TABLE updates_v3 RENAME TO updates;
ALTER TABLE documents ADD COLUMN snapshot_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE documents ADD COLUMN bytes_since_snapshot INTEGER NOT NULL DEFAULT 0;
ALTER TABLE documents ADD COLUMN lease_instance TEXT;
ALTER TABLE documents ADD COLUMN lease_until_s REAL;
UPDATE documents SET snapshot_seq =
    coalesce((SELECT max(seq) FROM snapshots WHERE snapshots.doc = documents.name), 0);
UPDATE documents SET bytes_since_snapshot = coalesce((
    SELECT sum(length(data)) FROM updates
    WHERE updates.doc = documents.name AND updates.seq > documents.snapshot_seq), 0);
CREATE TABLE awareness (
    doc TEXT NOT NULL,
    client_id INTEGER NOT NULL,
    instance TEXT NOT NULL,
    data BLOB NOT NULL,
    expires_s REAL NOT NULL,
    change_id INTEGER NOT NULL,
    PRIMARY KEY (doc, client_id)
);
CREATE INDEX awareness_by_change ON awareness (change_id);
ALTER TABLE snapshots ADD COLUMN waiting BLOB;
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO counters VALUES ('awareness_change', 0);
""",
    3: """
CREATE TABLE feed_positions (
    instance TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    saved_s REAL NOT NULL
);
""",
    4: """
CREATE TABLE checkpoints (
    doc TEXT NOT NULL,
    seq INTEGER NOT NULL,
    base_seq INTEGER NOT NULL,
    waiting BLOB NOT NULL,
    state_vector BLOB NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (doc, seq)
);
""",
    5: """
CREATE TABLE version_names (
    doc TEXT NOT NULL,
    seq INTEGER NOT NULL,
    name TEXT NOT NULL,
    user TEXT,
    time_s REAL NOT NULL,
    PRIMARY KEY (doc, seq)
);
""",
    6: """
CREATE TABLE webhooks (
    name TEXT PRIMARY KEY,
    position INTEGER,
    lease_instance TEXT,
    lease_until_s REAL NOT NULL DEFAULT 0,
    delivered INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    last_attempt_s REAL,
    last_success_s REAL
);
""",
    7: """
ALTER TABLE snapshots ADD COLUMN authors BLOB;
""",
    # Deletions take their ids from the updates' AUTOINCREMENT sequence (written by
    # delete_document under the write lock), so the feed reads both in one order.
    8: """
CREATE TABLE deletions (
    id INTEGER PRIMARY KEY,
    doc TEXT NOT NULL,
    epoch TEXT NOT NULL,
    last_seq INTEGER NOT NULL,
    time_s REAL NOT NULL,
    origin_user TEXT,
    origin_client TEXT,
    origin_instance TEXT
);
""",
}
WAL_SWITCH_TIMEOUT_S = 10.0


def prepare(conn: sqlite3.Connection, path: Path, *, create: bool) -> None:
    """Make the file ``conn`` has open a store of ``SCHEMA_VERSION`` in WAL mode:
    create the schema in an empty file (unless not ``create``), migrate an older
    one. Raises StoreError for a file of another schema or none (a foreign file is
    refused before it is changed). On failure, close ``conn``: that also rolls back
    a half-created schema."""
    # Refuse a foreign file before switching it to WAL, which would stick.
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    _check_version(path, found)
    if found == 0 and not create:
        raise StoreError(f"{path.resolve()} is not a collab store")
    mode = _switch_to_wal(conn)
    if mode.lower() != "wal":
        raise StoreError(f"{path}: could not switch to WAL mode (got {mode})")
    # Checked again under the write lock so that two processes opening a new file
    # cannot both create the schema.
    conn.execute("BEGIN IMMEDIATE")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    _check_version(path, version)
    if version == 0:
        _execute_script(conn, SCHEMA)
        version = 1
    while version < SCHEMA_VERSION:
        _execute_script(conn, MIGRATIONS[version])
        version += 1
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    conn.execute("COMMIT")


def _switch_to_wal(conn: sqlite3.Connection) -> str:
    # Switching needs the file to itself and SQLite does not wait for it (no busy
    # handler): two processes opening a new file at once (the workers of
    # `collab serve --workers N`) take turns.
    deadline = time.monotonic() + WAL_SWITCH_TIMEOUT_S
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _check_version(path: Path, version: int) -> None:
    if not 0 <= version <= SCHEMA_VERSION:
        raise StoreError(f"{path}: schema version {version}, this server knows {SCHEMA_VERSION}")


def _execute_script(conn: sqlite3.Connection, script: str) -> None:
    # Statement by statement: executescript() would commit the open transaction.
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)
