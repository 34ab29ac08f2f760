"""An installed collab serves its page from the package, wherever it is started:
the wheel carries static/ (through the collab/static link in the repository)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from tornado.httpclient import AsyncHTTPClient

from tests.processes import server_process

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


async def run(*command: str, **kwargs: object) -> str:
    process = await asyncio.create_subprocess_exec(
        *command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        **kwargs,  # type: ignore[arg-type]
    )
    out, _ = await process.communicate()
    assert process.returncode == 0, out.decode()
    return out.decode()


async def test_an_installed_collab_started_elsewhere_serves_the_page(tmp_path: Path):
    site = tmp_path / "site"
    await run(
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        "--no-build-isolation",
        "--target",
        str(site),
        str(ROOT),
    )
    page = site / "collab" / "static" / "index.html"
    assert page.is_file() and not page.is_symlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PYTHONPATH": str(site)}
    imported = await run(
        sys.executable, "-c", "import collab; print(collab.__file__)", env=env, cwd=elsewhere
    )
    assert imported.strip().startswith(str(site))

    async with server_process("memory://", env=env, cwd=str(elsewhere)) as server:
        response = await AsyncHTTPClient().fetch(f"{server.url}/")

    assert response.body == (ROOT / "static" / "index.html").read_bytes()
