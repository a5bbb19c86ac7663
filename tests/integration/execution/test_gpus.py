"""GPUs are never double-booked: a job's Pod has ended before Slurm hands its GPUs on.

Two jobs each take all 4 GPUs, back to back: Slurm starts the second only when the first's
batch step (the runner) has ended, and the runner ends only once the first Pod's container
has stopped and the Pod is deleted (which takes it out of the kubelet's admission at once).
The Pods' own start/finish times show no overlap. And when something outside Slurm holds the
node's GPUs, kubelet admission refuses the job's Pod: the runner exits with RequeueExit, so
Slurm requeues the job instead of leaving it hanging.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from shared.jobpods import JOB_NAMESPACE

pytestmark = pytest.mark.integration

RESULTS = Path("/mnt/test-k8s/results")
ALPINE = "nas-hub.local:5407/alpine:latest"


class PodClock:
    """Records each watched Pod's container start/finish from a watch of the jobs namespace.

    A watch, not polling: the runner deletes its Pod moments after the container's exit, and
    every change (the deletion's last state too) comes as an event.
    """

    def __init__(self, jobs: Any, core: Any, names: list[str]) -> None:
        self.jobs, self.core, self.names = jobs, core, names
        self.seen: dict[str, tuple[datetime | None, datetime | None]] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from kubernetes import watch

        version = None
        while not self.stop.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(
                    self.core.list_namespaced_pod,
                    JOB_NAMESPACE,
                    resource_version=version,
                    timeout_seconds=5,
                ):
                    self._record(event["object"])
                    if self.stop.is_set():
                        stream.stop()
                version = stream.resource_version
            except Exception:  # the API restarting must not end the watch: list again
                version = None
                self.stop.wait(0.3)

    def _record(self, pod: Any) -> None:
        name = pod.metadata.name
        if name not in self.names:
            return
        statuses = (pod.status.container_statuses or []) if pod.status is not None else []
        state = statuses[0].state if statuses else None
        if state is not None and state.terminated is not None:
            self.seen[name] = (state.terminated.started_at, state.terminated.finished_at)
        elif state is not None and state.running is not None:
            self.seen.setdefault(name, (state.running.started_at, None))


def test_back_to_back_jobs_with_all_gpus_never_overlap(jobs: Any, kube_core: Any) -> None:
    body = "echo GPUs $SLURM_JOB_GPUS; sleep 8"
    ids = [
        jobs.submit(
            "alice",
            jobs.script(ALPINE, body, "--gres=gpu:4", "--mem=64M", f"-o {RESULTS}/exec-gpu-%j.out"),
        )
        for _ in range(2)
    ]
    names = [f"job-{i}-r0" for i in ids]
    clock = PodClock(jobs, kube_core, names)
    try:
        for job_id in ids:
            assert jobs.wait_done(job_id, timeout=300) == ["COMPLETED", "0:0"]
    finally:
        clock.stop.set()
        clock.thread.join(5)
    first, second = (clock.seen.get(n) for n in names)
    assert first is not None, clock.seen
    assert second is not None, clock.seen
    assert first[1] is not None, "the first Pod's finish was not seen"
    assert second[0] is not None
    assert first[1] <= second[0], f"GPU Pods overlapped: {first} vs {second}"
    starts = [jobs.sacct(i, "Start,End") for i in ids]
    assert starts[0][1] <= starts[1][0]
    for job_id in ids:
        assert "GPUs " in (RESULTS / f"exec-gpu-{job_id}.out").read_text()


def test_gpus_held_outside_slurm_requeue_the_job(jobs: Any, kube_core: Any) -> None:
    from kubernetes import client

    blocker = f"gpu-squatter-{int(time.time())}"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": blocker},
        "spec": {
            "nodeName": jobs.node,
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsUser": 65534,
                "runAsGroup": 65534,
                "runAsNonRoot": True,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "hold",
                    "image": ALPINE,
                    "command": ["sleep", "600"],
                    "resources": {
                        "limits": {"nvidia.com/gpu": "4", "cpu": "10m", "memory": "16Mi"}
                    },
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }
    kube_core.create_namespaced_pod(JOB_NAMESPACE, client.V1Pod.model_validate(pod))
    try:
        jobs.wait_for(
            "the squatter to run",
            lambda: (
                getattr(jobs.pod(kube_core, blocker), "status", None) is not None
                and jobs.pod(kube_core, blocker).status.phase == "Running"
            ),
            120,
        )
        text = jobs.script(
            ALPINE, "echo got the GPU", "--gres=gpu:1", "--mem=64M", "--time=5",
            f"-o {RESULTS}/exec-squat-%j.out",
        )  # fmt: skip
        job_id = jobs.submit("alice", text)
        jobs.wait_for(
            "Slurm to requeue the job",
            lambda: int(jobs.show(job_id).get("Restarts", "0") or 0) >= 1,
            180,
        )
        record = jobs.show(job_id)
        assert record.get("ExitCode") == "218:0" or record.get("JobState") != "FAILED"
    finally:
        kube_core.delete_namespaced_pod(blocker, JOB_NAMESPACE, grace_period_seconds=0)
    # With the GPUs free again the requeued job runs (after Slurm's requeue delay).
    assert jobs.wait_done(job_id, timeout=400) == ["COMPLETED", "0:0"]
    out = (RESULTS / f"exec-squat-{job_id}.out").read_text()
    assert "got the GPU" in out
    # Slurm truncates the output for the new run; the refusal stays on the job.
    comment, admin = jobs.sacct(job_id, "Comment,AdminComment")
    assert "nvidia.com/gpu" in comment + admin, (comment, admin)
