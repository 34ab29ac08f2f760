"""The page's pure functions (tests/frontend/*.test.js: the version diff, the roles a
token grants) and the browser client package's unit tests (static/src/client/test/:
the connection, the provider's protocol with a fake server, the outbox and the copy
kept in IndexedDB with fake-indexeddb) under Node's test runner. The sources import npm
packages by name, so each test file is bundled with esbuild first, as
scripts/build-static bundles the page."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NODE_MODULES = ROOT / "scripts" / "frontend" / "node_modules"
TESTS = [Path(__file__).resolve().parent / "frontend", ROOT / "static" / "src" / "client" / "test"]


@pytest.mark.skipif(shutil.which("node") is None, reason="node not found")
def test_the_frontend_unit_tests_pass(tmp_path: Path) -> None:
    if not (NODE_MODULES / "@tiptap" / "core").exists():
        pytest.skip("scripts/frontend/node_modules is not installed (scripts/test installs it)")
    bundles = []
    for source in sorted(p for folder in TESTS for p in folder.glob("*.test.js")):
        bundle = tmp_path / f"{source.parent.name}-{source.stem}.mjs"
        subprocess.run(
            [
                str(NODE_MODULES / ".bin" / "esbuild"),
                str(source),
                "--bundle",
                "--platform=node",
                "--format=esm",
                "--log-level=warning",
                f"--outfile={bundle}",
            ],
            check=True,
            env={**os.environ, "NODE_PATH": str(NODE_MODULES)},
            timeout=120,
        )
        bundles.append(str(bundle))
    assert bundles
    result = subprocess.run(
        ["node", "--test", *bundles], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# fail 0" in result.stdout
    assert "# pass 0" not in result.stdout
