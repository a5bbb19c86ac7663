"""Fixtures for the execution path on the lab: the services running, and job helpers.

``execution_services`` (session) makes sure the /opt venv the batch step runs from is current
(``lab/slurm/install-hooks.sh``, cheap when nothing changed), then starts
``python -m services.launcher`` and, when it exists, ``python -m services.collector`` with the
lab's settings, logging to ``$LAB_LOG/tests`` (or /tmp), and stops them with SIGTERM at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import wait_for

REPO = Path(__file__).resolve().parents[3]
COLLECTOR_MAIN = REPO / "services" / "collector" / "__main__.py"
ADMIN_KUBECONFIG = Path("/var/lib/slurm-k8s-lab/k8s/admin.kubeconfig")


def _log_dir() -> Path:
    base = Path(os.environ.get("LAB_LOG", "/tmp"))
    path = base / "tests" / "execution"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Services:
    """The running services of the execution path, and where they log."""

    logs: dict[str, Path]
    env: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]]

    def log(self, name: str) -> str:
        try:
            return self.logs[name].read_text(errors="replace")
        except OSError:
            return ""

    def start(self, name: str) -> None:
        """Start ``services.<name>`` (again), appending to its log."""
        log = self.logs.setdefault(
            name, _log_dir() / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}.log"
        )
        with log.open("ab") as sink:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", f"services.{name}"],
                cwd=REPO,
                env=self.env,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )

    def stop(self, name: str) -> None:
        """SIGTERM ``services.<name>`` and wait for it (killed after 40 s)."""
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def execution_env(require: Callable[[str], None], lab_env: dict[str, str]) -> dict[str, str]:
    """The lab's settings for the services: RabbitMQ, Slurm and Kubernetes must all answer."""
    env = dict(lab_env)
    if not env.get("KUBECONFIG") and ADMIN_KUBECONFIG.is_file():
        env["KUBECONFIG"] = str(ADMIN_KUBECONFIG)
        os.environ.setdefault("KUBECONFIG", str(ADMIN_KUBECONFIG))
        lab_env["KUBECONFIG"] = str(ADMIN_KUBECONFIG)
    for component in ("rabbitmq", "slurm", "kubernetes"):
        require(component)
    return env


