"""docs/INTEGRATING.md, "Writing over HTTP": its curl block and its Python recipe
run as written against a fresh server (only the address changes), and do what
the page says they do."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from tests.test_readme import code_block_after, run

DOCS = Path(__file__).resolve().parent.parent / "docs" / "INTEGRATING.md"
ADDRESS = "127.0.0.1:8000"
pytestmark = pytest.mark.skipif(not Path("/usr/bin/curl").exists(), reason="the recipes use curl")


@pytest.mark.slow  # runs the recipes, each a process
async def test_the_http_write_recipes_run_as_written(start_server, settings, tmp_path):
    server = await start_server(settings)
    address = f"127.0.0.1:{server.port}"
    page = DOCS.read_text()[DOCS.read_text().index("## Writing over HTTP") :]
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLAB_")}
    # `collab` as installed beside this Python, running this checkout's code.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(DOCS.parent.parent)

    shell = code_block_after(page, "With curl", "sh").replace(ADDRESS, address)
    out = await run(["bash", "-e", "-o", "pipefail", "-c", shell], cwd=tmp_path, env=env)

    assert '{"doc":"team/plan","seq":1}' in out and '{"doc":"team/plan","seq":2}' in out
    assert '{"type":"doc","content":[{"type":"heading","attrs":{"level":1}' in out
    assert '{"doc": "team/plan", "seq": 3}' in out
    history = await server.store.read_updates("team/plan", after_seq=0, limit=10)
    assert {record.author.user for record in history} == {"planner-bot"}

    recipe = code_block_after(page, "From Python", "python").replace(ADDRESS, address)
    (tmp_path / "writer.py").write_text(recipe)
    printed = await run([sys.executable, "writer.py"], cwd=tmp_path, env=env)
    assert printed.strip() == "1 Approved"
    assert await asyncio.wait_for(server.store.get_document("team/minutes"), 10) is not None
