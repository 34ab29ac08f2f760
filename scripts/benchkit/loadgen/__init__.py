"""The load generator's side of the wire: the updates it sends (``updates``), a
minimal y-websocket client (``yjs``) and a minimal native ``/ws`` client (``native``),
both on one WebSocket wrapper (``connection``).
They are kept small on purpose: the load generator must cost less than the servers
it drives, which ``collab.client`` (a full CRDT document per connection) would not."""
