"""docs/INTEGRATING.md, "Named versions": its recipe runs as written, against a
server holding the document it names (only the address changes)."""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path

import pycrdt
import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "INTEGRATING.md"
ADDRESS = "127.0.0.1:8000"
pytestmark = pytest.mark.skipif(not Path("/usr/bin/curl").exists(), reason="the recipe uses curl")


def recipe(section: str) -> str:
    text = DOC.read_text()
    start = text.index(f"## {section}\n")
    match = re.compile(r"```sh\n(.*?)```", re.S).search(text, start)
    assert match is not None
    return match.group(1)


async def test_the_named_versions_recipe_runs_as_written(start_server, settings, connect):
    server = await start_server(settings)
    remote = await (await connect(server)).subscribe("contracts/acme")
    text = remote.doc.get("text", type=pycrdt.Text)
    text.insert(0, "The terms.")
    await remote.flushed()
    text.insert(len(text), " A change legal did not see.")
    await remote.flushed()

    script = "set -euo pipefail\n" + recipe("Named versions").replace(
        ADDRESS, f"127.0.0.1:{server.port}"
    )
    script = script.replace("curl -sS ", "curl -sS --fail-with-body -w '\\n' ")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLAB_")}
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        script,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()

    answers = [json.loads(line) for line in out.decode().splitlines()]
    named, listed, restored, unnamed = answers
    assert (named["seq"], named["name"]) == (2, "Sent to legal")
    assert [n["name"] for n in listed["names"]] == ["Sent to legal"]
    assert (restored["restored_seq"], restored["changed"]) == (2, False)  # already it
    assert unnamed == {"doc": "contracts/acme", "seq": 2, "deleted": True}
    assert await server.store.version_names("contracts/acme") == []
