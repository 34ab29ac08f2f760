"""The Python client of the native protocol (``/ws``), writes over HTTP
(collab.client.writes), and :func:`follow` for the change feed across documents
(``GET /api/events``)."""

from collab.client.changes import Change, ChangesLost, Deletion, FollowError, follow
from collab.client.connection import ClientError, ClientState, CollabClient, RemoteDocument
from collab.client.writes import HttpWriter, WriteError

__all__ = [
    "Change",
    "ChangesLost",
    "ClientError",
    "ClientState",
    "CollabClient",
    "Deletion",
    "FollowError",
    "HttpWriter",
    "RemoteDocument",
    "WriteError",
    "follow",
]
