"""The Python client of the native protocol (``/ws``), and writes over HTTP
(collab.client.writes)."""

from collab.client.connection import ClientError, ClientState, CollabClient, RemoteDocument
from collab.client.writes import HttpWriter, WriteError

__all__ = [
    "ClientError",
    "ClientState",
    "CollabClient",
    "HttpWriter",
    "RemoteDocument",
    "WriteError",
]
