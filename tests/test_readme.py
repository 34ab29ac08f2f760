"""The README's examples run as written, in order, as a new user runs them: its
``hello.py`` against a fresh server, then each ``curl`` line of "History over
HTTP", then each ``collab`` line of the command-line block, against that server's
store. Only the address changes (the server listens on a free port)."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import sys
from pathlib import Path

import pytest

from tests.cli import collab_in_process

README = Path(__file__).resolve().parent.parent / "README.md"
ADDRESS = "127.0.0.1:8000"
pytestmark = pytest.mark.skipif(
    not Path("/usr/bin/curl").exists(), reason="the README's examples use curl"
)


def code_block_after(text: str, marker: str, language: str) -> str:
    start = text.index(marker)
    match = re.compile(rf"```{language}\n(.*?)```", re.S).search(text, start)
    assert match is not None, f"no {language} block after {marker!r}"
    return match.group(1)


def without_comment(line: str) -> str:
    # A '#' that starts a comment follows a space (URLs hold %2F, not ' #').
    return re.split(r"\s+#\s", line, maxsplit=1)[0].strip()


async def run(args: list[str], *, cwd: Path, env: dict[str, str], timeout_s: float = 60) -> str:
    process = await asyncio.create_subprocess_exec(
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout_s)
    assert process.returncode == 0, f"{args}: exit {process.returncode}: {err.decode()}"
    return out.decode()


@pytest.mark.slow  # runs the README's commands against a server
async def test_the_readme_examples_run_as_written_in_order(
    start_server, settings, tmp_path, monkeypatch
):
    server = await start_server(settings)
    address = f"127.0.0.1:{server.port}"
    readme = README.read_text()
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLAB_")}

    hello = code_block_after(readme, "save as\n`hello.py`", "python")
    (tmp_path / "hello.py").write_text(hello.replace(ADDRESS, address))
    out = await run([sys.executable, "hello.py"], cwd=tmp_path, env=env)
    assert out.strip() == "hello world"

    curls = code_block_after(readme, "History over HTTP", "sh")
    answers = []
    for line in curls.splitlines():
        command = without_comment(line).replace(ADDRESS, address)
        if not command:
            continue
        assert command.startswith("curl ")
        if " -N " in command:  # the live stream: what it replays, for a moment
            shell = f"curl -sS --max-time 1 {command[5:]}; test $? = 28"
        else:
            shell = f"curl -sS --fail-with-body {command[5:]}"
        answers.append(await run(["bash", "-c", shell], cwd=tmp_path, env=env))
    assert '"restored_seq":1' in answers[-2] and '"changed":true' in answers[-2]
    assert "id: 2\nevent: update" in answers[-1]

    commands = code_block_after(readme, "against the store (`--store-url`", "sh")
    env["COLLAB_STORE_URL"] = settings.store_url
    # The first as a user runs it, a process; the others through the same entry
    # (collab.cli.main) in this process, in the same environment and folder: a
    # process cost each a third of a second of CPU, and a second or more of a busy
    # machine's time, before the command began (tests/cli.py).
    for name in [name for name in os.environ if name.startswith("COLLAB_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("COLLAB_STORE_URL", settings.store_url)
    monkeypatch.chdir(tmp_path)
    ran = 0
    for line in commands.splitlines():
        command = re.sub(r"\s*\[[^\]]*\]", "", without_comment(line))  # [optional] flags
        if not command:
            continue
        words = shlex.split(command)
        assert words[0] == "collab"
        if not ran:
            await run([sys.executable, "-m", "collab", *words[1:]], cwd=tmp_path, env=env)
        else:
            code, _, err = await collab_in_process(*words[1:])
            assert code == 0, f"{command}: exit {code}: {err}"
        ran += 1
    assert ran == 8
    assert (tmp_path / "notes.jsonl").is_file()
    assert any((tmp_path / "backups").iterdir())
    assert await server.store.get_document("team/notes-copy") is not None
