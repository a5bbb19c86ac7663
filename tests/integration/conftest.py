"""Fixtures shared by every integration test: the lab's settings and reachability checks.

The one rule, decided here and nowhere else: a lab component that is not reachable makes a
test *skip* on a developer's machine and *fail* under CI (``CI`` set), where `make test` has
just brought the lab up and a missing component is a bug.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

REPO = Path(__file__).resolve().parents[2]
LAB_STATE = Path(os.environ.get("LAB_STATE", "/var/lib/slurm-k8s-lab"))

RunAs = Callable[..., "subprocess.CompletedProcess[str]"]


def lab_unavailable(reason: str) -> NoReturn:
    """Skip locally, fail under CI: the lab should be up there (`make test` started it)."""
    if os.environ.get("CI"):
        pytest.fail(f"lab component unavailable under CI: {reason}", pytrace=False)
    pytest.skip(f"{reason} (bring the lab up with `make lab`)")


def wait_for(
    what: str, probe: Callable[[], Any], timeout: float = 180, interval: float = 1.0
) -> Any:
    """Poll until ``probe()`` is truthy; fail with ``what`` after ``timeout``.

    The suite's one way to wait: for a condition, never for a fixed time.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def _parse_exports(text: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in text.splitlines():
        if not line.startswith("export "):
            continue
        words = shlex.split(line[len("export ") :])
        if words and "=" in words[0]:
            key, _, value = words[0].partition("=")
            env[key] = value
    return env


@pytest.fixture(scope="session", autouse=True)
def _lab_services_stopped() -> None:
    """Services left running by `make up` or `make demo` would consume the tests' messages
    and pick up their files: the tests run their own, so the lab's are stopped first
    (`make up` brings them back)."""
    subprocess.run(
        ["bash", str(REPO / "lab" / "services.sh"), "stop"],
        capture_output=True,
        timeout=180,
        check=False,
    )


