"""The seed's hello.sh end to end on the lab, and what its Pod looks like while it runs.

Plain ``sbatch`` as alice → job_submit.lua wraps it → prolog → launcher → Pod on the node
Slurm chose → the runner copies the Pod's log into ``results/<jobid>.out`` → Slurm records the
container's exit → epilog → collector removes the Pod.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from shared.jobscript.wrapping import ACCEPTED_MARK

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
RESULTS = Path("/mnt/test-k8s/results")
ALPINE = "nas-hub.local:5407/alpine:latest"
ALICE = 2001


def test_hello_through_plain_sbatch(jobs: Any, kube_core: Any) -> None:
    start = time.monotonic()
    job_id = jobs.submit("alice", REPO / "examples" / "hello.sh")
    assert jobs.wait_done(job_id) == ["COMPLETED", "0:0"]
    elapsed = time.monotonic() - start
    out = RESULTS / f"{job_id}.out"
    text = out.read_text()
    assert "Hello from Slurm-K8s!" in text
    assert text.startswith(f"[slurm-k8s] job {job_id} (restart 0) on node ")
    assert re.search(r"image digest sha256:[0-9a-f]{64}", text)
    assert text.rstrip().endswith("[slurm-k8s] outcome: Succeeded exit=0")
    assert out.stat().st_uid == ALICE
    admin = jobs.sacct(job_id, "AdminComment")[0]
    assert f"pod=slurm-jobs/job-{job_id}-r0" in admin
    print(f"hello.sh: sbatch → COMPLETED in accounting {elapsed:.1f} s")

    # The collector deletes the run's Pod after the epilog; without it the Pod must at
    # least have ended.
    def no_live_pod() -> bool:
        pods = jobs.pods(kube_core, job_id)
        return all(p.status.phase in ("Succeeded", "Failed") for p in pods) and (
            not pods or not _collector_running(jobs)
        )

    jobs.wait_for("the Pod to be gone", no_live_pod, timeout=120)


def _collector_running(jobs: Any) -> bool:
    return (REPO / "services" / "collector" / "__main__.py").exists()


def test_pod_matches_the_allocation_while_running(
    jobs: Any, kube_core: Any, execution_services: Any
) -> None:
    body = """
echo "uid=$(id -u) gid=$(id -g) groups=$(id -G)"
echo "cwd=$(pwd) home=$HOME"
env | grep -E '^SLURM_(JOB_ID|CPUS_ON_NODE|MEM_PER_NODE|JOB_GPUS|RESTART_COUNT)=' | sort
df -m /dev/shm | tail -1
sleep 20
"""
    text = jobs.script(
        ALPINE,
        body,
        "-c 1",
        "--mem=300M",
        "--gres=gpu:1",
        "--time=5",
        "-D /mnt/test-k8s/home/alice",
        f"-o {RESULTS}/exec-alloc-%j.out",
    ).replace("#K8S_IMAGE", "#K8S_SHM=128M\n#K8S_IMAGE")
    submitted = time.monotonic()
    job_id = jobs.submit("alice", text)
    name = f"job-{job_id}-r0"

    def running() -> Any:
        pod = jobs.pod(kube_core, name)
        return pod if pod is not None and pod.status.phase == "Running" else None

    pod = jobs.wait_for("the Pod to run", running, timeout=120)
    print(f"submit → Pod Running: {time.monotonic() - submitted:.1f} s")
    spec = pod.spec
    container = spec.containers[0]
    assert spec.node_name == execution_services.env.get("LAB_NODE", "vm")
    assert spec.restart_policy == "Never"
    limits = container.resources.limits
    assert container.resources.requests == limits
    assert limits == {"cpu": "1", "memory": "300Mi", "nvidia.com/gpu": "1"}
    assert spec.security_context.run_as_user == ALICE
    assert spec.security_context.run_as_non_root is True
    assert container.security_context.allow_privilege_escalation is False
    assert container.security_context.capabilities.drop == ["ALL"]
    assert pod.metadata.labels["slurm-k8s.io/job-id"] == str(job_id)
    assert pod.metadata.labels["slurm-k8s.io/user"] == "alice"
    assert pod.metadata.owner_references[0].kind == "ServiceAccount"
    record = jobs.show(job_id)
    # job_submit.lua's acceptance mark stays in front of the launcher's note
    note = f"{ACCEPTED_MARK}; pod=slurm-jobs/{name} phase="
    assert record.get("AdminComment", "").startswith(note)
    assert jobs.wait_done(job_id) == ["COMPLETED", "0:0"]
    out = (RESULTS / f"exec-alloc-{job_id}.out").read_text()
    assert "uid=2001 gid=2001" in out
    assert "cwd=/mnt/test-k8s/home/alice home=/mnt/test-k8s/home/alice" in out
    assert f"SLURM_JOB_ID={job_id}" in out
    assert "SLURM_CPUS_ON_NODE=1" in out
    assert "SLURM_MEM_PER_NODE=300" in out
    assert re.search(r"SLURM_JOB_GPUS=\d", out)
    assert "SLURM_RESTART_COUNT=0" in out
    assert re.search(r"tmpfs\s+128\s", out), out


def test_stdout_and_stderr_land_in_their_own_files(jobs: Any) -> None:
    text = jobs.script(
        ALPINE,
        "for i in 1 2 3; do echo out $i; echo err $i >&2; done",
        "--mem=64M",
        f"-o {RESULTS}/exec-split-%j.out",
        f"-e {RESULTS}/exec-split-%j.err",
    )
    job_id = jobs.submit("alice", text)
    assert jobs.wait_done(job_id) == ["COMPLETED", "0:0"]
    out = (RESULTS / f"exec-split-{job_id}.out").read_text()
    err = (RESULTS / f"exec-split-{job_id}.err").read_text()
    assert "out 1\nout 2\nout 3\n" in out
    assert "err" not in out.replace("stderr", "")
    assert err == "err 1\nerr 2\nerr 3\n"
    assert (RESULTS / f"exec-split-{job_id}.err").stat().st_uid == ALICE


def test_a_redelivered_job_started_makes_no_second_pod(
    jobs: Any, kube_core: Any, execution_services: Any
) -> None:
    from shared.broker import Publisher
    from shared.config import BrokerSettings
    from shared.messages import Envelope, JobStarted

    text = jobs.script(ALPINE, "echo once; sleep 15", "--mem=64M", f"-o {RESULTS}/exec-dup-%j.out")
    job_id = jobs.submit("alice", text)
    name = f"job-{job_id}-r0"

    def running() -> bool:
        pod = jobs.pod(kube_core, name)
        return pod is not None and pod.status.phase == "Running"

    jobs.wait_for("the Pod to run", running, 120)
    uid = jobs.pod(kube_core, name).metadata.uid
    event = JobStarted(
        job_id=job_id,
        restart_count=0,
        node=jobs.node,
        user="alice",
        uid=ALICE,
        gid=ALICE,
        partition="gpu",
    )
    publisher = Publisher(BrokerSettings(AMQP_URL=execution_services.env["AMQP_URL"]))
    try:
        publisher.publish(Envelope.wrap(event))
        publisher.publish(Envelope.wrap(event))
    finally:
        publisher.close()
    assert jobs.wait_done(job_id) == ["COMPLETED", "0:0"]
    out = (RESULTS / f"exec-dup-{job_id}.out").read_text()
    assert out.count("once") == 1
    pods = jobs.pods(kube_core, job_id)
    assert all(p.metadata.uid == uid for p in pods), "the Pod was replaced"
