"""docs/INTEGRATING.md, "Who wrote what": its recipe runs as written against a
server where two clients typed."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import pycrdt

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "INTEGRATING.md"


def recipe() -> str:
    text = GUIDE.read_text()
    section = text[text.index("## Who wrote what") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


async def test_the_who_wrote_what_recipe_counts_each_writers_characters(server, connect, tmp_path):
    for name, words in (("ann", "Hello"), ("bob", " world!")):
        client = await connect(client_id=name)
        remote = await client.subscribe("team/notes")
        text = remote.doc.get("text", type=pycrdt.Text)
        text.insert(len(text), words)
        await remote.flushed()
        await client.close()
    script = tmp_path / "who_wrote.py"
    script.write_text(recipe())
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        f"http://127.0.0.1:{server.port}",
        "team/notes",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    assert out.decode().splitlines() == ["bob: 7 characters", "ann: 5 characters"]