@pytest.fixture(scope="session")
def lab_env() -> dict[str, str]:
    """The lab's settings: `lab/env.sh`'s exports, overridden by the process environment."""
    try:
        out = subprocess.run(
            ["bash", str(REPO / "lab" / "env.sh")],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    env = _parse_exports(out)
    for key in (*env, "AMQP_URL", "KUBECONFIG", "NAS_ROOT", "LAB_NODE", "SLURM_CONF"):
        if os.environ.get(key):
            env[key] = os.environ[key]
    return env


def _tcp_open(host: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _check_rabbitmq(env: dict[str, str]) -> str | None:
    if not env.get("AMQP_URL"):
        return "AMQP_URL is not set (no RabbitMQ credentials yet)"
    parts = urlsplit(env["AMQP_URL"])
    host, port = parts.hostname or "127.0.0.1", parts.port or 5672
    if not _tcp_open(host, port):
        return f"RabbitMQ is not listening on {host}:{port}"
    return None


def _check_slurm(env: dict[str, str]) -> str | None:
    node = env.get("LAB_NODE", "")
    try:
        ping = subprocess.run(
            ["scontrol", "ping"], capture_output=True, text=True, timeout=20, check=False
        )
        state = subprocess.run(
            ["sinfo", "-h", "-N", "-n", node, "-o", "%T"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"Slurm commands do not work: {exc}"
    if "is UP" not in ping.stdout:
        return f"slurmctld is not answering: {ping.stdout.strip() or ping.stderr.strip()}"
    if not state.startswith(("idle", "mixed", "allocated", "completing")):
        return f"Slurm node {node!r} is not usable (state {state or 'unknown'!r})"
    return None


def _check_kubernetes(env: dict[str, str]) -> str | None:
    path = env.get("KUBECONFIG")
    if not path or not Path(path).is_file():
        return "KUBECONFIG is not set or missing (lab/k8s not up)"
    try:
        from kubernetes import client, config

        api = config.new_client_from_config(config_file=path)
        with api:
            client.VersionApi(api).get_code(_request_timeout=5)
    except Exception as exc:
        return f"the Kubernetes API does not answer: {exc}"
    return None


def _check_registry(env: dict[str, str]) -> str | None:
    url = f"http://{env.get('REGISTRY') or 'nas-hub.local:5407'}/v2/_catalog?n=1"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            if response.status == 200:
                return None
            return f"anonymous GET {url} answered {response.status}"
    except OSError as exc:
        return f"anonymous GET {url} failed: {exc}"


_CHECKS: dict[str, Callable[[dict[str, str]], str | None]] = {
    "rabbitmq": _check_rabbitmq,
    "slurm": _check_slurm,
    "kubernetes": _check_kubernetes,
    "registry": _check_registry,
}


@pytest.fixture(scope="session")
def require(lab_env: dict[str, str]) -> Callable[[str], None]:
    """`require("rabbitmq" | "slurm" | "kubernetes" | "registry")`: skip or fail unless up."""
    seen: dict[str, str | None] = {}

    def _require(component: str) -> None:
        if component not in seen:
            seen[component] = _CHECKS[component](lab_env)
        if seen[component] is not None:
            lab_unavailable(f"{component}: {seen[component]}")

    return _require


@pytest.fixture
def amqp_url(require: Callable[[str], None], lab_env: dict[str, str]) -> str:
    """The service user's AMQP URL on the lab's `slurm-k8s` vhost."""
    require("rabbitmq")
    return lab_env["AMQP_URL"]


@pytest.fixture
def rabbitmq_admin(require: Callable[[str], None]) -> tuple[str, str]:
    """The management UI's administrator (user, password), from the lab's credentials file."""
    require("rabbitmq")
    creds = LAB_STATE / "rabbitmq" / "credentials"
    try:
        pairs = dict(line.split("=", 1) for line in creds.read_text().splitlines() if "=" in line)
    except OSError as exc:
        lab_unavailable(f"cannot read {creds} (run as root): {exc}")
    return pairs["admin_user"], pairs["admin_password"]


@pytest.fixture
def slurm_ready(require: Callable[[str], None], lab_env: dict[str, str]) -> str:
    """Slurm answers and the lab node can run jobs; returns the node's name."""
    require("slurm")
    return lab_env["LAB_NODE"]


@pytest.fixture
def kubeconfig(require: Callable[[str], None], lab_env: dict[str, str]) -> str:
    """Path of the lab's kubeconfig, once its API server answers."""
    require("kubernetes")
    return lab_env["KUBECONFIG"]


def _run_as(user: str, argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run `argv` as a lab user (alice, bob) through runuser; captures text output.

    The working directory defaults to /tmp: Slurm starts a job where it was submitted, and
    the repository (maybe under /root) is not the users' to read.
    """
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    if kw["text"]:  # job names and outputs may hold any bytes (the corpus)
        kw.setdefault("errors", "replace")
    kw.setdefault("timeout", 60)
    kw.setdefault("check", False)
    kw.setdefault("cwd", "/tmp")
    return subprocess.run(["runuser", "-u", user, "--", *argv], **kw)


@pytest.fixture(scope="session")
def run_as() -> RunAs:
    """`run_as(user, argv, **subprocess_kw)` -> CompletedProcess, run as that lab user."""
    if os.geteuid() != 0:
        lab_unavailable("running commands as the lab users needs root (runuser)")
    return _run_as


@pytest.fixture
def vhost_url(amqp_url: str) -> Iterator[str]:
    """The lab's AMQP URL on a throwaway vhost the service user may use (nameko's idea).

    Tests that run a service or a consumer get a broker of their own, so no real service sees
    their messages and theirs see no one else's.
    """
    parts = urlsplit(amqp_url)
    vhost = f"test-{uuid.uuid4().hex[:8]}"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, parts.username or "", ".*", ".*", ".*")
    try:
        yield urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))
    finally:
        # The broker may have been restarted by a drill meanwhile: cleanup is best effort.
        subprocess.run(
            ["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True, timeout=60
        )


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)
