"""Wire formats and the document model they carry, sans I/O: the native MessagePack
protocol (native), y-websocket (yjs), Yjs binary read strictly (yformat), and the
replica that integrates Yjs updates as Yjs does (replica, crdt). Used by the server's
peers and by the client alike."""
