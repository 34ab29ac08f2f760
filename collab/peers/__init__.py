"""Peer connections (native and y-websocket) as protocol state machines, without sockets."""
