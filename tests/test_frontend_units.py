"""The page's pure functions (frontend/test/*.test.js: the version diff, the roles a
token grants) under Node's test runner."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

FRONTEND = Path(__file__).resolve().parent.parent / "frontend"


@pytest.mark.skipif(shutil.which("node") is None, reason="node not found")
def test_the_frontend_unit_tests_pass() -> None:
    if not (FRONTEND / "node_modules" / "@tiptap" / "core").exists():
        pytest.skip("frontend/node_modules is not installed (scripts/test installs it)")
    result = subprocess.run(
        ["node", "--test", "test/"],
        cwd=FRONTEND,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# fail 0" in result.stdout
    assert "# pass 0" not in result.stdout
