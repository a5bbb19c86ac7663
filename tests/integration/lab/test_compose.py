"""compose.yaml and its lab override, as Docker Compose v2 reads them: every service has a
healthcheck and waits for a healthy broker, credentials come from the env file only (no
default password, never guest), the UI is on loopback, and the lab override swaps in local
images on the host's network. `make compose-demo` runs them for real (too slow for here).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import lab_unavailable

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
SERVICES = ("watcher", "validator", "launcher", "collector")


def _compose(env_file: Path, *files: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("docker") is None:
        lab_unavailable("no docker CLI (lab/docker/up.sh installs Docker and compose v2)")
    args = ["docker", "compose", "--project-directory", str(REPO)]
    for name in files:
        args += ["-f", str(REPO / name)]
    done = subprocess.run(
        [*args, "--env-file", str(env_file), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if "is not a docker command" in done.stderr or "unknown command" in done.stderr:
        lab_unavailable("no compose v2 plugin (lab/docker/up.sh builds it)")
    return done


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    example = (REPO / "deploy" / "compose.env.example").read_text()
    path = tmp_path / "compose.env"
    path.write_text(example.replace("RABBITMQ_PASSWORD=\n", "RABBITMQ_PASSWORD=0123abcd\n"))
    return path


def _config(env_file: Path, *files: str) -> dict[str, Any]:
    done = _compose(env_file, *files)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_the_example_env_file_has_no_password_and_compose_refuses_it() -> None:
    done = _compose(REPO / "deploy" / "compose.env.example", "compose.yaml")
    assert done.returncode != 0
    assert "RABBITMQ_PASSWORD" in done.stderr


def test_every_service_is_checked_waits_for_the_broker_and_drops_capabilities(
    env_file: Path,
) -> None:
    services = _config(env_file, "compose.yaml")["services"]
    assert set(services) == {"rabbitmq", *SERVICES}
    assert "test" in services["rabbitmq"]["healthcheck"]
    broker_env = services["rabbitmq"]["environment"]
    assert broker_env["RABBITMQ_DEFAULT_USER"] == "slurmk8s"
    assert broker_env["RABBITMQ_DEFAULT_PASS"] == "0123abcd"
    ui = [p for p in services["rabbitmq"]["ports"] if p["target"] == 15672]
    assert ui[0]["host_ip"] == "127.0.0.1"
    for name in SERVICES:
        svc = services[name]
        assert svc["command"] == [name]
        assert svc["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
        assert svc["healthcheck"]["test"][-1] == "health"
        assert svc["cap_drop"] == ["ALL"]
        assert svc["read_only"] is True
        assert svc["environment"]["AMQP_URL"] == (
            "amqp://slurmk8s:0123abcd@rabbitmq:5672/slurm-k8s"
        )
        assert svc["environment"]["METRICS_PORT"] == "9464"  # a scraper on the network
        assert svc["environment"]["METRICS_HOST"] == "0.0.0.0"
    assert "guest" not in json.dumps(services)
    assert "SETUID" in services["validator"]["cap_add"]
    assert "SETUID" not in services["watcher"].get("cap_add", [])


def test_the_lab_override_runs_local_images_on_the_hosts_network(env_file: Path) -> None:
    services = _config(env_file, "compose.yaml", "compose.lab.yaml")["services"]
    for name, svc in services.items():
        assert svc["network_mode"] == "host", name
        assert svc["pull_policy"] == "never", name
        assert "build" not in svc, name
    assert services["rabbitmq"]["image"] == "slurm-k8s-rabbitmq:dev"
    assert "ports" not in services["rabbitmq"]
    # One network for all four: each metrics page on its own loopback port.
    pages = {
        (services[n]["environment"]["METRICS_HOST"], services[n]["environment"]["METRICS_PORT"])
        for n in SERVICES
    }
    assert len(pages) == len(SERVICES)
    assert {host for host, _ in pages} == {"127.0.0.1"}
    assert services["watcher"]["environment"]["AMQP_URL"].startswith("amqp://slurmk8s:")
