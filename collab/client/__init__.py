"""The Python client of the native protocol (``/ws``), and :func:`follow` for the
change feed across documents (``GET /api/events``)."""

from collab.client.changes import Change, ChangesLost, FollowError, follow
from collab.client.connection import ClientError, ClientState, CollabClient, RemoteDocument

__all__ = [
    "Change",
    "ChangesLost",
    "ClientError",
    "ClientState",
    "CollabClient",
    "FollowError",
    "RemoteDocument",
    "follow",
]
