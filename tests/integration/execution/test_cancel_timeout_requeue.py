"""scancel, the time limit and requeue each end or replace the Pod promptly.

The runner is the batch step: Slurm's SIGTERM (scancel, --time, scontrol requeue) reaches it,
it deletes its Pod and waits until the Pod is gone. A requeued job runs again as restart 1
with a fresh Pod ``job-<id>-r1``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

RESULTS = Path("/mnt/test-k8s/results")
ALPINE = "nas-hub.local:5407/alpine:latest"


def running_pod(jobs: Any, core: Any, name: str, timeout: float = 120) -> Any:
    def probe() -> Any:
        pod = jobs.pod(core, name)
        return pod if pod is not None and pod.status.phase == "Running" else None

    return jobs.wait_for(f"Pod {name} to run", probe, timeout)


def test_scancel_of_a_pending_job_never_makes_a_pod(jobs: Any, kube_core: Any) -> None:
    text = jobs.script(ALPINE, "echo hi", "--mem=64M", "--begin=now+1hour", "-o /dev/null")
    job_id = jobs.submit("alice", text)
    assert jobs.state(job_id) == "PENDING"
    jobs.run_as("alice", ["scancel", str(job_id)])
    assert jobs.wait_done(job_id)[0] == "CANCELLED"
    time.sleep(3)
    assert jobs.pods(kube_core, job_id) == []


def test_scancel_of_a_running_job_deletes_its_pod(jobs: Any, kube_core: Any) -> None:
    text = jobs.script(
        ALPINE,
        "trap 'echo got SIGTERM; exit 143' TERM\necho started\nsleep 600 & wait",
        "--mem=64M",
        "--time=10",
        f"-o {RESULTS}/exec-cancel-%j.out",
    )
    job_id = jobs.submit("alice", text)
    name = f"job-{job_id}-r0"
    running_pod(jobs, kube_core, name)
    cancelled = time.monotonic()
    jobs.run_as("alice", ["scancel", str(job_id)])
    jobs.wait_for("the Pod to be gone", lambda: jobs.pod(kube_core, name) is None, 60)
    print(f"scancel → Pod gone: {time.monotonic() - cancelled:.1f} s")
    assert jobs.wait_done(job_id)[0] == "CANCELLED"
    out = (RESULTS / f"exec-cancel-{job_id}.out").read_text()
    # The container's log is copied up to its end: its SIGTERM handler ran.
    assert "\nstarted\n" in out
    assert "got SIGTERM" in out
    assert "[slurm-k8s] outcome: cancelled exit=143" in out


def test_time_limit_ends_the_pod(jobs: Any, kube_core: Any) -> None:
    text = jobs.script(
        ALPINE,
        "echo sleeping past the limit\nsleep 600",
        "--mem=64M",
        "--time=1",
        f"-o {RESULTS}/exec-timeout-%j.out",
    )
    job_id = jobs.submit("alice", text)
    name = f"job-{job_id}-r0"
    running_pod(jobs, kube_core, name)
    # Slurm checks limits about every 30 s, then waits KillWait: generous deadline.
    assert jobs.wait_done(job_id, timeout=300)[0] == "TIMEOUT"
    jobs.wait_for("the Pod to be gone", lambda: jobs.pod(kube_core, name) is None, 60)
    out = (RESULTS / f"exec-timeout-{job_id}.out").read_text()
    assert "sleeping past the limit" in out
    assert "[slurm-k8s] outcome: cancelled" in out


def test_requeue_replaces_the_pod(jobs: Any, kube_core: Any) -> None:
    text = jobs.script(
        ALPINE,
        'echo "run $SLURM_RESTART_COUNT of $SLURM_JOB_ID"\n'
        '[ "$SLURM_RESTART_COUNT" = 0 ] && sleep 600\necho done',
        "--mem=64M",
        "--time=10",
        "--requeue",
        f"-o {RESULTS}/exec-requeue-%j.out",
    )
    job_id = jobs.submit("alice", text)
    first, second = f"job-{job_id}-r0", f"job-{job_id}-r1"
    running_pod(jobs, kube_core, first)
    done = jobs.run_as("root", ["scontrol", "requeue", str(job_id)])
    assert done.returncode == 0, done.stderr
    jobs.wait_for("the first Pod to be gone", lambda: jobs.pod(kube_core, first) is None, 90)
    # A requeued job becomes eligible again after a short delay Slurm imposes.
    assert jobs.wait_done(job_id, timeout=400) == ["COMPLETED", "0:0"]
    assert jobs.show(job_id).get("Restarts", "1") == "1"
    out = (RESULTS / f"exec-requeue-{job_id}.out").read_text()
    assert f"run 1 of {job_id}" in out
    assert f"[slurm-k8s] job {job_id} (restart 1)" in out
    assert out.rstrip().endswith("[slurm-k8s] outcome: Succeeded exit=0")
    pods = {p.metadata.name for p in jobs.pods(kube_core, job_id)}
    assert first not in pods
    assert pods <= {second}
