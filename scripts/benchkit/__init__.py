"""The benchmark of collab beside other y-websocket servers (run it with ``scripts/bench``).

Read top-down:

- ``__main__``: the command line (``run``, the default; ``load``; ``serve-pycrdt``).
- ``driver``: for each round and server, starts the server, runs each scenario's load
  generator as a separate process, and records what it printed.
- ``servers``: the peer servers (collab on each store, the reference y-websocket
  server on Node.js, pycrdt-websocket), their persistence, start and stop;
  ``pycrdt_server`` is the pycrdt-websocket baseline itself.
- ``scenarios``: what the load generator does in each scenario, one JSON result each.
- ``loadgen``: the load generator's clients (a minimal y-websocket client, a minimal
  native ``/ws`` client) and the updates they send, encoded without a CRDT in the loop.
- ``sampler``: the server process's CPU and RSS from ``/proc``, and what its database
  durably holds.
- ``report``: tables of medians over rounds, machine information, JSON.

docs/PERFORMANCE.md says what each scenario measures and how to read the tables.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
HOST = "127.0.0.1"