@pytest.fixture(scope="session")
def execution_services(execution_env: dict[str, str]) -> Iterator[Services]:
    """The launcher (and the collector, once it exists) running against the lab."""
    install = subprocess.run(
        ["bash", str(REPO / "lab" / "slurm" / "install-hooks.sh")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if install.returncode != 0:
        pytest.fail(f"install-hooks.sh failed: {install.stderr[-2000:]}")
    env = {**os.environ, **execution_env, "LOG_FORMAT": "console", "PYTHONUNBUFFERED": "1"}
    # Quick sweeps so a finished run is cleaned up within a test's patience.
    env.setdefault("COLLECTOR_RECONCILE_INTERVAL", "10")
    # test_reconciler loses events on purpose; short bounds let the reconcile repair them.
    env.setdefault("COLLECTOR_RELAUNCH_AFTER", "5")
    env.setdefault("COLLECTOR_STALE_FILE_AFTER", "15")
    wanted = ["launcher"] + (["collector"] if COLLECTOR_MAIN.exists() else [])
    stamp = time.strftime("%Y%m%dT%H%M%S")
    services = Services({n: _log_dir() / f"{n}-{stamp}.log" for n in wanted}, env, {})
    for name in wanted:
        services.start(name)
    time.sleep(2)
    for name, proc in services.procs.items():
        if proc.poll() is not None:
            pytest.fail(f"services.{name} exited at once:\n{services.log(name)[-3000:]}")
    yield services
    for name in list(services.procs):
        services.stop(name)


@pytest.fixture
def nas_door(execution_services: Any) -> Iterator[None]:
    """The watcher and validator beside the session's launcher and collector."""
    for name in ("watcher", "validator"):
        execution_services.start(name)
    yield
    for name in ("validator", "watcher"):
        execution_services.stop(name)


@pytest.fixture
def collector_stopped(execution_services: Services) -> Iterator[None]:
    """The session's collector out of the way, for tests that drive a collector themselves.

    Otherwise it races the test for the same job.ended events and orphan sweeps.
    """
    was_running = "collector" in execution_services.procs
    execution_services.stop("collector")
    yield
    if was_running:
        execution_services.start("collector")


# --- job helpers --------------------------------------------------------------------------


class Jobs:
    """Submitting and watching jobs; the ``jobs`` fixture hands one to each test."""

    def __init__(self, run_as: Callable[..., Any], node: str) -> None:
        self.run_as = run_as
        self.node = node
        self.submitted: list[int] = []

    def submit(self, user: str, script: Path | str, *args: str) -> int:
        """sbatch as ``user`` (a script path or script text); returns the job id."""
        job_id = submit(self.run_as, user, script, *args)
        self.submitted.append(job_id)
        return job_id

    def state(self, job_id: int) -> str:
        """squeue's state ("" once slurmctld no longer lists it)."""
        return squeue_state(job_id)

    def sacct(self, job_id: int, fields: str = "State,ExitCode") -> list[str]:
        """Accounting fields of the allocation ([] before slurmdbd has it)."""
        return sacct(job_id, fields)

    def wait_for(self, what: str, probe: Callable[[], Any], timeout: float = 180) -> Any:
        """Poll until probe() is truthy."""
        return wait_for(what, probe, timeout)

    def wait_done(self, job_id: int, timeout: float = 240) -> list[str]:
        """Wait for the final State,ExitCode in accounting."""
        return wait_done(job_id, timeout)

    def show(self, job_id: int) -> dict[str, str]:
        """scontrol's record of the job ({} when gone)."""
        return show_job(job_id)

    @staticmethod
    def script(image: str, body: str, *sbatch: str) -> str:
        """A job script with #SBATCH lines and a #K8S_IMAGE."""
        return script(image, body, *sbatch)

    @staticmethod
    def pods(core: Any, job_id: int) -> list[Any]:
        """Every Pod labelled with the job id."""
        return pods_of_job(core, job_id)

    @staticmethod
    def pod(core: Any, name: str) -> Any | None:
        """The Pod or None."""
        return read_pod(core, name)


@pytest.fixture
def jobs(execution_services: Services, run_as: Callable[..., Any]) -> Iterator[Jobs]:
    """Job helpers; jobs a test leaves behind are cancelled."""
    helper = Jobs(run_as, execution_services.env.get("LAB_NODE", "vm"))
    yield helper
    if helper.submitted:
        subprocess.run(
            ["scancel", *map(str, helper.submitted)], capture_output=True, timeout=30, check=False
        )


def submit(run_as: Callable[..., Any], user: str, script: Path | str, *args: str) -> int:
    """sbatch as ``user`` (a script path or script text); returns the job id."""
    kw: dict[str, Any] = {}
    argv = ["sbatch", "--parsable", *args]
    if isinstance(script, Path):
        argv.append(str(script))
    else:
        kw["input"] = script
    done = run_as(user, argv, **kw)
    assert done.returncode == 0, f"sbatch refused: {done.stderr}"
    return int(done.stdout.strip().split(";")[0])


def squeue_state(job_id: int) -> str:
    out = subprocess.run(
        ["squeue", "-h", "-j", str(job_id), "-o", "%T"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout.strip()
    return out


def sacct(job_id: int, fields: str = "State,ExitCode") -> list[str]:
    out = subprocess.run(
        ["sacct", "-n", "-P", "-X", "-j", str(job_id), f"--format={fields}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout.strip()
    return out.splitlines()[0].split("|") if out else []


def wait_done(job_id: int, timeout: float = 240) -> list[str]:
    """Wait until slurmctld forgets the job's run and accounting has a final state."""
    final = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"}

    def probe() -> list[str] | None:
        if squeue_state(job_id) not in ("", "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"):
            return None
        row = sacct(job_id)
        if not row or row[0].split(" ")[0] not in final:
            return None
        # "CANCELLED by 2001" → "CANCELLED"
        return [row[0].split(" ")[0], *row[1:]]

    result: list[str] = wait_for(f"job {job_id} to end", probe, timeout)
    return result


def show_job(job_id: int) -> dict[str, str]:
    from shared.slurmctl import parse_record

    out = subprocess.run(
        ["scontrol", "-o", "show", "job", str(job_id)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout
    return parse_record(out.splitlines()[0]) if out.strip() else {}


# --- Kubernetes helpers -------------------------------------------------------------------


@pytest.fixture(scope="session")
def kube_core(execution_env: dict[str, str]) -> Any:
    """A CoreV1Api with the lab's admin credentials."""
    from kubernetes import client

    from shared.kube import api_client

    return client.CoreV1Api(api_client(Path(execution_env["KUBECONFIG"])))


def pods_of_job(core: Any, job_id: int) -> list[Any]:
    """Every Pod labelled with the job id (any run)."""
    from shared.jobpods import JOB_NAMESPACE, LABEL_JOB_ID

    return list(
        core.list_namespaced_pod(JOB_NAMESPACE, label_selector=f"{LABEL_JOB_ID}={job_id}").items
    )


def read_pod(core: Any, name: str) -> Any | None:
    """The Pod, or None once it is gone."""
    from kubernetes.client.exceptions import ApiException

    from shared.jobpods import JOB_NAMESPACE

    try:
        return core.read_namespaced_pod(name, JOB_NAMESPACE)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def script(image: str, body: str, *sbatch: str) -> str:
    """A job script with #SBATCH lines and a #K8S_IMAGE."""
    lines = ["#!/bin/sh", *(f"#SBATCH {option}" for option in sbatch), f"#K8S_IMAGE={image}"]
    return "\n".join(lines) + "\n" + body.strip() + "\n"
