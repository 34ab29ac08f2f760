"""The Python client of the native protocol (``/ws``)."""

from collab.client.connection import ClientError, ClientState, CollabClient, RemoteDocument

__all__ = ["ClientError", "ClientState", "CollabClient", "RemoteDocument"]
