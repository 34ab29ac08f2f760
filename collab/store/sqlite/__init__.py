"""SQLite store: the embedded default, shared by every process that opens the file.

Stdlib ``sqlite3`` in WAL mode with ``synchronous=FULL``, so a committed batch
survives a crash of the process or of the machine. All SQL runs off the event
loop on dedicated threads, each with its own connection: one writer (SQLite
allows one at a time anyway: its lock also serialises the processes that share
the file), one reader for loads and history, which WAL lets run beside it, one
that polls the feeds, and one that writes presence (awareness), which need not
be durable and so is committed without an fsync.

Seqs are given inside the writer's transaction (``BEGIN IMMEDIATE`` holds the
file's write lock), so they are gap-free per document across processes. Every
update row also gets an ``id`` from ``AUTOINCREMENT``: ids grow in commit order
across every process and never change, so each process follows the others'
commits by polling ``id > last`` through the primary key.

A module per area of the interface (collab.store.base): ``documents``, ``log``,
``feed``, ``snapshots``, ``presence``, ``repairs``, ``names``, ``webhooks``, each a part of
:class:`SQLiteStore` on ``base`` (threads, connections, the write transaction);
``schema`` holds the tables and their migrations.
"""

from __future__ import annotations

from pathlib import Path

from collab.store.sqlite.documents import SQLiteDocuments
from collab.store.sqlite.feed import SQLiteFeed
from collab.store.sqlite.log import SQLiteLog
from collab.store.sqlite.names import SQLiteNames
from collab.store.sqlite.presence import SQLitePresence
from collab.store.sqlite.repairs import SQLiteRepairs
from collab.store.sqlite.snapshots import SQLiteSnapshots
from collab.store.sqlite.webhooks import SQLiteWebhooks

__all__ = ["SQLiteStore", "path_from_url"]


class SQLiteStore(
    SQLiteDocuments,
    SQLiteLog,
    SQLiteFeed,
    SQLiteSnapshots,
    SQLitePresence,
    SQLiteRepairs,
    SQLiteNames,
    SQLiteWebhooks,
):
    """A Store in one SQLite file: ``SQLiteStore(path)``, then ``open()``."""


def path_from_url(url: str) -> Path:
    """``sqlite:///relative.db`` or ``sqlite:////absolute.db``."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ValueError(f"not a sqlite URL: {url!r} (expected sqlite:///path/to/file.db)")
    return Path(url[len(prefix) :])
