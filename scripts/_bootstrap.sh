# Sourced by scripts/*: prepares what a fresh machine lacks, once.
# - .venv with the package installed editable, plus test tools (re-run when setup.cfg changes)
# - tests/node/node_modules and scripts/frontend/node_modules from their lock files (re-run when
#   a package-lock.json changes)
# - Debian packages some tests use, where apt-get can install them (else they skip)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON="${PYTHON:-python3}"

bootstrap_python() {
    local stamp="$VENV/.collab-installed"
    if [ ! -x "$VENV/bin/python" ]; then
        echo "bootstrap: creating $VENV" >&2
        "$PYTHON" -m venv "$VENV"
    fi
    if [ ! -f "$stamp" ] || [ "$ROOT/setup.cfg" -nt "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
        echo "bootstrap: installing collab and its test dependencies" >&2
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT[test]" >&2
        touch "$stamp"
    fi
}

bootstrap_node_clients() {
    # tests/node: the y-websocket clients of the interop tests; scripts/frontend: the
    # page's npm packages (its unit tests, and scripts/build-static in the bundle test).
    local dir
    for dir in "$ROOT/tests/node" "$ROOT/scripts/frontend"; do
        [ -f "$dir/package-lock.json" ] || continue
        if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
            echo "bootstrap: node/npm not found; the Node.js tests will be skipped" >&2
            return 0
        fi
        local stamp="$dir/node_modules/.collab-installed"
        if [ ! -f "$stamp" ] || [ "$dir/package-lock.json" -nt "$stamp" ]; then
            echo "bootstrap: installing the pinned npm packages of ${dir#"$ROOT"/}" >&2
            (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
            touch "$stamp"
        fi
    done
}

# _apt_install PACKAGE WHAT: installs a Debian package when it can (root, apt-get).
_apt_install() {
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        echo "bootstrap: $1 not found and apt-get not usable; $2 will be skipped" >&2
        return 0
    fi
    echo "bootstrap: installing Debian's $1 (for $2)" >&2
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q "$1" >/dev/null 2>&1; then
        apt-get update -q >/dev/null 2>&1 || true
        apt-get install -y -q "$1" >/dev/null 2>&1 \
            || echo "bootstrap: could not install $1; $2 will be skipped" >&2
    fi
}

bootstrap_debian_packages() {
    # nginx: tests/test_deployment.py checks docker/nginx.conf with `nginx -t`.
    if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
        _apt_install nginx-light "its test (nginx -t)"
    fi
    # chromium: tests/test_browser.py drives it headless through Playwright.
    if [ ! -x /usr/bin/chromium ]; then
        _apt_install chromium "the browser tests"
    fi
}
