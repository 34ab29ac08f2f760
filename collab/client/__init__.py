"""The Python client for the native protocol."""

from collab.client.connection import ClientError, CollabClient, RemoteDocument

__all__ = ["ClientError", "CollabClient", "RemoteDocument"]
