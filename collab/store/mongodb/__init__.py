"""MongoDB store: several server instances on one replica set.

PyMongo's asyncio API (``AsyncMongoClient``) all the way down: no thread runs a
blocking client. The database is the store URL's path; the rest of the URL goes
to PyMongo as it is. MongoDB must run as a replica set (one member will do):
change streams need one.

Collections, with their indexes created at open:

- ``documents``: one per document, ``_id`` its name: epoch, times, head seq,
  snapshot seq, bytes since the snapshot, the snapshot lease.
- ``updates``: the log, one MongoDB document per appended batch of one
  document's updates (``seq`` its first, ``last`` its last), unique on
  ``(doc, seq)``. Its ``_id`` is the first update's submission id
  (``NewUpdate.submission``), so that an append retried after an unknown
  outcome finds what the first try stored instead of storing it twice.
- ``snapshots``: a document's state at a seq, in parts of at most
  ``SNAPSHOT_PART_BYTES`` (a MongoDB document holds 16 MiB), each with the digest
  of the whole, unique on ``(doc, seq, digest, part)``: two instances may encode
  one version in different bytes, and parts of the two are never joined. A
  snapshot counts once all its parts are there.
- ``awareness``: the latest presence state per ``(doc, client id)``, removed by a
  TTL index some time after it expires.
- ``feed_positions``: each instance's place in the feed (a change-stream resume
  token), so that a restarted instance follows on from where it stopped.
- ``checkpoints``: what changed in a document between two seqs, unique on
  ``(doc, seq)`` (collab.store.records.Checkpoint).
- ``quarantine``: what ``collab check --repair`` set aside.
- ``version_names``: the names given to versions, unique on ``(doc, seq)``.
- ``webhooks``: each webhook's feed position and delivery lease.

A module per area of the interface (collab.store.base): ``documents``, ``log``
(the seq-assigning append and its retries), ``feed`` (change streams),
``snapshots``, ``presence``, ``repairs``, ``names``, ``webhooks``, each a part of
:class:`MongoStore` on
``base`` (the client, its collections, errors, each document's entry).
"""

from __future__ import annotations

from collab.store.mongodb.base import database_from_url
from collab.store.mongodb.documents import MongoDocuments
from collab.store.mongodb.feed import MongoFeed
from collab.store.mongodb.log import MongoLog
from collab.store.mongodb.names import MongoNames
from collab.store.mongodb.presence import MongoPresence
from collab.store.mongodb.repairs import MongoRepairs
from collab.store.mongodb.snapshots import MongoSnapshots
from collab.store.mongodb.webhooks import MongoWebhooks

__all__ = ["MongoStore", "database_from_url"]


class MongoStore(
    MongoDocuments,
    MongoLog,
    MongoFeed,
    MongoSnapshots,
    MongoPresence,
    MongoRepairs,
    MongoNames,
    MongoWebhooks,
):
    """A Store in one MongoDB database: ``MongoStore(url)``, then ``open()``."""
