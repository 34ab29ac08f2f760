"""Wire formats, sans I/O: the native MessagePack protocol, y-websocket, Yjs binary."""
