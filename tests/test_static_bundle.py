"""The page's bundle (static/app.js) is committed so that the server needs no
Node.js; it must be what scripts/build-static makes of static/src and the npm
packages pinned by scripts/frontend/package-lock.json."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "static"


@pytest.mark.slow  # a build of the page's bundle with its npm packages
@pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="node/npm not found: the bundle cannot be rebuilt here",
)
def test_the_committed_bundle_is_what_its_sources_build(tmp_path: Path) -> None:
    subprocess.run(
        [str(ROOT / "scripts" / "build-static"), str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    built = (tmp_path / "app.js").read_bytes()
    assert built == (STATIC / "app.js").read_bytes(), (
        "static/app.js is out of date with static/src: run scripts/build-static and commit it"
    )


def test_the_page_loads_nothing_from_another_origin() -> None:
    """No CDN: the page works with no internet."""
    for name in ("index.html", "app.css", "sw.js", "app.js"):
        text = (STATIC / name).read_text(encoding="utf-8")
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text), name
        assert not re.search(r"""(import|fetch)\s*\(?\s*["']https?://""", text), name
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    loaded = [u for u in re.findall(r'(?:src|href)="([^"]+)"', html) if not u.startswith("#")]
    assert loaded == ["data:,", "/app.css", "/app.js"]
