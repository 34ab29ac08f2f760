"""HTTP and WebSocket front end (Tornado)."""
