"""The benchmark of collab beside other y-websocket servers (run it with ``scripts/bench``).

Read top-down:

- ``__main__``: the command line (``run``, the default; ``load``; ``serve-pycrdt``;
  ``serve-bare``).
- ``driver``: for each round and server, starts the server, runs each scenario's load
  generator as a separate process (or several: ``shards``), and records what it printed.
- ``servers``: the peer servers (collab on each store, the reference y-websocket
  server on Node.js, pycrdt-websocket, the bare relay), their persistence, how each
  starts with permessage-deflate where it can, start and stop; ``pycrdt_server`` is
  the pycrdt-websocket baseline itself, ``bare_server`` the bare Tornado + pycrdt relay.
- ``shapes``: the document shapes of rooms10x10, rooms100x3 and crowd50.
- ``shards``: a load generator split over processes, moved through barriers together.
- ``scenarios``: what the load generator does in each scenario, one JSON result each.
- ``loadgen``: the load generator's clients (a minimal y-websocket client, a minimal
  native ``/ws`` client) and the updates they send, encoded without a CRDT in the loop.
- ``sampler``: CPU, run-queue waits and RSS from ``/proc``, and what the server's
  database durably holds.
- ``report``: tables of medians over rounds, machine information, JSON.

README.md beside this file is the manual: what each scenario measures and how to read
the tables; docs/PERFORMANCE.md holds what they found.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
HOST = "127.0.0.1"
