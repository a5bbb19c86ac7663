"""The collector's reconcile repairs lost events on the lab: a job's Pod, a file's answer.

Each test loses a real event (the queue is purged while its consumer is stopped) and lets the
session's collector find the difference between Slurm, Kubernetes and the NAS. The session
runs it with short bounds (``execution_services``): reconcile every 10 s, relaunch after 5 s,
a file republished after 15 s.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from shared.broker import LAUNCHER, VALIDATOR
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration

RESULTS = Path("/mnt/test-k8s/results")
ALPINE = "nas-hub.local:5407/alpine:latest"
VHOST = "slurm-k8s"


def queue_depth(queue: str) -> int:
    """Messages ready in a queue of the services' vhost."""
    out = subprocess.run(
        ["rabbitmqctl", "-q", "-p", VHOST, "list_queues", "name", "messages"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for line in out.splitlines():
        name, _, count = line.partition("\t")
        if name == queue and count.strip().isdigit():
            return int(count)
    return 0


def purge(queue: str) -> None:
    """Lose every message of a queue (what a lost or dead-lettered event amounts to)."""
    subprocess.run(
        ["rabbitmqctl", "-q", "-p", VHOST, "purge_queue", queue],
        capture_output=True,
        timeout=60,
        check=True,
    )


def test_a_running_job_whose_job_started_was_lost_gets_its_pod(
    execution_services: Any, jobs: Any
) -> None:
    execution_services.stop("launcher")
    try:
        purge(LAUNCHER.name)
        text = jobs.script(
            ALPINE, "echo relaunched", "--mem=64M", f"-o {RESULTS}/reconcile-relaunch-%j.out"
        )
        job_id = jobs.submit("alice", text)
        wait_for("the job to run", lambda: jobs.state(job_id) == "RUNNING", 120)
        wait_for("the prolog's job.started", lambda: queue_depth(LAUNCHER.name) >= 1, 60)
        purge(LAUNCHER.name)
    finally:
        execution_services.start("launcher")

    assert jobs.wait_done(job_id, timeout=300) == ["COMPLETED", "0:0"]
    out = (RESULTS / f"reconcile-relaunch-{job_id}.out").read_text()
    assert "relaunched" in out
    assert out.rstrip().endswith("[slurm-k8s] outcome: Succeeded exit=0")
    assert "job.started published again" in execution_services.log("collector")


def test_a_file_whose_event_was_lost_gets_its_answer(
    execution_services: Any, run_as: Any, lab_env: dict[str, str]
) -> None:
    jobs_dir = Path(lab_env["NAS_ROOT"]) / "slurm-jobs"
    name = f"reconcile-{uuid.uuid4().hex[:8]}.sh"
    execution_services.start("watcher")
    try:
        purge(VALIDATOR.name)
        # No #K8S_IMAGE: refused at the door, so no Slurm job is involved.
        run_as(
            "alice",
            ["sh", "-c", 'cat > "$0"', str(jobs_dir / "submit" / name)],
            input="#!/bin/bash\necho no image\n",
            check=True,
        )
        wait_for("the watcher's file.detected", lambda: queue_depth(VALIDATOR.name) >= 1, 60)
        purge(VALIDATOR.name)
        execution_services.start("validator")
        error = jobs_dir / "failed" / f"{name}.error"
        wait_for("the file's answer", error.is_file, 120)
        assert "K8S_IMAGE" in error.read_text()
        assert not (jobs_dir / "submit" / name).exists()
        assert "file.detected published again" in execution_services.log("collector")
    finally:
        for service in ("validator", "watcher"):
            execution_services.stop(service)
