"""Stores: where documents live. ``create_store`` picks a backend from a URL.

The interface, by area, is collab.store.base; the records it takes and gives are
collab.store.records. Both are named here: import them from ``collab.store``."""

from __future__ import annotations

from collab.store.base import (
    DocumentStore,
    FeedStore,
    HeldDocuments,
    LogStore,
    PresenceStore,
    RepairStore,
    SnapshotStore,
    Store,
    VersionNameStore,
    WebhookStore,
)
from collab.store.records import (
    MAX_SEQ,
    AppendResult,
    Author,
    AwarenessChange,
    Checkpoint,
    DeletionRecord,
    DocumentHead,
    DocumentInfo,
    FeedPosition,
    FeedRecord,
    LoadedDocument,
    NewUpdate,
    QuarantinedEntry,
    Repair,
    SnapshotRecord,
    UpdateRecord,
    VersionName,
    WebhookState,
)

__all__ = [
    "MAX_SEQ",
    "AppendResult",
    "Author",
    "AwarenessChange",
    "Checkpoint",
    "DeletionRecord",
    "DocumentHead",
    "DocumentInfo",
    "DocumentStore",
    "FeedPosition",
    "FeedRecord",
    "FeedStore",
    "HeldDocuments",
    "LoadedDocument",
    "LogStore",
    "NewUpdate",
    "PresenceStore",
    "QuarantinedEntry",
    "Repair",
    "RepairStore",
    "SnapshotRecord",
    "SnapshotStore",
    "Store",
    "UpdateRecord",
    "VersionName",
    "VersionNameStore",
    "WebhookState",
    "WebhookStore",
    "create_store",
]


def create_store(url: str, *, create: bool = True) -> Store:
    """A store for ``url``: ``sqlite:///path.db``, ``mongodb://host:port/database``
    (or ``mongodb+srv://``) or ``memory://``. Call ``open()`` next. ``create``
    False: ``open()`` raises StoreError when there is no store there yet, instead of
    making one (a command that only reads must not leave an empty store behind)."""
    if url.startswith(("mongodb:", "mongodb+srv:")):
        from collab.store.mongodb import MongoStore

        return MongoStore(url, create=create)
    if url.startswith("sqlite:"):
        from collab.store.sqlite import SQLiteStore, path_from_url

        return SQLiteStore(path_from_url(url), create=create)
    if url.startswith("memory:"):
        from collab.store.memory import MemoryStore

        return MemoryStore()
    scheme = url.split(":", 1)[0] if ":" in url else url
    raise ValueError(
        f"unsupported store URL scheme {scheme!r}: use sqlite:///path/to/file.db, "
        "mongodb://host:port/database or memory://"
    )
