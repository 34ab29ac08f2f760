"""collab: a collaborative-editing backend (Yjs-compatible CRDT sync over WebSockets)."""

__version__ = "0.1.0"

__all__ = ["__version__"]
