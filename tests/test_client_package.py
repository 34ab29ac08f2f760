"""The browser client as the npm package an application installs (@collab/client,
static/src/client): `scripts/build-static --pack-client` packs it; the tarball installs
offline into a new npm project next to its peer dependencies (packed from
scripts/frontend/node_modules, so no registry is needed), Node imports it through its
`exports`, its declarations match its code and type-check an application's
TypeScript (tests/client_package/consumer.ts), and esbuild bundles that application."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NODE_MODULES = ROOT / "scripts" / "frontend" / "node_modules"
FILES = Path(__file__).resolve().parent / "client_package"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.node,
    pytest.mark.skipif(
        shutil.which("node") is None or shutil.which("npm") is None, reason="node/npm not found"
    ),
    pytest.mark.skipif(
        not (NODE_MODULES / "typescript").exists(),
        reason="scripts/frontend/node_modules is not installed (scripts/test installs it)",
    ),
]


def run(*command: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        command,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def pack_client(dest: Path) -> Path:
    out = run(str(ROOT / "scripts" / "build-static"), "--pack-client", str(dest), cwd=ROOT)
    tarball = Path(out.strip().splitlines()[-1])
    assert tarball.is_file() and tarball.parent == dest
    return tarball


def manifest(folder: Path) -> dict:
    return json.loads((folder / "package.json").read_text(encoding="utf-8"))


def closure(names: list[str]) -> list[str]:
    """The packages `names` need, themselves included: their dependencies and required
    peer dependencies, as installed in scripts/frontend/node_modules."""
    found: list[str] = []
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.append(name)
        meta = manifest(NODE_MODULES / name)
        optional = {k for k, v in meta.get("peerDependenciesMeta", {}).items() if v.get("optional")}
        todo += list(meta.get("dependencies", {}))
        todo += [p for p in meta.get("peerDependencies", {}) if p not in optional]
    return sorted(found)


def install(app: Path, tarball: Path) -> None:
    """Installs the client's tarball into the npm project `app` as an application does
    (npm install), with no registry: its dependencies and peers are packed from
    scripts/frontend/node_modules and installed from those tarballs too."""
    with tarfile.open(tarball) as archive:
        member = archive.extractfile("package/package.json")
        assert member is not None
        client = json.load(member)
    needed = closure([*client["dependencies"], *client["peerDependencies"]])
    vendor = app / "vendor"
    vendor.mkdir(parents=True)
    packed = json.loads(
        run(
            "npm",
            "pack",
            "--json",
            "--ignore-scripts",
            "--pack-destination",
            str(vendor),
            *(str(NODE_MODULES / name) for name in needed),
            cwd=app,
        )
    )
    dependencies = {client["name"]: f"file:{tarball}"}
    dependencies.update({p["name"]: f"file:vendor/{p['filename']}" for p in packed})
    (app / "package.json").write_text(
        json.dumps({"name": "app", "private": True, "type": "module", "dependencies": dependencies})
    )
    run(
        "npm",
        "install",
        "--offline",
        "--no-audit",
        "--no-fund",
        "--ignore-scripts",
        "--cache",
        str(app / "npm-cache"),  # an empty cache: nothing can come from an earlier download
        cwd=app,
    )


def test_the_packed_client_holds_its_modules_and_declarations_and_nothing_else(tmp_path: Path):
    tarball = pack_client(tmp_path)
    with tarfile.open(tarball) as archive:
        names = sorted(archive.getnames())
        meta = json.load(archive.extractfile("package/package.json"))  # type: ignore[arg-type]
    assert tarball.name == f"collab-client-{meta['version']}.tgz"
    assert names == sorted(
        f"package/{name}"
        for name in (
            "README.md",
            "client.js",
            "index.d.ts",
            "index.js",
            "outbox.js",
            "package.json",
            "persistence.js",
            "provider.js",
            "tabs.js",
        )
    )
    assert meta["name"] == "@collab/client"
    assert meta["type"] == "module"
    assert meta["exports"]["."] == {"types": "./index.d.ts", "default": "./index.js"}
    assert set(meta["peerDependencies"]) == {"yjs", "y-protocols"}
    # What the modules import by name is declared, and what the page's lock file pins
    # satisfies it.
    imported = set()
    for source in (ROOT / "static" / "src" / "client").glob("*.js"):
        text = source.read_text(encoding="utf-8")
        imported |= set(re.findall(r'^import [^;]*?from "([^".][^"]*)";', text, flags=re.M))
    packages = {
        "/".join(i.split("/")[:2]) if i.startswith("@") else i.split("/")[0] for i in imported
    }
    assert packages == set(meta["dependencies"]) | set(meta["peerDependencies"])


def test_an_application_installs_the_tarball_offline_imports_it_type_checks_and_bundles_it(
    tmp_path: Path,
):
    tarball = pack_client(tmp_path / "dist")
    app = tmp_path / "app"
    install(app, tarball)
    installed = app / "node_modules" / "@collab" / "client"
    assert (installed / "index.d.ts").is_file()
    assert not (installed / "node_modules").exists()  # one yjs: the application's

    # Node resolves the package's exports; its declarations match the code.
    shutil.copy(FILES / "exports.mjs", app)
    report = json.loads(
        run("node", "exports.mjs", cwd=app, env={"TYPESCRIPT": str(NODE_MODULES / "typescript")})
    )
    assert report["name"] == "@collab/client"
    assert {"CollabClient", "DocumentProvider", "ConnectionState", "Sent", "TAB_ID"} <= set(
        report["exports"]
    )
    assert report["members"] > 30

    # An application's TypeScript type-checks against the declarations (strict), and
    # the misuses it lists are refused.
    shutil.copy(FILES / "consumer.ts", app)
    shutil.copy(FILES / "tsconfig.json", app)
    run("node", str(NODE_MODULES / "typescript" / "bin" / "tsc"), "-p", "tsconfig.json", cwd=app)

    # A bundler takes it as it is.
    run(
        str(NODE_MODULES / ".bin" / "esbuild"),
        "consumer.ts",
        "--bundle",
        "--format=esm",
        "--log-level=warning",
        "--outfile=out/app.js",
        cwd=app,
    )
    bundle = (app / "out" / "app.js").read_text(encoding="utf-8")
    assert "collab-outbox" in bundle  # the client's IndexedDB database
