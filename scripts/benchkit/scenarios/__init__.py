"""The load generator's scenarios. Each takes its parameters (a JSON object: the
server's port and pid, how to read its database, the scenario's own knobs) and
returns one JSON object of figures; each checks at its end that what was sent
arrived exactly (a ``converged`` field, or an exception)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from ..loadgen.updates import check_update_encoding
from .compression import scenario_compression
from .connections import scenario_idle, scenario_probe, scenario_storm
from .durable import scenario_durable
from .fanout import scenario_latency
from .floods import scenario_fastwriter, scenario_stalled
from .memory import scenario_memory
from .rooms import scenario_rooms
from .stored import scenario_coldload, scenario_history, scenario_seed
from .throughput import scenario_throughput

Scenario = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]

SCENARIOS: dict[str, Scenario] = {
    "latency": scenario_latency,
    "throughput": scenario_throughput,
    "durable": scenario_durable,
    "memory": scenario_memory,
    "stalled": scenario_stalled,
    "fastwriter": scenario_fastwriter,
    "seed": scenario_seed,
    "coldload": scenario_coldload,
    "history": scenario_history,
    "rooms": scenario_rooms,
    "idle": scenario_idle,
    "storm": scenario_storm,
    "probe": scenario_probe,
    "compression": scenario_compression,
}


def load_main(scenario: str, params_json: str) -> int:
    """The ``load`` command: one scenario, its result as one JSON line on stdout."""
    check_update_encoding()
    result = asyncio.run(SCENARIOS[scenario](json.loads(params_json)))
    print(json.dumps(result))
    return 0
