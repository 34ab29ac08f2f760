"""The deployment in docker/, checked without a Docker engine: the compose file
parses and starts what it says (MongoDB replica set, two collab instances, a
balancer, health checks, a named volume); every COLLAB_* variable it or the image
sets is a setting the server reads; the image's command line is one
``collab serve`` accepts; the balancer's config passes ``nginx -t``."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from collab.cli import build_parser
from collab.config import ENV_PREFIX, Settings
from collab.store import create_store
from collab.store.mongodb import MongoStore

DOCKER = Path(__file__).resolve().parent.parent / "docker"
INSTANCES = ("collab-1", "collab-2")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def dockerfile_env() -> dict[str, str]:
    """The ENV of docker/Dockerfile (``ENV A=1 \\`` continued over lines)."""
    text = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(re.findall(r"(\w+)=(\S+)", line))
    return env


def dockerfile_cmd() -> list[str]:
    lines = (DOCKER / "Dockerfile").read_text().splitlines()
    (line,) = [line for line in lines if line.startswith("CMD")]
    return json.loads(line.removeprefix("CMD").strip())


def test_compose_runs_a_replica_set_two_instances_and_a_balancer(compose):
    services = compose["services"]
    assert set(services) == {"mongo", *INSTANCES, "balancer"}
    assert "--replSet" in services["mongo"]["command"]
    assert "rs.initiate" in " ".join(services["mongo"]["healthcheck"]["test"])
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
    for name in INSTANCES:
        assert services[name]["depends_on"]["mongo"]["condition"] == "service_healthy"
        assert "/readyz" in " ".join(services[name]["healthcheck"]["test"])
    assert {d: c["condition"] for d, c in services["balancer"]["depends_on"].items()} == {
        name: "service_healthy" for name in INSTANCES
    }
    assert services["balancer"]["ports"] == ["8000:80"]
    volume, _ = services["mongo"]["volumes"][0].split(":", 1)
    assert volume in compose["volumes"]


def test_every_collab_variable_is_a_setting_the_server_reads(compose):
    settings = {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings)}
    image = dockerfile_env()
    for name in INSTANCES:
        environment = {**image, **compose["services"][name]["environment"]}
        variables = {key for key in environment if key.startswith(ENV_PREFIX)}
        assert variables <= settings, variables - settings
        parsed = Settings.from_env(environment)
        assert parsed.instance_id == name
        assert parsed.log_format == "json"
        assert parsed.host == "0.0.0.0"
        # Behind the balancer every client has its address: the cap per client
        # address is nginx's (limit_conn), not the instances'.
        assert parsed.max_connections_per_ip == 0
        store = create_store(parsed.store_url)
        assert isinstance(store, MongoStore) and store.url.endswith("/collab?replicaSet=rs0")


def test_the_images_command_is_one_collab_serve_accepts(compose):
    command = dockerfile_cmd()
    assert command[0] == "collab"
    args = build_parser().parse_args(command[1:])
    assert args.command == "serve"
    for name in INSTANCES:
        assert "command" not in compose["services"][name]  # the image's, checked above


def test_the_balancer_config_passes_nginx_t(tmp_path: Path):
    nginx = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None
    )
    if nginx is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx-light)")
    # The upstream names resolve only inside compose's network: point them at
    # loopback for the check, and keep everything else as it is.
    config = (DOCKER / "nginx.conf").read_text()
    assert "limit_conn per_address" in config  # the per-client cap (the instances' is off)
    for name in INSTANCES:
        config = config.replace(f"{name}:8000", "127.0.0.1:8000")
    path = tmp_path / "nginx.conf"
    path.write_text(config)
    result = subprocess.run(
        [nginx, "-t", "-q", "-p", str(tmp_path), "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
